//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL` (a committed call-state
//! change and its CRM intent survive a crash, DESIGN.md §5), foreign keys on.
//!
//! The database holds secrets (webhook URLs, OAuth client secrets and tokens, agents' HA1s), so
//! it is private to the service's user whatever the umask: its folder is 0700 (created so, or
//! tightened when it is ours and looser), and the database and its `-wal` and `-shm` files are
//! 0600. SQLite creates the last two later, with the mode of the database; they are created
//! empty and private before it opens anything (SQLite keeps an existing file's mode), and all
//! three are checked again after the journal is switched to WAL.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::json;

use super::migrations::MIGRATIONS;
use super::{CrmCall, Delivered, Intent, NewPortal, OutboxWrite, Store, StoreError};
use crate::config::Secret;
use crate::settings::{Auth, Line, Mapping, MappingInput, Portal, PortalId, PortalSettings};

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    // One connection, one writer: SQLite serialises writers anyway, and a single lock keeps each
    // multi-statement change atomic with respect to the others. Never held across an `.await`
    // (the trait is synchronous and runs on the blocking pool).
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating the file and its folder on first run) and migrates.
    ///
    /// # Errors
    /// The folder cannot be created or the database cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let failed = |source| StoreError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(failed)?;
        }
        for file in database_files(path) {
            private_file(&file).map_err(failed)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        for file in database_files(path) {
            private_file(&file).map_err(failed)?;
        }
        migrate(&conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// Schema version after migration (for tests and diagnostics).
    pub fn schema_version(&self) -> i64 {
        self.conn.lock().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap_or(-1)
    }
}

/// The database and the two files SQLite keeps beside it in WAL mode.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates `dir` (and missing parents) 0700, or tightens an existing one to 0700 when this
/// process's user owns it. A folder of someone else's (`/var/lib`), or a shared one with the
/// sticky bit (`/tmp`), is left as it is with a warning: changing it would break others.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    if ours && mode & 0o1000 == 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "the data folder was open to other users; now 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    } else {
        tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "the data folder is open to other users and not ours to change; the database files stay 0600");
        Ok(())
    }
}

/// Makes `file` exist with mode 0600: created empty when missing (SQLite takes an empty file
/// as a new database, WAL or shared-memory index), tightened when looser.
fn private_file(file: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file) {
        // The umask can only take bits away; set the mode anyway so it is exactly 0600.
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::metadata(file)?.mode() & 0o777 != 0o600 {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.try_into().unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn auth_to_json(auth: Option<&Auth>) -> Option<String> {
    auth.map(|a| match a {
        Auth::Webhook { url } => json!({ "webhook_url": url.expose() }),
        Auth::OAuth { client_id, client_secret, oauth_server } => json!({
            "oauth": { "client_id": client_id, "client_secret": client_secret.expose(), "oauth_server": oauth_server }
        }),
    })
    .map(|v| v.to_string())
}

fn auth_from_json(text: Option<String>) -> Result<Option<Auth>, StoreError> {
    let Some(text) = text else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Ok(if let Some(url) = v.get("webhook_url") {
        Some(Auth::Webhook { url: Secret::new(s(url)) })
    } else {
        v.get("oauth").map(|o| Auth::OAuth {
            client_id: s(&o["client_id"]),
            client_secret: Secret::new(s(&o["client_secret"])),
            oauth_server: s(&o["oauth_server"]),
        })
    })
}

/// A portal row as read: id, name, domain, auth JSON, settings JSON (decoded outside the lock).
type PortalRow = (PortalId, Option<String>, String, Option<String>, String);

fn portal_from_row(r: &Row<'_>) -> rusqlite::Result<PortalRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn build_portal(raw: PortalRow) -> Result<Portal, StoreError> {
    let (id, name, domain, auth, settings) = raw;
    Ok(Portal { id, name, domain, auth: auth_from_json(auth)?, settings: serde_json::from_str(&settings)? })
}

fn mapping_from_row(r: &Row<'_>) -> rusqlite::Result<Mapping> {
    Ok(Mapping { id: r.get(0)?, user_id: r.get(1)?, extension: r.get(2)?, use_for_personal_manager: r.get(3)?, contact: r.get(4)? })
}

/// Maps a UNIQUE violation to the API field that clashed.
fn conflict(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            for (col, field) in [("domain", "domain"), ("extension", "extension"), ("user_id", "user_id")] {
                if msg.contains(col) {
                    return StoreError::Conflict { field };
                }
            }
        }
    }
    StoreError::Db(e)
}

const PORTAL_COLS: &str = "SELECT id, name, domain, auth, settings FROM portals";
const MAPPING_COLS: &str = "SELECT id, user_id, extension, use_for_pm, contact FROM mappings";

impl Store for SqliteStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.conn.lock().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn list_portals(&self) -> Result<Vec<Portal>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!("{PORTAL_COLS} ORDER BY id"))?;
        let rows = stmt.query_map([], portal_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(build_portal).collect()
    }

    fn get_portal(&self, id: PortalId) -> Result<Option<Portal>, StoreError> {
        let conn = self.conn.lock();
        let raw = conn.query_row(&format!("{PORTAL_COLS} WHERE id = ?1"), [id], portal_from_row).optional()?;
        raw.map(build_portal).transpose()
    }

    fn insert_portal(&self, new: &NewPortal) -> Result<Portal, StoreError> {
        let settings = PortalSettings::default();
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO portals (name, domain, auth, settings) VALUES (?1, ?2, ?3, ?4)",
            params![new.name, new.domain, auth_to_json(new.auth.as_ref()), serde_json::to_string(&settings)?],
        )
        .map_err(conflict)?;
        Ok(Portal { id: conn.last_insert_rowid(), name: new.name.clone(), domain: new.domain.clone(), auth: new.auth.clone(), settings })
    }

    fn update_portal(&self, id: PortalId, new: &NewPortal) -> Result<bool, StoreError> {
        let n = self
            .conn
            .lock()
            .execute(
                "UPDATE portals SET name = ?2, domain = ?3, auth = ?4, updated_at = unixepoch() WHERE id = ?1",
                params![id, new.name, new.domain, auth_to_json(new.auth.as_ref())],
            )
            .map_err(conflict)?;
        Ok(n == 1)
    }

    fn delete_portal(&self, id: PortalId) -> Result<bool, StoreError> {
        Ok(self.conn.lock().execute("DELETE FROM portals WHERE id = ?1", [id])? == 1)
    }

    fn put_settings(&self, id: PortalId, s: &PortalSettings) -> Result<bool, StoreError> {
        let text = serde_json::to_string(s)?;
        let n = self.conn.lock().execute("UPDATE portals SET settings = ?2, updated_at = unixepoch() WHERE id = ?1", params![id, text])?;
        Ok(n == 1)
    }

    fn list_mappings(&self, portal: PortalId) -> Result<Vec<Mapping>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!("{MAPPING_COLS} WHERE portal_id = ?1 ORDER BY id"))?;
        let rows = stmt.query_map([portal], mapping_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_mapping(&self, portal: PortalId, m: &MappingInput) -> Result<Mapping, StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO mappings (portal_id, user_id, extension, use_for_pm, contact) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![portal, m.user_id, m.extension, m.use_for_personal_manager, m.contact],
        )
        .map_err(conflict)?;
        Ok(Mapping {
            id: conn.last_insert_rowid(),
            user_id: m.user_id,
            extension: m.extension.clone(),
            use_for_personal_manager: m.use_for_personal_manager,
            contact: m.contact.clone(),
        })
    }

    fn update_mapping(&self, portal: PortalId, id: i64, m: &MappingInput) -> Result<Option<Mapping>, StoreError> {
        let n = self
            .conn
            .lock()
            .execute(
                "UPDATE mappings SET user_id = ?3, extension = ?4, use_for_pm = ?5, contact = ?6 WHERE portal_id = ?1 AND id = ?2",
                params![portal, id, m.user_id, m.extension, m.use_for_personal_manager, m.contact],
            )
            .map_err(conflict)?;
        Ok((n == 1).then(|| Mapping {
            id,
            user_id: m.user_id,
            extension: m.extension.clone(),
            use_for_personal_manager: m.use_for_personal_manager,
            contact: m.contact.clone(),
        }))
    }

    fn delete_mapping(&self, portal: PortalId, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn.lock().execute("DELETE FROM mappings WHERE portal_id = ?1 AND id = ?2", [portal, id])? == 1)
    }

    fn list_lines(&self, portal: PortalId) -> Result<Vec<Line>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT number, utm FROM lines WHERE portal_id = ?1 ORDER BY number")?;
        let rows = stmt
            .query_map([portal], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(number, utm)| Ok(Line { number, utm: utm.map(|u| serde_json::from_str(&u)).transpose()? }))
            .collect()
    }

    fn upsert_line(&self, portal: PortalId, line: &Line) -> Result<(), StoreError> {
        let utm = line.utm.as_ref().map(serde_json::to_string).transpose()?;
        self.conn.lock().execute(
            "INSERT INTO lines (portal_id, number, utm) VALUES (?1, ?2, ?3)
             ON CONFLICT (portal_id, number) DO UPDATE SET utm = excluded.utm",
            params![portal, line.number, utm],
        )?;
        Ok(())
    }

    fn delete_line(&self, portal: PortalId, number: &str) -> Result<bool, StoreError> {
        Ok(self.conn.lock().execute("DELETE FROM lines WHERE portal_id = ?1 AND number = ?2", params![portal, number])? == 1)
    }

    fn upsert_index(&self, portal: PortalId, rows: &[(u64, u64)]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO pm_index (portal_id, number, user_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (portal_id, number) DO UPDATE SET user_id = excluded.user_id",
            )?;
            for (number, user) in rows {
                stmt.execute(params![portal, number, user])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn remove_index(&self, portal: PortalId, numbers: &[u64]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM pm_index WHERE portal_id = ?1 AND number = ?2")?;
            for number in numbers {
                stmt.execute(params![portal, number])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn clear_index(&self, portal: PortalId) -> Result<(), StoreError> {
        self.conn.lock().execute("DELETE FROM pm_index WHERE portal_id = ?1", [portal])?;
        Ok(())
    }

    fn load_index(&self) -> Result<Vec<(PortalId, u64, u64)>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT portal_id, number, user_id FROM pm_index")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn outbox_write(&self, w: &OutboxWrite, now_ms: u64) -> Result<(), StoreError> {
        super::outbox::write(&self.conn.lock(), w, now_ms)
    }

    fn outbox_due(&self, portal: PortalId, now_ms: u64, limit: usize) -> Result<Vec<Intent>, StoreError> {
        super::outbox::due(&self.conn.lock(), portal, now_ms, limit)
    }

    fn outbox_next_due(&self, portal: PortalId) -> Result<Option<u64>, StoreError> {
        super::outbox::next_due(&self.conn.lock(), portal)
    }

    fn outbox_delivered(&self, d: &Delivered, now_ms: u64) -> Result<(), StoreError> {
        super::outbox::delivered(&self.conn.lock(), d, now_ms)
    }

    fn outbox_retry(&self, ids: &[i64], next_at_ms: u64) -> Result<(), StoreError> {
        super::outbox::retry(&self.conn.lock(), ids, next_at_ms)
    }

    fn crm_call(&self, portal: PortalId, call_key: &str) -> Result<Option<CrmCall>, StoreError> {
        super::outbox::crm_call(&self.conn.lock(), portal, call_key)
    }

    fn open_crm_calls(&self) -> Result<Vec<CrmCall>, StoreError> {
        super::outbox::open_calls(&self.conn.lock())
    }

    fn finish_queued(&self, portal: PortalId, call_key: &str) -> Result<bool, StoreError> {
        super::outbox::finish_queued(&self.conn.lock(), portal, call_key)
    }

    fn outbox_depth(&self) -> Result<usize, StoreError> {
        super::outbox::depth(&self.conn.lock())
    }

    fn registers_queued(&self, portal: PortalId, call_keys: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        super::outbox::registers_queued(&self.conn.lock(), portal, call_keys)
    }

    fn outbox_older_than(&self, before_ms: u64) -> Result<usize, StoreError> {
        super::outbox::older_than(&self.conn.lock(), before_ms)
    }

    fn delivery_problems(&self, overdue_before_ms: u64, limit: usize) -> Result<Vec<super::DeliveryProblem>, StoreError> {
        super::outbox::problems(&self.conn.lock(), overdue_before_ms, limit)
    }

    fn portal_tokens(&self, portal: PortalId) -> Result<Option<super::PortalTokens>, StoreError> {
        super::tokens::get(&self.conn.lock(), portal)
    }

    fn portal_tokens_by_member(&self, member_id: &str) -> Result<Option<super::PortalTokens>, StoreError> {
        super::tokens::by_member(&self.conn.lock(), member_id)
    }

    fn put_portal_tokens(&self, t: &super::PortalTokens, now_ms: u64) -> Result<(), StoreError> {
        super::tokens::put(&self.conn.lock(), t, now_ms)
    }

    fn rotate_portal_tokens(&self, portal: PortalId, access: &Secret, refresh: &Secret, expires_at_unix: u64, client_endpoint: &str, now_ms: u64) -> Result<bool, StoreError> {
        super::tokens::rotate(&self.conn.lock(), portal, access, refresh, expires_at_unix, client_endpoint, now_ms)
    }

    fn put_agent_credential(&self, c: &super::AgentCredential, now_ms: u64) -> Result<(), StoreError> {
        super::agents::put(&self.conn.lock(), c, now_ms)
    }

    fn delete_agent_credential(&self, portal: PortalId, mapping_id: i64) -> Result<bool, StoreError> {
        super::agents::delete(&self.conn.lock(), portal, mapping_id)
    }

    fn checkpoint_calls(&self, w: &super::CheckpointWrite, now_ms: u64) -> Result<(), StoreError> {
        super::checkpoints::write(&self.conn.lock(), w, now_ms)
    }

    fn call_checkpoints(&self) -> Result<(Vec<super::CallCheckpoint>, Option<u64>), StoreError> {
        super::checkpoints::load(&self.conn.lock())
    }

    fn list_agent_credentials(&self) -> Result<Vec<super::AgentCredential>, StoreError> {
        super::agents::list(&self.conn.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("sub/callgate.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn creates_folder_and_migrates_once() {
        let (dir, s) = store();
        assert_eq!(s.schema_version(), MIGRATIONS.len() as i64);
        drop(s);
        let again = SqliteStore::open(&dir.path().join("sub/callgate.db")).unwrap();
        assert_eq!(again.schema_version(), MIGRATIONS.len() as i64);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn the_folder_and_the_database_files_are_private_even_with_a_loose_umask() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A folder and a database left world-readable by an earlier version (umask 022).
        std::fs::DirBuilder::new().mode(0o755).create(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = data.join("callgate.db");
        drop(SqliteStore::open(&db).unwrap());
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = SqliteStore::open(&db).unwrap();
        s.insert_portal(&NewPortal { name: None, domain: "https://a.bitrix24.ru/".into(), auth: None }).unwrap();
        assert_eq!(mode(&data), 0o700, "an existing loose folder is tightened");
        for f in database_files(&db) {
            assert!(f.exists(), "{} exists", f.display());
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        // A fresh folder, nested.
        let fresh = dir.path().join("a/b/callgate.db");
        let _s = SqliteStore::open(&fresh).unwrap();
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn a_shared_sticky_folder_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let db = shared.join("callgate.db");
        let _s = SqliteStore::open(&db).unwrap();
        assert_eq!(std::fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777);
        assert_eq!(mode(&db), 0o600, "the database is private anyway");
    }

    #[test]
    fn duplicate_domain_and_extension_conflict() {
        let (_d, s) = store();
        let new = NewPortal { name: None, domain: "https://a.bitrix24.ru/".into(), auth: None };
        let p = s.insert_portal(&new).unwrap();
        assert!(matches!(s.insert_portal(&new), Err(StoreError::Conflict { field: "domain" })));
        let m = MappingInput { user_id: 1, extension: "101".into(), use_for_personal_manager: true, contact: None };
        s.insert_mapping(p.id, &m).unwrap();
        let same_ext = MappingInput { user_id: 2, ..m.clone() };
        assert!(matches!(s.insert_mapping(p.id, &same_ext), Err(StoreError::Conflict { field: "extension" })));
        let same_user = MappingInput { extension: "102".into(), ..m };
        assert!(matches!(s.insert_mapping(p.id, &same_user), Err(StoreError::Conflict { field: "user_id" })));
    }

    #[test]
    fn deleting_a_portal_cascades() {
        let (_d, s) = store();
        let p = s.insert_portal(&NewPortal { name: None, domain: "https://a.bitrix24.ru/".into(), auth: None }).unwrap();
        s.insert_mapping(p.id, &MappingInput { user_id: 1, extension: "101".into(), use_for_personal_manager: true, contact: None }).unwrap();
        s.upsert_index(p.id, &[(79_161_234_567, 1)]).unwrap();
        assert!(s.delete_portal(p.id).unwrap());
        assert!(s.load_index().unwrap().is_empty());
        assert!(s.list_mappings(p.id).unwrap().is_empty());
    }
}
