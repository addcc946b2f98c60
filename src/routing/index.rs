//! The personal-manager index: normalised caller number -> responsible Bitrix24 user, per portal.
//!
//! A `DashMap` of plain integers (about 40 bytes per number), read on the SIP hot path without
//! locks held across anything. Writers (CSV import, Bitrix24 sync) persist to the store first and
//! then apply here, so a restart reloads the same index from the store's snapshot.

use dashmap::DashMap;

use super::number::normalize_number;
use crate::settings::{PortalId, UserId};

/// Number -> user, per portal.
#[derive(Debug, Default)]
pub struct PmIndex {
    map: DashMap<(PortalId, u64), UserId>,
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
        self.map.get(&(portal, number)).map(|r| *r)
    }

    /// Adds or replaces rows.
    pub fn insert_all(&self, portal: PortalId, rows: &[(u64, UserId)]) {
        for &(n, u) in rows {
            self.map.insert((portal, n), u);
        }
    }

    /// Removes rows.
    pub fn remove_all(&self, portal: PortalId, numbers: &[u64]) {
        for n in numbers {
            self.map.remove(&(portal, *n));
        }
    }

    /// Drops every row of a portal.
    pub fn clear_portal(&self, portal: PortalId) {
        self.map.retain(|(p, _), _| *p != portal);
    }

    /// Rows of one portal.
    pub fn count(&self, portal: PortalId) -> usize {
        self.map.iter().filter(|e| e.key().0 == portal).count()
    }

    /// Rows in all.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
