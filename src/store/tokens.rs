//! The `portal_tokens` table (migration 3): what an OAuth portal's `ONAPPINSTALL` delivered
//! (bitrix24-rest.md §2.2): the tokens, `member_id`, `application_token` (the secret later
//! events carry) and `client_endpoint`. One row per portal, deleted with it.
//!
//! Atomicity: an install replaces the whole row in one statement; a refresh replaces the access
//! token, the refresh token and the expiry in one `UPDATE` (the old refresh token is useless
//! once the OAuth server rotated it, so the pair must never be stored half-way).

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::config::Secret;
use crate::settings::PortalId;

/// One OAuth portal's installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalTokens {
    /// The portal.
    pub portal: PortalId,
    /// The portal's id at Bitrix24 (`auth[member_id]`).
    pub member_id: String,
    /// Proves that an event comes from this portal's installation of the app.
    pub application_token: Secret,
    /// `https://portal/rest/`.
    pub client_endpoint: String,
    /// Sent as `auth` with every call.
    pub access_token: Secret,
    /// Used once, for the next refresh.
    pub refresh_token: Secret,
    /// Unix time when `access_token` expires.
    pub expires_at_unix: u64,
}

/// Inserts or replaces the portal's row.
pub(super) fn put(conn: &Connection, t: &PortalTokens, now_ms: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO portal_tokens (portal_id, member_id, application_token, client_endpoint, access_token, refresh_token, expires_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (portal_id) DO UPDATE SET member_id = excluded.member_id, application_token = excluded.application_token,
             client_endpoint = excluded.client_endpoint, access_token = excluded.access_token,
             refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        params![
            t.portal,
            t.member_id,
            t.application_token.expose(),
            t.client_endpoint,
            t.access_token.expose(),
            t.refresh_token.expose(),
            t.expires_at_unix as i64,
            now_ms as i64
        ],
    )?;
    Ok(())
}

/// Replaces the token pair after a refresh (and the client endpoint, when the answer named
/// one); false when the portal has no row (deleted meanwhile).
pub(super) fn rotate(
    conn: &Connection,
    portal: PortalId,
    access: &Secret,
    refresh: &Secret,
    expires_at_unix: u64,
    client_endpoint: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE portal_tokens SET access_token = ?2, refresh_token = ?3, expires_at = ?4,
             client_endpoint = CASE WHEN ?5 = '' THEN client_endpoint ELSE ?5 END, updated_at = ?6
         WHERE portal_id = ?1",
        params![
            portal,
            access.expose(),
            refresh.expose(),
            expires_at_unix as i64,
            client_endpoint,
            now_ms as i64
        ],
    )?;
    Ok(n == 1)
}

const COLS: &str = "SELECT portal_id, member_id, application_token, client_endpoint, access_token, refresh_token, expires_at FROM portal_tokens";

/// The portal's row.
pub(super) fn get(conn: &Connection, portal: PortalId) -> Result<Option<PortalTokens>, StoreError> {
    Ok(conn
        .query_row(&format!("{COLS} WHERE portal_id = ?1"), [portal], row)
        .optional()?)
}

/// The row installed with `member_id` (the newest, should two portals claim it).
pub(super) fn by_member(
    conn: &Connection,
    member_id: &str,
) -> Result<Option<PortalTokens>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{COLS} WHERE member_id = ?1 ORDER BY updated_at DESC LIMIT 1"),
            [member_id],
            row,
        )
        .optional()?)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PortalTokens> {
    Ok(PortalTokens {
        portal: r.get(0)?,
        member_id: r.get(1)?,
        application_token: Secret::new(r.get::<_, String>(2)?),
        client_endpoint: r.get(3)?,
        access_token: Secret::new(r.get::<_, String>(4)?),
        refresh_token: Secret::new(r.get::<_, String>(5)?),
        expires_at_unix: r.get::<_, i64>(6)?.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewPortal, SqliteStore, Store};

    fn tokens(portal: PortalId, access: &str) -> PortalTokens {
        PortalTokens {
            portal,
            member_id: "m1".into(),
            application_token: Secret::new("app-token"),
            client_endpoint: "https://a.bitrix24.ru/rest/".into(),
            access_token: Secret::new(access),
            refresh_token: Secret::new(format!("r-{access}")),
            expires_at_unix: 100,
        }
    }

    #[test]
    fn install_rotate_and_cascade() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let p = s
            .insert_portal(&NewPortal {
                name: None,
                domain: "https://a.bitrix24.ru/".into(),
                auth: None,
            })
            .unwrap();
        assert_eq!(s.portal_tokens(p.id).unwrap(), None);
        s.put_portal_tokens(&tokens(p.id, "a1"), 1).unwrap();
        s.put_portal_tokens(&tokens(p.id, "a2"), 2).unwrap();
        assert_eq!(s.portal_tokens(p.id).unwrap(), Some(tokens(p.id, "a2")));
        assert!(s
            .rotate_portal_tokens(p.id, &Secret::new("a3"), &Secret::new("r3"), 200, "", 3)
            .unwrap());
        let t = s.portal_tokens_by_member("m1").unwrap().unwrap();
        assert_eq!(
            (
                t.access_token.expose(),
                t.refresh_token.expose(),
                t.expires_at_unix
            ),
            ("a3", "r3", 200)
        );
        assert_eq!(
            t.client_endpoint, "https://a.bitrix24.ru/rest/",
            "an empty endpoint keeps the stored one"
        );
        assert!(s.delete_portal(p.id).unwrap());
        assert_eq!(s.portal_tokens_by_member("m1").unwrap(), None);
        assert!(!s
            .rotate_portal_tokens(p.id, &Secret::new("a4"), &Secret::new("r4"), 300, "", 4)
            .unwrap());
    }
}
