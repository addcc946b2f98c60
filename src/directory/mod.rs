//! The directory: every portal with its mappings and lines, and the personal-manager index,
//! as the SIP and HTTP sides read them. Routing decides from it, the proxy and the WebRTC
//! registrar find portals, PBXs and agents in it, and `crm` keeps the index filled.
//!
//! Nothing here waits on Bitrix24 or the disk on the hot path: the portals are an immutable
//! [`Snapshot`] swapped atomically (`ArcSwap`) after every settings change, and the index
//! ([`PmIndex`], `index.rs`) is a table of plain integers. Depends on `settings` (types), `phone`,
//! `sip::core` (URIs of contacts) and `store` (reload, index persistence).

mod index;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use self::index::{parse_csv, BadRow, PmIndex};
use crate::phone::{normalize_number, Number};
use crate::settings::{parse_cidr, Line, Mapping, Portal, PortalId, UserId};
use crate::store::{StoreError, StoreHandle};

/// One portal, ready for look-ups.
#[derive(Debug, Clone)]
pub struct PortalEntry {
    /// The portal with its settings.
    pub portal: Portal,
    /// Mappings by Bitrix24 user.
    pub by_user: HashMap<UserId, Mapping>,
    /// Mappings by extension.
    pub by_extension: HashMap<String, Mapping>,
    /// Lines by normalised number.
    pub lines: HashMap<u64, Line>,
    /// Parsed `trusted_pbx` plus the `pbx_host` address.
    pub trusted: Vec<(IpAddr, u8)>,
    /// What a redirect to each mapped user sends, built once per reload.
    pub redirects: HashMap<UserId, Redirect>,
    /// `pbx_host` as a socket address (resolved at reload), where the proxy sends
    /// agents' requests and how it recognises the PBX.
    pub pbx_addr: Option<std::net::SocketAddr>,
    /// The transport `pbx_host` names (`;transport=`, UDP by default): how the proxy reaches
    /// the PBX, whatever transport the agent used.
    pub pbx_transport: crate::settings::PbxTransport,
    /// The host of `pbx_host` (no brackets, no port) and its port (5060 when absent), split once
    /// per reload: the SIP path compares Request-URIs with them.
    pbx_name: String,
    pbx_port: u16,
    /// The static contacts in the mappings (phones that do not register), with their
    /// extensions: a request from one of them is that agent's, even from the PBX's IP address.
    pub agent_contacts: Vec<(std::net::SocketAddr, String)>,
}

/// The target of a redirect to one manager.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The extension (shared with every audit record that names it).
    pub extension: Arc<str>,
    /// The 302 Contact value, `<sip:EXT@pbx_host>`.
    pub contact: Arc<str>,
}

impl PortalEntry {
    pub(crate) fn build(portal: Portal, mappings: Vec<Mapping>, lines: Vec<Line>) -> Self {
        let mut trusted: Vec<_> = portal.settings.trusted_pbx.iter().filter_map(|t| parse_cidr(t)).collect();
        let pbx_host = portal.settings.pbx_host_port();
        let (pbx_name, pbx_port) = split_host_port(pbx_host);
        if let Ok(ip) = pbx_name.parse::<IpAddr>() {
            trusted.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        let redirects = mappings
            .iter()
            .map(|m| (m.user_id, Redirect { extension: Arc::from(m.extension.as_str()), contact: Arc::from(format!("<sip:{}@{pbx_host}>", m.extension)) }))
            .collect();
        let agent_contacts = mappings.iter().filter_map(|m| Some((contact_addr(m.contact.as_deref()?)?, m.extension.clone()))).collect();
        Self {
            agent_contacts,
            // Resolved once per reload (reloads run on blocking threads): DNS stays off the SIP path.
            pbx_addr: std::net::ToSocketAddrs::to_socket_addrs(pbx_host).ok().and_then(|mut a| a.next()),
            pbx_transport: portal.settings.pbx_transport(),
            pbx_name: pbx_name.to_owned(),
            pbx_port,
            redirects,
            by_user: mappings.iter().map(|m| (m.user_id, m.clone())).collect(),
            by_extension: mappings.into_iter().map(|m| (m.extension.clone(), m)).collect(),
            lines: lines.into_iter().filter_map(|l| Some((normalize_number(&l.number)?.as_u64(), l))).collect(),
            trusted,
            portal,
        }
    }

    /// The PBX's call id in `msg`: the value of this portal's `correlation_header`, if present.
    pub fn correlation(&self, msg: &crate::sip::core::SipMessage) -> Option<Arc<str>> {
        let v = msg.header_by_name(self.portal.settings.correlation_header.as_bytes())?;
        Some(Arc::from(String::from_utf8_lossy(v.trim_ascii()).as_ref()))
    }

    /// Whether a SIP URI's `host` and `port` name the portal's own SIP domain: a name in
    /// `sip_domains` (any port), or `pbx_host` itself (host and port, 5060 when absent; the
    /// PBX's address alone is no domain when callgate shares its host). Case-insensitive; IPv6
    /// brackets ignored.
    pub fn is_own_domain(&self, host: &[u8], port: Option<u16>) -> bool {
        let host = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")).unwrap_or(host);
        let is_pbx = !self.pbx_name.is_empty() && host.eq_ignore_ascii_case(self.pbx_name.as_bytes()) && port.unwrap_or(5060) == self.pbx_port;
        is_pbx || self.portal.settings.sip_domains.iter().any(|d| host.eq_ignore_ascii_case(d.as_bytes()))
    }

    /// The host of `pbx_host`, without port, brackets or parameters; empty when none is set.
    pub fn pbx_host_name(&self) -> &str {
        &self.pbx_name
    }

    /// Whether `ip` may act as this portal's PBX.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|&(net, len)| in_cidr(ip, net, len))
    }
}

/// `sip:101@10.0.0.5:5062;transport=tcp` -> 10.0.0.5:5062 (IP literals only; port 5060 by default).
fn contact_addr(contact: &str) -> Option<std::net::SocketAddr> {
    let uri = crate::sip::core::Uri::parse(contact.trim().trim_start_matches('<').trim_end_matches('>').as_bytes())?;
    crate::sip::core::socket_addr(uri.host, uri.port)
}

/// `host:port` or `[v6]:port` (the parameters of `pbx_host` already cut off) split into the host
/// without brackets and the port, 5060 when absent or unreadable.
fn split_host_port(host_port: &str) -> (&str, u16) {
    let split = host_port.rsplit_once(':').filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.ends_with(']')));
    let (host, port) = split.map_or((host_port, None), |(h, p)| (h, p.parse().ok()));
    (host.trim_start_matches('[').trim_end_matches(']'), port.unwrap_or(5060))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|v4| in_cidr(IpAddr::V4(v4), net, len)),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// All portals at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Portals by id.
    pub portals: HashMap<PortalId, Arc<PortalEntry>>,
    /// Portal by line number (a number belongs to one portal).
    pub by_line: HashMap<u64, PortalId>,
    /// Every portal's static contacts by host: (portal, contact address, extension). The SIP
    /// front door asks this of most requests, so it is indexed once per reload.
    pub(crate) contacts_by_ip: HashMap<IpAddr, Vec<(PortalId, std::net::SocketAddr, String)>>,
}

impl Snapshot {
    /// Adds `entry`, indexing its lines and static contacts.
    fn insert(&mut self, entry: PortalEntry) {
        let id = entry.portal.id;
        for number in entry.lines.keys() {
            self.by_line.insert(*number, id);
        }
        for (addr, ext) in &entry.agent_contacts {
            self.contacts_by_ip.entry(addr.ip()).or_default().push((id, *addr, ext.clone()));
        }
        self.portals.insert(id, Arc::new(entry));
    }

    /// The only portal, when there is exactly one (then no line is needed to find it).
    pub fn single(&self) -> Option<&Arc<PortalEntry>> {
        (self.portals.len() == 1).then(|| self.portals.values().next()).flatten()
    }

    /// The portal owning the line `number`.
    pub fn by_line_number(&self, number: Number) -> Option<&Arc<PortalEntry>> {
        self.by_line.get(&number.as_u64()).and_then(|id| self.portals.get(id))
    }

    /// Whether `ip` may ask for decisions: trusted by its portal, or, when no portal could be
    /// found, by any portal (which then gets "unknown portal").
    pub fn trusts(&self, portal: Option<&PortalEntry>, ip: IpAddr) -> bool {
        match portal {
            Some(p) => p.trusts(ip),
            None => self.portals.values().any(|p| p.trusts(ip)),
        }
    }
}

/// Shared handle to the current snapshot. Readers never block: a reload builds a new snapshot
/// off to the side and swaps it in.
#[derive(Clone, Default)]
pub struct Directory {
    snapshot: Arc<ArcSwap<Snapshot>>,
    index: Arc<PmIndex>,
    /// Where index misses of active portals go (`crm::lookup` fills the index for the next
    /// call); set once at start, absent in tests without a CRM side.
    misses: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<(PortalId, u64)>>>,
}

impl Directory {
    /// The personal-manager index.
    pub fn index(&self) -> &PmIndex {
        &self.index
    }

    /// The caller's responsible user in `portal`, if both are known. A miss in a portal that
    /// could use the answer is handed to the look-up queue (never waited on).
    pub fn manager_of(&self, portal: Option<&PortalEntry>, caller: Option<Number>) -> Option<UserId> {
        let (p, n) = (portal?, caller?);
        let found = self.index.lookup(p.portal.id, n.as_u64());
        if found.is_none() {
            self.missed(p, n);
        }
        found
    }

    /// Warms the cache line [`Self::manager_of`] will read for this caller (call it first, do
    /// other work, then look up).
    pub fn prefetch_manager(&self, portal: Option<&PortalEntry>, caller: Option<Number>) {
        if let (Some(p), Some(n)) = (portal, caller) {
            self.index.prefetch(p.portal.id, n.as_u64());
        }
    }

    /// Sends index misses to `queue` from now on (the first call wins; later ones are ignored).
    pub fn set_miss_queue(&self, queue: tokio::sync::mpsc::Sender<(PortalId, u64)>) {
        let _ = self.misses.set(queue);
    }

    /// Two integers into a bounded queue, only on a miss; a full queue drops (it only fills a cache).
    fn missed(&self, p: &PortalEntry, n: Number) {
        let s = &p.portal.settings;
        let Some(queue) = self.misses.get().filter(|_| s.active && s.incoming.forward_to_personal_manager && p.portal.auth.is_some()) else { return };
        if queue.try_send((p.portal.id, n.as_u64())).is_err() {
            metrics::counter!("callgate_pm_lookup_queue_total", "outcome" => "dropped").increment(1);
        }
    }

    /// Loads the persisted index snapshot (start-up).
    ///
    /// # Errors
    /// The store failed.
    pub fn load_index_blocking(&self, store: &StoreHandle) -> Result<usize, StoreError> {
        let rows = store.inner().load_index()?;
        for (portal, number, user) in &rows {
            self.index.insert_all(*portal, &[(*number, *user)]);
        }
        Ok(rows.len())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current snapshot for the length of one message's handling: no reference count is
    /// touched in the common case (`arc_swap`'s guard), which the SIP hot path prefers. Do not
    /// keep it across an await or for long.
    pub fn snapshot_guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Rebuilds the snapshot from the store.
    ///
    /// # Errors
    /// The store failed; the old snapshot stays in force.
    pub async fn reload(&self, store: &StoreHandle) -> Result<(), StoreError> {
        let snap = store.run(build_snapshot).await?;
        self.snapshot.store(Arc::new(snap));
        Ok(())
    }

    /// Installs a snapshot of `entries` (indexed as `build_snapshot` does), for tests that
    /// need portals without a store.
    #[cfg(test)]
    pub(crate) fn install_for_test(&self, entries: Vec<PortalEntry>) {
        let mut snap = Snapshot::default();
        for entry in entries {
            snap.insert(entry);
        }
        self.snapshot.store(Arc::new(snap));
    }

    /// Synchronous reload for start-up.
    ///
    /// # Errors
    /// The store failed.
    pub fn reload_blocking(&self, store: &StoreHandle) -> Result<(), StoreError> {
        self.snapshot.store(Arc::new(build_snapshot(store.inner())?));
        Ok(())
    }
}

fn build_snapshot(s: &dyn crate::store::Store) -> Result<Snapshot, StoreError> {
    let mut snap = Snapshot::default();
    for portal in s.list_portals()? {
        let id = portal.id;
        snap.insert(PortalEntry::build(portal, s.list_mappings(id)?, s.list_lines(id)?));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_cidr(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_cidr(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_cidr(ip("127.0.0.1"), ip("127.0.0.1"), 32));
        assert!(!in_cidr(ip("127.0.0.2"), ip("127.0.0.1"), 32));
        assert!(in_cidr(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_cidr(ip("::ffff:10.0.0.1"), ip("10.0.0.0"), 24));
        assert!(in_cidr(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(!in_cidr(ip("2001:db9::1"), ip("2001:db8::"), 32));
    }
}
