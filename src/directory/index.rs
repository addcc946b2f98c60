//! The personal-manager index: normalised caller number -> responsible Bitrix24 user, per portal.
//!
//! Read on the SIP hot path once per routing INVITE, so a look-up is built to touch as little
//! memory as possible: per portal one open-addressing table of 16-byte slots (number, user),
//! linear probing, at most half full, so a look-up usually reads a single cache line (a
//! `DashMap` of `(portal, number)` tuples took two or three cache misses, ~0.8 µs measured in
//! place against the whole 302 path's ~4.5 µs). Tables of 4 MiB and more ask for transparent
//! huge pages (`MADV_HUGEPAGE`), so the look-up does not also miss the TLB.
//!
//! Readers take a read lock (two uncontended atomics). Writers (CSV import, Bitrix24 sync)
//! persist to the store first and then apply here: one writer at a time, in chunks of
//! [`WRITE_CHUNK`] rows per write lock, and a table that must grow is rebuilt beside the live one
//! under the read lock and swapped in, so a million-row import never stalls routing for long.
//! User id 0 (no user) is never stored: inserting it removes the number.

use parking_lot::{Mutex, RwLock};

use crate::phone::normalize_number;
use crate::settings::{PortalId, UserId};

/// Rows applied per write-lock acquisition.
const WRITE_CHUNK: usize = 4096;

/// Number -> user, per portal.
#[derive(Debug)]
pub struct PmIndex {
    portals: RwLock<Vec<(PortalId, Table)>>,
    /// Serialises writers (growth happens outside the write lock).
    writer: Mutex<()>,
    seed: u64,
}

impl Default for PmIndex {
    fn default() -> Self {
        Self { portals: RwLock::new(Vec::new()), writer: Mutex::new(()), seed: rand::random::<u64>() | 1 }
    }
}

/// One slot: `user == 0` means empty.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Slot {
    number: u64,
    user: UserId,
}

/// An open-addressing table (linear probing, power-of-two size, at most half full).
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    len: usize,
}

impl Table {
    fn with_slots(n: usize) -> Self {
        let mut slots = Vec::with_capacity(n);
        advise_huge_pages(slots.as_ptr(), slots.capacity());
        slots.resize(n, Slot::default());
        Self { slots, len: 0 }
    }

    fn home(&self, seed: u64, number: u64) -> usize {
        // Folded multiply (the foldhash/wyhash mixer) with a per-process seed.
        let x = u128::from(number ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15_u128 | (u128::from(seed) << 64));
        ((x as u64) ^ ((x >> 64) as u64)) as usize & (self.slots.len() - 1)
    }

    fn get(&self, seed: u64, number: u64) -> Option<UserId> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(seed, number);
        loop {
            let s = self.slots.get(i)?;
            if s.user == 0 {
                return None;
            }
            if s.number == number {
                return Some(s.user);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `extra` more rows fit without passing half full.
    fn fits(&self, extra: usize) -> bool {
        (self.len + extra) * 2 <= self.slots.len()
    }

    /// Inserts or replaces; the caller made room.
    fn put(&mut self, seed: u64, number: u64, user: UserId) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(seed, number);
        while let Some(s) = self.slots.get_mut(i) {
            if s.user == 0 {
                *s = Slot { number, user };
                self.len += 1;
                return;
            }
            if s.number == number {
                s.user = user;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes with backward-shift deletion (no tombstones, so look-ups stay short).
    fn remove(&mut self, seed: u64, number: u64) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(seed, number);
        loop {
            match self.slots.get(i) {
                Some(s) if s.user == 0 => return,
                Some(s) if s.number == number => break,
                Some(_) => i = (i + 1) & mask,
                None => return,
            }
        }
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some(&s) = self.slots.get(j) else { break };
            if s.user == 0 {
                break;
            }
            let home = self.home(seed, s.number);
            // Move `s` into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
    }

    /// A copy with room for `extra` more rows.
    fn grown(&self, seed: u64, extra: usize) -> Self {
        let need = (self.len + extra).max(8) * 2;
        let mut t = Self::with_slots(need.next_power_of_two());
        for s in self.slots.iter().filter(|s| s.user != 0) {
            t.put(seed, s.number, s.user);
        }
        t
    }
}

/// `portal`'s table among the portals' (a handful: a scan beats a map).
fn table(portals: &[(PortalId, Table)], portal: PortalId) -> Option<&Table> {
    portals.iter().find(|(p, _)| *p == portal).map(|(_, t)| t)
}

/// [`table`], for writing.
fn table_mut(portals: &mut [(PortalId, Table)], portal: PortalId) -> Option<&mut Table> {
    portals.iter_mut().find(|(p, _)| *p == portal).map(|(_, t)| t)
}

/// A cache prefetch hint (x86_64; nothing elsewhere).
#[inline]
fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a hint: it never
    // faults or reads into the program, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Asks for transparent huge pages for a large table's (not yet touched) memory.
fn advise_huge_pages(slots: *const Slot, capacity: usize) {
    const HUGE: usize = 2 << 20;
    let bytes = capacity * size_of::<Slot>();
    if bytes < 2 * HUGE {
        return;
    }
    let start = slots as usize;
    let (from, to) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if to > from {
        // SAFETY: the range lies inside this Vec's own allocation; MADV_HUGEPAGE is advice
        // only and never changes the memory's contents or validity.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

/// A CSV row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// 1-based line number in the upload.
    pub line: usize,
    /// Why.
    pub message: String,
}

impl PmIndex {
    /// The responsible user of `number` in `portal`.
    pub fn lookup(&self, portal: PortalId, number: u64) -> Option<UserId> {
        table(&self.portals.read(), portal)?.get(self.seed, number)
    }

    /// Starts loading the cache line `lookup(portal, number)` will read, so the miss overlaps
    /// whatever the caller does in between (the redirect path: the transaction checks).
    pub fn prefetch(&self, portal: PortalId, number: u64) {
        let portals = self.portals.read();
        if let Some(t) = table(&portals, portal).filter(|t| !t.slots.is_empty()) {
            if let Some(slot) = t.slots.get(t.home(self.seed, number)) {
                prefetch_read(slot);
            }
        }
    }

    /// Adds or replaces rows (a user id of 0 removes the number).
    pub fn insert_all(&self, portal: PortalId, rows: &[(u64, UserId)]) {
        let _writer = self.writer.lock();
        for chunk in rows.chunks(WRITE_CHUNK) {
            self.make_room(portal, chunk.len());
            let mut portals = self.portals.write();
            let Some(t) = table_mut(&mut portals, portal) else { return };
            for &(n, u) in chunk {
                if u == 0 {
                    t.remove(self.seed, n);
                } else {
                    t.put(self.seed, n, u);
                }
            }
        }
    }

    /// Grows `portal`'s table (creating it) so `extra` more rows fit; the copy is built under
    /// the read lock, so look-ups go on meanwhile. Only called with `writer` held.
    fn make_room(&self, portal: PortalId, extra: usize) {
        let grown = {
            let portals = self.portals.read();
            match table(&portals, portal) {
                Some(t) if t.fits(extra) => return,
                Some(t) => t.grown(self.seed, extra),
                None => Table::default().grown(self.seed, extra),
            }
        };
        debug_assert!(grown.fits(extra));
        let mut portals = self.portals.write();
        match table_mut(&mut portals, portal) {
            Some(t) => *t = grown,
            None => portals.push((portal, grown)),
        }
    }

    /// Removes rows.
    pub fn remove_all(&self, portal: PortalId, numbers: &[u64]) {
        let _writer = self.writer.lock();
        for chunk in numbers.chunks(WRITE_CHUNK) {
            let mut portals = self.portals.write();
            let Some(t) = table_mut(&mut portals, portal) else { return };
            for &n in chunk {
                t.remove(self.seed, n);
            }
        }
    }

    /// Drops every row of a portal.
    pub fn clear_portal(&self, portal: PortalId) {
        let _writer = self.writer.lock();
        let gone = {
            let mut portals = self.portals.write();
            portals.iter().position(|(p, _)| *p == portal).map(|i| portals.swap_remove(i))
        };
        drop(gone); // freed outside the lock
    }

    /// Rows of one portal.
    pub fn count(&self, portal: PortalId) -> usize {
        table(&self.portals.read(), portal).map_or(0, |t| t.len)
    }

    /// Rows in all.
    pub fn len(&self) -> usize {
        self.portals.read().iter().map(|(_, t)| t.len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses `number,user_id` rows (`;` or tab also separate; a header line and blank lines are
/// skipped; `#` starts a comment). All-or-nothing: any bad row fails the whole upload, and the
/// first 20 bad rows are reported.
///
/// # Errors
/// The bad rows.
pub fn parse_csv(text: &str) -> Result<Vec<(u64, UserId)>, Vec<BadRow>> {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.split([',', ';', '\t']).map(str::trim);
        let (num, user) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
        if i == 0 && !num.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '(') {
            continue; // header
        }
        match (normalize_number(num), user.parse::<UserId>()) {
            (Some(n), Ok(u)) if u > 0 => rows.push((n.as_u64(), u)),
            (None, _) => bad.push(BadRow { line: i + 1, message: format!("`{}` is not a phone number", clip(num)) }),
            _ => bad.push(BadRow { line: i + 1, message: format!("`{}` is not a Bitrix24 user id", clip(user)) }),
        }
        if bad.len() >= 20 {
            break;
        }
    }
    if bad.is_empty() {
        Ok(rows)
    } else {
        Err(bad)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_separators_and_comments() {
        let rows = parse_csv("number,user_id\n+7 916 123-45-67,5\n\n84951234567;6 # office\n79001234567\t7\n").unwrap();
        assert_eq!(rows, [(79_161_234_567, 5), (74_951_234_567, 6), (79_001_234_567, 7)]);
    }

    #[test]
    fn bad_rows_fail_the_whole_upload_with_line_numbers() {
        let bad = parse_csv("79161234567,5\nabc,6\n79161234568,x\n79161234569,0\n").unwrap_err();
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn the_table_agrees_with_a_hash_map_through_inserts_replacements_and_removals() {
        use std::collections::HashMap;
        let idx = PmIndex::default();
        let mut model: HashMap<u64, UserId> = HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A narrow key range, so replacements, removals and probe chains all happen.
            let n = 79_000_000_000 + x % 3_000;
            match round % 5 {
                0..=2 => {
                    let u = 1 + x % 97;
                    idx.insert_all(7, &[(n, u)]);
                    model.insert(n, u);
                }
                3 => {
                    idx.remove_all(7, &[n]);
                    model.remove(&n);
                }
                _ => {
                    idx.insert_all(7, &[(n, 0)]); // user 0: removal
                    model.remove(&n);
                }
            }
        }
        assert_eq!(idx.count(7), model.len());
        for n in 79_000_000_000..79_000_003_000 {
            assert_eq!(idx.lookup(7, n), model.get(&n).copied(), "{n}");
        }
        assert_eq!(idx.lookup(8, 79_000_000_001), None, "another portal sees nothing");
    }

    #[test]
    fn a_large_import_grows_the_table_in_chunks() {
        let idx = PmIndex::default();
        let rows: Vec<(u64, UserId)> = (0..50_000u64).map(|i| (79_100_000_000 + i * 7, 1 + i % 500)).collect();
        idx.insert_all(1, &rows);
        assert_eq!(idx.count(1), 50_000);
        assert_eq!(idx.len(), 50_000);
        assert!(rows.iter().all(|&(n, u)| idx.lookup(1, n) == Some(u)));
        assert_eq!(idx.lookup(1, 79_100_000_001), None);
        idx.clear_portal(1);
        assert!(idx.is_empty());
    }

    #[test]
    fn lookups_are_per_portal() {
        let idx = PmIndex::default();
        idx.insert_all(1, &[(79_161_234_567, 5)]);
        idx.insert_all(2, &[(79_161_234_567, 9)]);
        assert_eq!(idx.lookup(1, 79_161_234_567), Some(5));
        assert_eq!(idx.lookup(2, 79_161_234_567), Some(9));
        idx.clear_portal(1);
        assert_eq!(idx.lookup(1, 79_161_234_567), None);
        assert_eq!(idx.count(2), 1);
    }
}
