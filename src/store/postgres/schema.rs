//! The PostgreSQL schema: the SQLite schema's end state (`store/sqlite/schema.rs`) in
//! PostgreSQL's types. Append only, like SQLite's: a step that shipped is never edited;
//! `registrar_schema` remembers how far a database got.
//!
//! Where the two differ, and why:
//! - ids are `BIGSERIAL`: never given again after a delete, as SQLite's AUTOINCREMENT;
//! - integers are `BIGINT` and flags stay 0/1 integers, so the same statements bind the
//!   same values on both;
//! - JSON stays `TEXT` (what the store writes and reads back verbatim); the identity
//!   lookups index `(column::jsonb ->> 'field')`, the spelling `dialect.rs` gives
//!   SQLite's `json_extract`;
//! - the audit trigger is a PL/pgSQL function.

pub(super) const STEPS: &[&str] = &[r#"
CREATE TABLE machines (
    mac           TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    source        TEXT NOT NULL,
    facts         TEXT,
    facts_fp      TEXT,
    name          TEXT,
    workflow      TEXT,
    suppressed    BIGINT NOT NULL DEFAULT 0,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    seen_count    BIGINT NOT NULL DEFAULT 1,
    rev           BIGINT NOT NULL DEFAULT 0,
    synced_rev    BIGINT NOT NULL DEFAULT 0,
    pending_since TEXT,
    last_error    TEXT,
    sighting      TEXT,
    expected      TEXT,
    settled       TEXT,
    wanted        TEXT
);
CREATE INDEX machines_pending ON machines(pending_since) WHERE rev > synced_rev;
CREATE INDEX machines_state ON machines(state);
CREATE INDEX machines_name ON machines(name);
CREATE INDEX machines_last_seen ON machines(last_seen);
CREATE INDEX machines_first_seen ON machines(first_seen);
CREATE INDEX machines_source ON machines(source);
CREATE INDEX machines_imported_ip ON machines((expected::jsonb ->> 'ip')) WHERE expected IS NOT NULL;
CREATE INDEX machines_serial ON machines((facts::jsonb ->> 'serial')) WHERE facts IS NOT NULL;
CREATE INDEX machines_uuid ON machines((facts::jsonb ->> 'uuid')) WHERE facts IS NOT NULL;
CREATE INDEX machines_asset_tag ON machines((facts::jsonb ->> 'asset_tag')) WHERE facts IS NOT NULL;

CREATE TABLE transitions (
    id         BIGSERIAL PRIMARY KEY,
    mac        TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TEXT NOT NULL,
    cause      TEXT NOT NULL,
    actor      TEXT NOT NULL
);
CREATE INDEX transitions_mac ON transitions(mac, id);

CREATE TABLE proposals (
    id         BIGSERIAL PRIMARY KEY,
    mac        TEXT NOT NULL UNIQUE,
    forge      TEXT NOT NULL,
    number     BIGINT,
    url        TEXT,
    branch     TEXT NOT NULL,
    path       TEXT NOT NULL,
    name       TEXT NOT NULL,
    title      TEXT NOT NULL,
    summary    TEXT NOT NULL,
    head       TEXT NOT NULL,
    rule       TEXT NOT NULL,
    workflow   TEXT,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    hands_off  BIGINT NOT NULL DEFAULT 0,
    kind       TEXT NOT NULL DEFAULT 'register',
    basis      TEXT,
    replaces   TEXT
);
CREATE INDEX proposals_state ON proposals(state);

CREATE TABLE once (key TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE report_tokens (hash TEXT PRIMARY KEY, mac TEXT NOT NULL, expires_at TEXT NOT NULL);

CREATE TABLE import_batches (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    mode       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    rows       TEXT NOT NULL
);

CREATE TABLE allocations (
    pool       TEXT NOT NULL,
    ip         TEXT NOT NULL,
    mac        TEXT NOT NULL,
    held       BIGINT NOT NULL DEFAULT 1,
    free_after TEXT,
    at         TEXT NOT NULL,
    PRIMARY KEY (pool, ip)
);
CREATE UNIQUE INDEX allocations_held ON allocations(pool, mac) WHERE held = 1;
CREATE INDEX allocations_mac ON allocations(mac, pool);
CREATE INDEX allocations_newest ON allocations(pool, at);

CREATE TABLE name_numbers (mac TEXT PRIMARY KEY, seq BIGINT NOT NULL UNIQUE);
CREATE TABLE cursors (name TEXT PRIMARY KEY, value BIGINT NOT NULL);

CREATE TABLE audit (
    id     BIGSERIAL PRIMARY KEY,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    mac    TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit(actor, id);
CREATE FUNCTION registrar_audit_people() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (at, actor, mac, action) VALUES (NEW.at, NEW.actor, NEW.mac, NEW.cause);
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_people AFTER INSERT ON transitions
    FOR EACH ROW WHEN (NEW.actor <> 'registrar') EXECUTE FUNCTION registrar_audit_people();

CREATE TABLE slot_queue (mac TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE INDEX slot_queue_since ON slot_queue(since, mac);

CREATE TABLE proposal_groups (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT NOT NULL,
    title      TEXT NOT NULL,
    branch     TEXT NOT NULL,
    number     BIGINT,
    url        TEXT,
    head       TEXT NOT NULL DEFAULT '',
    rev        BIGINT NOT NULL DEFAULT 1,
    synced_rev BIGINT NOT NULL DEFAULT 0,
    hands_off  BIGINT NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'open',
    auto_merge BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX proposal_groups_key ON proposal_groups(key, state);
CREATE TABLE group_members (
    mac       TEXT PRIMARY KEY,
    group_id  BIGINT NOT NULL REFERENCES proposal_groups(id),
    path      TEXT NOT NULL,
    name      TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    workflow  TEXT,
    address   TEXT,
    expected  TEXT,
    warnings  TEXT NOT NULL,
    exact     BIGINT NOT NULL DEFAULT 0,
    joined_at TEXT NOT NULL
);
CREATE INDEX group_members_group ON group_members(group_id);
"#];
