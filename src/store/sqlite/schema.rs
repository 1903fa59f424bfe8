//! The schema, as migrations: each runs once, in order, in its own transaction;
//! `PRAGMA user_version` remembers how far a file got (rusqlite_migration's bookkeeping,
//! which is the one the store kept by hand before, so older files carry on).

use rusqlite_migration::{M, Migrations};

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::from_iter(STEPS.iter().map(|sql| M::up(sql)))
}

/// Append only: a step that shipped is never edited.
pub(crate) const STEPS: &[&str] = &[
    r#"
CREATE TABLE machines (
    mac         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    source      TEXT NOT NULL,
    facts       TEXT,
    facts_fp    TEXT,
    name        TEXT,
    workflow    TEXT,
    suppressed  INTEGER NOT NULL DEFAULT 0,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    seen_count  INTEGER NOT NULL DEFAULT 1,
    rev         INTEGER NOT NULL DEFAULT 0,
    synced_rev  INTEGER NOT NULL DEFAULT 0,
    pending_since TEXT,
    last_error  TEXT
);
CREATE INDEX machines_pending ON machines(pending_since) WHERE rev > synced_rev;
CREATE INDEX machines_state ON machines(state);
CREATE INDEX machines_name ON machines(name);
CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY,
    mac        TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TEXT NOT NULL,
    cause      TEXT NOT NULL,
    actor      TEXT NOT NULL
);
CREATE INDEX transitions_mac ON transitions(mac, id);
CREATE TABLE proposals (
    id         INTEGER PRIMARY KEY,
    mac        TEXT NOT NULL UNIQUE,
    forge      TEXT NOT NULL,
    number     INTEGER,
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
    updated_at TEXT NOT NULL
);
CREATE INDEX proposals_state ON proposals(state);
"#,
    r#"
ALTER TABLE machines ADD COLUMN sighting TEXT;
"#,
    r#"
CREATE TABLE once (key TEXT PRIMARY KEY, at TEXT NOT NULL);
"#,
    r#"
ALTER TABLE proposals ADD COLUMN hands_off INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE report_tokens (hash TEXT PRIMARY KEY, mac TEXT NOT NULL, expires_at TEXT NOT NULL);
"#,
    r#"
ALTER TABLE machines ADD COLUMN expected TEXT;
CREATE TABLE import_batches (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    mode       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    rows       TEXT NOT NULL
);
CREATE INDEX machines_last_seen ON machines(last_seen);
CREATE INDEX machines_first_seen ON machines(first_seen);
CREATE INDEX machines_source ON machines(source);
"#,
    r#"
CREATE TABLE allocations (
    pool       TEXT NOT NULL,
    ip         TEXT NOT NULL,
    mac        TEXT NOT NULL,
    held       INTEGER NOT NULL DEFAULT 1,
    free_after TEXT,
    at         TEXT NOT NULL,
    PRIMARY KEY (pool, ip)
);
CREATE UNIQUE INDEX allocations_held ON allocations(pool, mac) WHERE held = 1;
CREATE INDEX allocations_mac ON allocations(mac, pool);
CREATE INDEX allocations_newest ON allocations(pool, at);
"#,
    r#"
CREATE TABLE name_numbers (
    mac TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE
);
"#,
    // An address an import row names is that machine's: allocations for others look it up.
    r#"
CREATE INDEX machines_imported_ip ON machines(json_extract(expected, '$.ip')) WHERE expected IS NOT NULL;
"#,
    // Two machines claiming one serial or system UUID are shown to the reviewer.
    r#"
CREATE INDEX machines_serial ON machines(json_extract(facts, '$.serial')) WHERE facts IS NOT NULL;
CREATE INDEX machines_uuid ON machines(json_extract(facts, '$.uuid')) WHERE facts IS NOT NULL;
"#,
    // How far a reader of every machine's timeline (notifications) has got. Its ids must
    // never be given again once rows are deleted (forget, eviction): AUTOINCREMENT.
    r#"
CREATE TABLE cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE transitions_numbered (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    mac        TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         TEXT NOT NULL,
    cause      TEXT NOT NULL,
    actor      TEXT NOT NULL
);
INSERT INTO transitions_numbered (id, mac, from_state, to_state, at, cause, actor)
    SELECT id, mac, from_state, to_state, at, cause, actor FROM transitions;
DROP TABLE transitions;
ALTER TABLE transitions_numbered RENAME TO transitions;
CREATE INDEX transitions_mac ON transitions(mac, id);
"#,
    // A machine's life after its first merge: what git holds for it was rendered from
    // (`settled`), a change a person asked for (`wanted`), and what each proposal does.
    r#"
ALTER TABLE machines ADD COLUMN settled TEXT;
ALTER TABLE machines ADD COLUMN wanted TEXT;
ALTER TABLE proposals ADD COLUMN kind TEXT NOT NULL DEFAULT 'register';
ALTER TABLE proposals ADD COLUMN basis TEXT;
ALTER TABLE proposals ADD COLUMN replaces TEXT;
"#,
    // Who did what: every step a person took (any actor but Registrar itself), kept when
    // the machine is forgotten or evicted, so the trail outlives the timelines.
    r#"
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    mac    TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit(actor, id);
INSERT INTO audit (at, actor, mac, action)
    SELECT at, actor, mac, cause FROM transitions WHERE actor != 'registrar' ORDER BY id;
CREATE TRIGGER audit_people AFTER INSERT ON transitions WHEN NEW.actor != 'registrar'
BEGIN
    INSERT INTO audit (at, actor, mac, action) VALUES (NEW.at, NEW.actor, NEW.mac, NEW.cause);
END;
"#,
    // Machines waiting for a review slot (`discovery.max_open_proposals`), oldest first.
    r#"
CREATE TABLE slot_queue (mac TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE INDEX slot_queue_since ON slot_queue(since, mac);
"#,
    // The chassis asset tag is an identity like the serial and the UUID: looked up the same way.
    r#"
CREATE INDEX machines_asset_tag ON machines(json_extract(facts, '$.asset_tag')) WHERE facts IS NOT NULL;
"#,
    // Grouped proposals (`discovery.group_by`): one pull request for several machines.
    r#"
CREATE TABLE proposal_groups (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    title      TEXT NOT NULL,
    branch     TEXT NOT NULL,
    number     INTEGER,
    url        TEXT,
    head       TEXT NOT NULL DEFAULT '',
    rev        INTEGER NOT NULL DEFAULT 1,
    synced_rev INTEGER NOT NULL DEFAULT 0,
    hands_off  INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'open',
    auto_merge INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX proposal_groups_key ON proposal_groups(key, state);
CREATE TABLE group_members (
    mac       TEXT PRIMARY KEY,
    group_id  INTEGER NOT NULL REFERENCES proposal_groups(id),
    path      TEXT NOT NULL,
    name      TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    workflow  TEXT,
    address   TEXT,
    expected  TEXT,
    warnings  TEXT NOT NULL,
    exact     INTEGER NOT NULL DEFAULT 0,
    joined_at TEXT NOT NULL
);
CREATE INDEX group_members_group ON group_members(group_id);
"#,
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_migrations_are_valid_and_apply_to_an_empty_database() {
        super::migrations().validate().unwrap();
    }
}
