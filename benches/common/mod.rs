//! Shared bench fixture: a directory with one active portal, 500 managers (users 100..600 with
//! extensions of the same number, like the anchors' mappings.csv) and `n` numbers in the index
//! (79000000000 + i -> user 100 + i % 500, like the anchors' pm.csv).

use std::sync::Arc;

use callgate::directory::Directory;
use callgate::settings::{MappingInput, PortalSettings};
use callgate::store::{NewPortal, SqliteStore, Store, StoreHandle};

/// The directory and the temporary folder holding its store (keep it alive).
pub(crate) fn directory(n: u64) -> (tempfile::TempDir, Directory) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("b.db")).unwrap();
    let p = store.insert_portal(&NewPortal { name: None, domain: "https://b.bitrix24.ru/".into(), auth: None }).unwrap();
    let mut s = PortalSettings { active: true, ..Default::default() };
    s.incoming.default_responsible = Some(1);
    s.outgoing.default_responsible = Some(1);
    store.put_settings(p.id, &s).unwrap();
    for u in 100..600u64 {
        store.insert_mapping(p.id, &MappingInput { user_id: u, extension: u.to_string(), use_for_personal_manager: true, contact: None }).unwrap();
    }
    let d = Directory::default();
    d.reload_blocking(&StoreHandle::new(Arc::new(store))).unwrap();
    let rows: Vec<(u64, u64)> = (0..n).map(|i| (79_000_000_000 + i, 100 + i % 500)).collect();
    d.index().insert_all(p.id, &rows);
    (dir, d)
}
