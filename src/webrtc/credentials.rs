//! Browser agents' SIP credentials (WebRTC widget): callgate issues them, per mapped extension,
//! so no PBX secret ever reaches a page (DESIGN.md §2.3, issue 6).
//!
//! - The username is the extension, the realm the portal's host (`office.bitrix24.ru`), the
//!   password 24 random alphanumeric characters (about 143 bits), shown once when issued.
//! - Only HA1 = MD5(extension:realm:password) is stored (`store::AgentCredential`) and kept in
//!   memory here, so the SIP path checks a digest without waiting on the disk.
//! - A credential belongs to its mapping row: the registrar accepts it only while the portal
//!   still maps that extension with that mapping id, and the realm is unchanged. Deleting or
//!   renaming a mapping, or changing the portal's domain, therefore revokes it at once (the
//!   store drops the row with the mapping; a rename or new domain needs a rotation).
//!
//! Lock: one `RwLock` around the map; REGISTERs read it, the admin API writes it; never held
//! across an `.await`.

use std::collections::HashMap;

use parking_lot::RwLock;
use rand::distr::{Alphanumeric, SampleString};

use crate::settings::{realm_of, Mapping, Portal, PortalId};
use crate::sip::core::digest::{self, HexDigest};
use crate::store::AgentCredential;

/// Length of an issued password.
pub const PASSWORD_LEN: usize = 24;

/// What the registrar needs to check one agent's digest.
#[derive(Debug, Clone)]
pub struct AgentSecret {
    /// The mapping the credential was issued for.
    pub mapping_id: i64,
    /// The realm the HA1 was made with.
    pub realm: String,
    /// MD5(extension:realm:password).
    pub ha1: HexDigest,
}

/// A freshly issued password: returned to the admin once, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// SIP username (the extension).
    pub username: String,
    /// The password.
    pub password: String,
    /// Digest realm (the portal's host).
    pub realm: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("username", &self.username).field("realm", &self.realm).finish_non_exhaustive()
    }
}

/// A new password and the row that stores only its HA1.
pub fn issue(portal: &Portal, mapping: &Mapping) -> (Issued, AgentCredential) {
    let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);
    let realm = realm_of(portal);
    let ha1 = digest::ha1(mapping.extension.as_bytes(), realm.as_bytes(), password.as_bytes());
    let row =
        AgentCredential { portal: portal.id, mapping_id: mapping.id, extension: mapping.extension.clone(), realm: realm.clone(), ha1: ha1.as_str().to_owned() };
    (Issued { username: mapping.extension.clone(), password, realm }, row)
}

/// The in-memory copy of every stored credential, by portal and extension.
#[derive(Debug, Default)]
pub struct Credentials {
    by_agent: RwLock<HashMap<(PortalId, String), AgentSecret>>,
}

impl Credentials {
    /// The cache for `rows` (start-up: `Store::list_agent_credentials`). Rows whose HA1 is not
    /// 32 hex digits (a hand-edited database) are skipped.
    pub fn new(rows: Vec<AgentCredential>) -> Self {
        let me = Self::default();
        for row in &rows {
            me.insert(row);
        }
        me
    }

    /// Adds or replaces one agent's credential (after it was stored).
    pub fn insert(&self, row: &AgentCredential) {
        let Some(ha1) = HexDigest::parse(row.ha1.as_bytes()) else { return };
        let mut map = self.by_agent.write();
        // A mapping renamed since: its old key must not keep answering.
        map.retain(|(p, _), s| !(*p == row.portal && s.mapping_id == row.mapping_id));
        map.insert((row.portal, row.extension.clone()), AgentSecret { mapping_id: row.mapping_id, realm: row.realm.clone(), ha1 });
    }

    /// Forgets the credential of mapping `mapping_id` of `portal` (after it was revoked).
    pub fn remove(&self, portal: PortalId, mapping_id: i64) {
        self.by_agent.write().retain(|(p, _), s| !(*p == portal && s.mapping_id == mapping_id));
    }

    /// The credential of `extension` in `portal`, if one was issued.
    pub fn get(&self, portal: PortalId, extension: &str) -> Option<AgentSecret> {
        self.by_agent.read().get(&(portal, extension.to_owned())).cloned()
    }

    /// Whether mapping `mapping_id` of `portal` has a credential.
    pub fn has_mapping(&self, portal: PortalId, mapping_id: i64) -> bool {
        self.by_agent.read().iter().any(|((p, _), s)| *p == portal && s.mapping_id == mapping_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::PortalSettings;

    fn portal(domain: &str) -> Portal {
        Portal { id: 3, name: None, domain: domain.into(), auth: None, settings: PortalSettings::default() }
    }

    fn mapping(id: i64, ext: &str) -> Mapping {
        Mapping { id, user_id: 5, extension: ext.into(), use_for_personal_manager: true, contact: None }
    }

    #[test]
    fn the_realm_is_the_portals_host() {
        assert_eq!(realm_of(&portal("https://Office.Bitrix24.ru/")), "office.bitrix24.ru");
        assert_eq!(realm_of(&portal("https://b24.example.com:8443/")), "b24.example.com");
    }

    #[test]
    fn an_issued_password_is_random_and_only_its_ha1_is_kept() {
        let (a, row) = issue(&portal("https://office.example/"), &mapping(7, "101"));
        let (b, _) = issue(&portal("https://office.example/"), &mapping(7, "101"));
        assert_eq!(a.password.len(), PASSWORD_LEN);
        assert!(a.password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.password, b.password);
        assert_eq!((a.username.as_str(), a.realm.as_str()), ("101", "office.example"));
        assert_eq!(row.ha1, digest::ha1(b"101", b"office.example", a.password.as_bytes()).as_str());
        assert!(!row.ha1.contains(&a.password));
        assert!(!format!("{a:?}").contains(&a.password));
    }

    #[test]
    fn the_cache_follows_rotation_rename_and_revocation() {
        let (_, row) = issue(&portal("https://office.example/"), &mapping(7, "101"));
        let creds = Credentials::new(vec![row.clone()]);
        assert_eq!(creds.get(3, "101").unwrap().mapping_id, 7);
        let (_, renamed) = issue(&portal("https://office.example/"), &mapping(7, "102"));
        creds.insert(&renamed);
        assert!(creds.get(3, "101").is_none());
        assert!(creds.get(3, "102").is_some() && creds.has_mapping(3, 7));
        creds.remove(3, 7);
        assert!(creds.get(3, "102").is_none() && !creds.has_mapping(3, 7));
        let bad = AgentCredential { ha1: "not-hex".into(), ..row };
        assert!(Credentials::new(vec![bad]).get(3, "101").is_none());
    }
}
