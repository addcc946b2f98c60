//! The `agent_credentials` table (migration 4): one row per browser agent (WebRTC widget) that
//! was issued a SIP password. Only HA1 = MD5(extension:realm:password) is kept: enough to check a
//! digest, useless for reading the password back (DESIGN.md §2.3).
//!
//! The row hangs off its mapping (`mapping_id`, cascade on delete): removing the mapping or the
//! portal revokes the credentials with it. The extension and realm the HA1 was made with are
//! stored beside it, so a renamed extension or a changed portal domain is noticed (the old HA1
//! cannot match anyway) instead of silently failing.

use rusqlite::{params, Connection};

use super::StoreError;
use crate::settings::PortalId;

/// A browser agent's stored credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCredential {
    /// The portal.
    pub portal: PortalId,
    /// The mapping the agent is (its extension and Bitrix24 user).
    pub mapping_id: i64,
    /// The SIP username: the extension when the HA1 was made.
    pub extension: String,
    /// The digest realm when the HA1 was made (the portal's host).
    pub realm: String,
    /// MD5(extension:realm:password), 32 lowercase hex digits.
    pub ha1: String,
}

impl std::fmt::Debug for AgentCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The HA1 is as good as the password for this realm: never printed.
        f.debug_struct("AgentCredential")
            .field("portal", &self.portal)
            .field("mapping_id", &self.mapping_id)
            .field("extension", &self.extension)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// Inserts or replaces the mapping's credentials (a rotation is the same write).
pub(super) fn put(conn: &Connection, c: &AgentCredential, now_ms: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO agent_credentials (mapping_id, portal_id, extension, realm, ha1, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (mapping_id) DO UPDATE SET portal_id = excluded.portal_id, extension = excluded.extension,
             realm = excluded.realm, ha1 = excluded.ha1, updated_at = excluded.updated_at",
        params![c.mapping_id, c.portal, c.extension, c.realm, c.ha1, now_ms as i64],
    )?;
    Ok(())
}

/// Deletes the mapping's credentials; false when there were none.
pub(super) fn delete(conn: &Connection, portal: PortalId, mapping_id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM agent_credentials WHERE portal_id = ?1 AND mapping_id = ?2", params![portal, mapping_id])? == 1)
}

/// Every stored credential (start-up loads them into memory: the SIP path never waits on disk).
pub(super) fn list(conn: &Connection) -> Result<Vec<AgentCredential>, StoreError> {
    let mut stmt = conn.prepare("SELECT portal_id, mapping_id, extension, realm, ha1 FROM agent_credentials ORDER BY mapping_id")?;
    let rows =
        stmt.query_map([], |r| Ok(AgentCredential { portal: r.get(0)?, mapping_id: r.get(1)?, extension: r.get(2)?, realm: r.get(3)?, ha1: r.get(4)? }))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MappingInput;
    use crate::store::{NewPortal, SqliteStore, Store};

    fn store_with_mapping() -> (tempfile::TempDir, SqliteStore, PortalId, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let portal = store.insert_portal(&NewPortal { name: None, domain: "https://a.example/".into(), auth: None }).unwrap().id;
        let m = MappingInput { user_id: 5, extension: "101".into(), use_for_personal_manager: true, contact: None };
        let mapping = store.insert_mapping(portal, &m).unwrap().id;
        (dir, store, portal, mapping)
    }

    fn cred(portal: PortalId, mapping_id: i64, ha1: &str) -> AgentCredential {
        AgentCredential { portal, mapping_id, extension: "101".into(), realm: "a.example".into(), ha1: ha1.into() }
    }

    #[test]
    fn a_rotation_replaces_the_row_and_a_revocation_deletes_it() {
        let (_dir, store, portal, mapping) = store_with_mapping();
        store.put_agent_credential(&cred(portal, mapping, "aa"), 1).unwrap();
        store.put_agent_credential(&cred(portal, mapping, "bb"), 2).unwrap();
        assert_eq!(store.list_agent_credentials().unwrap(), vec![cred(portal, mapping, "bb")]);
        assert!(!store.delete_agent_credential(portal + 1, mapping).unwrap(), "another portal's id does not revoke");
        assert!(store.delete_agent_credential(portal, mapping).unwrap());
        assert!(!store.delete_agent_credential(portal, mapping).unwrap());
        assert!(store.list_agent_credentials().unwrap().is_empty());
    }

    #[test]
    fn deleting_the_mapping_revokes_its_credentials() {
        let (_dir, store, portal, mapping) = store_with_mapping();
        store.put_agent_credential(&cred(portal, mapping, "aa"), 1).unwrap();
        assert!(store.delete_mapping(portal, mapping).unwrap());
        assert!(store.list_agent_credentials().unwrap().is_empty());
    }

    #[test]
    fn debug_output_hides_the_ha1() {
        assert!(!format!("{:?}", cred(1, 1, "secretha1")).contains("secretha1"));
    }
}
