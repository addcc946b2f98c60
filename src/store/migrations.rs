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
    // 2: the Bitrix24 outbox (DESIGN.md §5): calls known to Bitrix24 and the intents to send.
    "CREATE TABLE crm_calls (
        portal_id INTEGER NOT NULL,
        call_key TEXT NOT NULL,
        external_call_id TEXT NOT NULL,
        b24_call_id TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        start TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (portal_id, call_key)
    );
    CREATE INDEX crm_calls_open ON crm_calls(finished) WHERE finished = 0;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        portal_id INTEGER NOT NULL,
        call_key TEXT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX outbox_due ON outbox(portal_id, next_at);
    CREATE TABLE outbox_dead (
        id INTEGER PRIMARY KEY,
        portal_id INTEGER NOT NULL,
        call_key TEXT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        failed_at INTEGER NOT NULL
    );",
    // 3: OAuth portals' installations (ONAPPINSTALL): tokens, member_id, application_token.
    "CREATE TABLE portal_tokens (
        portal_id INTEGER PRIMARY KEY REFERENCES portals(id) ON DELETE CASCADE,
        member_id TEXT NOT NULL,
        application_token TEXT NOT NULL,
        client_endpoint TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX portal_tokens_member ON portal_tokens(member_id);",
    // 4: browser agents' SIP credentials (WebRTC widget): only HA1 = MD5(extension:realm:password),
    // never the password. Tied to the mapping row: deleting the mapping (or its portal) revokes.
    "CREATE TABLE agent_credentials (
        mapping_id INTEGER PRIMARY KEY REFERENCES mappings(id) ON DELETE CASCADE,
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        extension TEXT NOT NULL,
        realm TEXT NOT NULL,
        ha1 TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );",
    // 5: checkpoints of open calls (calls survive restarts): the tracker's saved state per call,
    // by outbox key, and when the last checkpoint was written.
    "CREATE TABLE call_checkpoints (
        call_key TEXT PRIMARY KEY,
        portal_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        saved_at INTEGER NOT NULL
    );
    CREATE TABLE calls_alive (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        alive_ms INTEGER NOT NULL
    );",
    // 6: what delivery had to do differently for a call (a refused user replaced by the default
    // responsible), shown with the call's delivery state; and the intents' age index.
    "ALTER TABLE crm_calls ADD COLUMN notes TEXT;
    CREATE INDEX outbox_age ON outbox(created_at);",
];
