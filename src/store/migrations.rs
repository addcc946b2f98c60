//! Schema migrations, compiled in and applied in order; `PRAGMA user_version` records the last
//! one applied. Never edit a released migration: add a new one.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: settings.
    "CREATE TABLE portals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,
        domain TEXT NOT NULL UNIQUE,
        auth TEXT,
        settings TEXT NOT NULL,
        created_at INTEGER NOT NULL DEFAULT (unixepoch()),
        updated_at INTEGER NOT NULL DEFAULT (unixepoch())
    );
    CREATE TABLE mappings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        extension TEXT NOT NULL,
        use_for_pm INTEGER NOT NULL,
        contact TEXT,
        UNIQUE (portal_id, extension),
        UNIQUE (portal_id, user_id)
    );
    CREATE TABLE lines (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        number TEXT NOT NULL,
        utm TEXT,
        PRIMARY KEY (portal_id, number)
    );
    CREATE TABLE pm_index (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        PRIMARY KEY (portal_id, number)
    ) WITHOUT ROWID;",
];
