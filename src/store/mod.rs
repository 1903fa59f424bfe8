//! Registrar's own state: machines, their transitions, and proposals. A small trait so
//! another database can stand in for the embedded SQLite one.
//!
//! Work to do is state, not a message: a machine whose `rev` is ahead of its `synced_rev`
//! still has to reach git and the forge. A crash loses nothing because the worker finds it
//! again, and a repeat costs nothing because git and the forge are updated idempotently.

mod postgres;
pub(crate) mod sql;
mod sqlite;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{
    Expected, Facts, Group, GroupKey, GroupMember, ImportMode, Mac, Machine, Proposal, ProposalState, Sighting, Source,
    State, Transition,
};
pub use postgres::PostgresStore;
pub use sql::Bounds;
pub use sql::tx::DbError;
pub use sqlite::SqliteStore;

/// The store `config` names, for the server: PostgreSQL when `store.postgres_url` is set
/// (connected in the running runtime), else the SQLite file in `state_dir`.
pub fn open(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let bounds = Bounds {
        max_undiscovered: config.discovery.max_undiscovered,
        max_new_per_minute: config.discovery.max_new_per_minute,
    };
    if let Some(url) = config.postgres_url()? {
        use secrecy::ExposeSecret;
        let runtime = tokio::runtime::Handle::current();
        let store = tokio::task::block_in_place(|| runtime.block_on(PostgresStore::connect(url.expose_secret())))?;
        store.set_bounds(bounds);
        return Ok(std::sync::Arc::new(store));
    }
    let store = SqliteStore::open(&config.state_dir.join("registrar.db"))?;
    store.set_bounds(bounds);
    Ok(std::sync::Arc::new(store))
}

/// The store `config` names, for a command that only reads it beside a running server;
/// None when there is no SQLite file yet.
pub fn open_for_reading(config: &crate::config::Config) -> anyhow::Result<Option<Box<dyn Store>>> {
    if let Some(url) = config.postgres_url()? {
        use secrecy::ExposeSecret;
        return Ok(Some(Box::new(PostgresStore::open_blocking(url.expose_secret())?)));
    }
    let db = config.state_dir.join("registrar.db");
    if !db.exists() {
        return Ok(None);
    }
    Ok(Some(Box::new(SqliteStore::open_read_only(&db)?)))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no machine with MAC {0}")]
    NotFound(Mac),
    #[error("machine {mac} cannot go from {from} to {to}")]
    Transition { mac: Mac, from: State, to: State },
    #[error("database: {0}")]
    Db(sql::tx::DbError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A flood of new machines: this one was not recorded (see `discovery.max_new_per_minute`).
    #[error("not recorded: {0}")]
    Flood(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What recording a report or detection did.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub machine: Machine,
    /// A new machine, as opposed to one seen before.
    pub new: bool,
    /// Whether this changed what must reach git (false for repeats and suppressed MACs).
    pub queued: bool,
    /// Machines never discovered that were dropped, oldest first, to stay within
    /// `discovery.max_undiscovered`.
    #[serde(skip)]
    pub evicted: u64,
}

/// A transition in every machine's timeline: its id, the machine and its name.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub id: i64,
    pub mac: Mac,
    pub name: Option<String>,
    pub transition: Transition,
}

/// One step a person took (the audit trail): kept when the machine is forgotten.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `api:<name>`, `console:<name>`, `github:<login>`…
    pub actor: String,
    pub mac: String,
    pub action: String,
}

#[derive(Debug, Clone, Default)]
pub struct MachineQuery {
    pub state: Option<State>,
    pub source: Option<Source>,
    /// Only machines imported as expected (true), or only unexpected ones (false).
    pub expected: Option<bool>,
    /// Free text over MAC, name, vendor, product and serial.
    pub text: Option<String>,
    pub sort: Sort,
    pub descending: bool,
    pub limit: u32,
    pub offset: u32,
}

/// Columns a machine list can be ordered by; each has an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    LastSeen,
    FirstSeen,
    Mac,
    Name,
    State,
}

impl Sort {
    pub const ALL: [(Sort, &'static str); 5] = [
        (Sort::LastSeen, "last_seen"),
        (Sort::FirstSeen, "first_seen"),
        (Sort::Mac, "mac"),
        (Sort::Name, "name"),
        (Sort::State, "state"),
    ];

    pub fn parse(s: &str) -> Option<Sort> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("last_seen")
    }
}

/// An import batch and what became of each of its rows.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub id: i64,
    pub name: String,
    pub mode: ImportMode,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub rows: Vec<BatchRow>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BatchRow {
    pub line: u32,
    pub mac: Option<Mac>,
    /// Why the row was not imported; `None` for imported rows.
    pub error: Option<String>,
    /// The imported machine's state now (filled in when the batch is read).
    #[serde(default)]
    pub state: Option<State>,
}

/// Machines waiting for a review slot: how many, and the ones that waited longest.
#[derive(Debug, Clone, Default)]
pub struct SlotQueue {
    pub count: u64,
    /// (MAC, waiting since), oldest first.
    pub oldest: Vec<(Mac, DateTime<Utc>)>,
}

/// One unit of work for the proposer: the revision it must bring to git.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub mac: Mac,
    pub rev: u64,
}

/// Grouped proposals (`sqlite/groups.rs`).
pub trait Groups {
    /// Puts `member` in the open group of `key` it is in, else the oldest open one with
    /// fewer than `max_members`, else a new one; the group is marked for rewriting when
    /// what it holds of the member changed.
    fn join_group(&self, key: &GroupKey, max_members: u64, member: &GroupMember, now: DateTime<Utc>) -> Result<Group>;
    /// Takes `mac` out of its group, if any (marked for rewriting); which group.
    fn leave_group(&self, mac: Mac) -> Result<Option<i64>>;
    fn group(&self, id: i64) -> Result<Option<Group>>;
    /// Every group not finished yet.
    fn groups(&self) -> Result<Vec<Group>>;
    fn group_members(&self, id: i64) -> Result<Vec<GroupMember>>;
    /// Group `id`'s revision `rev` is on its branch at `head` and shown as pull request
    /// `number`; its members' proposals say so too.
    fn mark_group_synced(&self, id: i64, rev: i64, number: Option<u64>, url: Option<&str>, head: &str) -> Result<()>;
    /// `merged` or `closed`: the group takes no members while its end is recorded.
    fn set_group_state(&self, id: i64, state: &str) -> Result<()>;
    /// Whether the group's pull request was handed to the forge's merge-when-ready.
    fn set_group_auto_merge(&self, id: i64, on: bool) -> Result<()>;
    /// A person pushed to the group's branch: Registrar no longer rewrites it.
    fn set_group_hands_off(&self, id: i64) -> Result<()>;
    /// Marks group `id` for rewriting (the base moved under it).
    fn touch_group(&self, id: i64) -> Result<()>;
    /// The group's end is recorded on every member: its rows go.
    fn finish_group(&self, id: i64) -> Result<()>;
}

pub trait Store: Groups + Send + Sync + 'static {
    /// Stores facts for `mac`, creating the machine if needed; queues a proposal when the
    /// facts are new or changed and the machine is still under review.
    fn record_facts(&self, mac: Mac, source: Source, facts: &Facts, now: DateTime<Utc>) -> Result<Recorded>;
    /// Notes that `mac` was seen without facts (DHCP, logs, import), keeping what the
    /// sighting revealed; a changed sighting re-renders an open proposal.
    fn record_detection(
        &self,
        mac: Mac,
        source: Source,
        sighting: Option<&Sighting>,
        now: DateTime<Utc>,
    ) -> Result<Recorded>;

    fn machine(&self, mac: Mac) -> Result<Option<Machine>>;
    fn machines(&self, query: &MachineQuery) -> Result<Vec<Machine>>;
    fn count_by_state(&self) -> Result<Vec<(State, u64)>>;
    fn transitions(&self, mac: Mac) -> Result<Vec<Transition>>;
    /// Every machine's transitions after the one with id `after`, oldest first.
    fn transitions_after(&self, after: i64, limit: u32) -> Result<Vec<TimelineEntry>>;
    /// People's steps, newest first (one person's, if `actor` is given), older than the
    /// entry `before`.
    fn audit(&self, actor: Option<&str>, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>>;
    /// The newest transition's id; 0 when there is none.
    fn last_transition_id(&self) -> Result<i64>;
    /// A named position in the timeline (what a reader has handled), if set.
    fn cursor(&self, name: &str) -> Result<Option<i64>>;
    fn set_cursor(&self, name: &str, value: i64) -> Result<()>;

    /// Machines with unsynced revisions, oldest first.
    fn pending(&self, limit: u32) -> Result<Vec<Pending>>;
    /// How many machines wait, and since when the oldest does.
    fn queue_summary(&self) -> Result<(u64, Option<DateTime<Utc>>)>;
    /// Marks `rev` as synced; later revisions stay pending.
    fn mark_synced(
        &self,
        work: Pending,
        proposal: Option<&Proposal>,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    fn set_error(&self, mac: Mac, error: Option<&str>) -> Result<()>;
    /// Queues a machine's proposal to be built again (e.g. on a new base); returns that work.
    fn requeue(&self, mac: Mac, now: DateTime<Utc>) -> Result<Pending>;

    /// Moves a machine to `to`, recording cause and actor; refuses what the state machine forbids.
    fn transition(&self, mac: Mac, to: State, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// The machine's proposal is merged: git now holds what it was rendered from. A
    /// registration approves the machine, an update changes no state, a decommission
    /// moves it to `decommissioning`.
    fn record_merge(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// A change of a machine git holds was closed unmerged: the machine keeps its state.
    fn record_change_closed(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// A person asks for a change of a machine git holds (a decommission), queued for the sync.
    fn want(&self, mac: Mac, kind: crate::domain::ProposalKind, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// What git holds for the machine was rendered from `basis`.
    fn settle(&self, mac: Mac, basis: &crate::domain::Basis) -> Result<()>;
    /// Rejects and suppresses in one step.
    fn reject(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// Lifts a suppression; a machine with facts is proposed again.
    fn unsuppress(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// A reviewer's workflow choice; re-renders the proposal.
    fn set_workflow(&self, mac: Mac, workflow: &str, actor: &str, now: DateTime<Utc>) -> Result<Machine>;
    /// Which machine's Hardware already carries `name`, if any.
    fn name_owner(&self, name: &str) -> Result<Option<Mac>>;

    /// True the first time `key` is seen, false ever after: for webhook deliveries and
    /// comments that must happen once.
    fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool>;

    fn was_remembered(&self, key: &str) -> Result<bool>;
    /// A per-machine report token (by its SHA-256), valid until `expires_at`.
    fn add_report_token(&self, mac: Mac, hash: &str, expires_at: DateTime<Utc>) -> Result<()>;
    /// The MAC an unexpired per-machine token was issued for.
    fn report_token_mac(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<Mac>>;
    /// Extends every report token of `mac` to at least `until`: a machine's wait for its
    /// review starts at its report, and its token must last the whole wait.
    fn extend_report_tokens(&self, mac: Mac, until: DateTime<Utc>) -> Result<()>;
    /// The latest expiry among `mac`'s report tokens, if it has any.
    fn report_token_expiry(&self, mac: Mac) -> Result<Option<DateTime<Utc>>>;
    /// Someone else pushed to the proposal's branch: Registrar stops updating it.
    fn set_hands_off(&self, mac: Mac, now: DateTime<Utc>) -> Result<()>;

    fn proposal(&self, mac: Mac) -> Result<Option<Proposal>>;
    fn proposals(&self, state: Option<ProposalState>) -> Result<Vec<Proposal>>;
    fn set_proposal_state(&self, mac: Mac, state: ProposalState, now: DateTime<Utc>) -> Result<()>;

    /// How many machines match `query` (ignoring its paging).
    fn count_machines(&self, query: &MachineQuery) -> Result<u64>;
    /// Stores an import batch in one transaction: every row in `imported` becomes an
    /// expected machine (proposed right away in `propose` mode), or none does. `skipped`
    /// rows are kept with the batch, with their reasons, for the record.
    fn import(
        &self,
        name: &str,
        mode: ImportMode,
        actor: &str,
        imported: &[(Mac, Expected)],
        skipped: &[BatchRow],
        now: DateTime<Utc>,
    ) -> Result<Batch>;
    fn batches(&self, limit: u32) -> Result<Vec<Batch>>;
    fn batch(&self, id: i64) -> Result<Option<Batch>>;
    /// Removes a machine and its records, so that it is noticed afresh next time.
    fn forget(&self, mac: Mac, actor: &str, now: DateTime<Utc>) -> Result<()>;
    /// Adds a line to a machine's timeline without changing its state.
    fn note(&self, mac: Mac, cause: &str, actor: &str, now: DateTime<Utc>) -> Result<()>;
    /// `mac`'s address in `pool`, kept across restarts and re-renders (see
    /// `sqlite/allocations.rs`); None when the pool is exhausted or `wanted` is not free.
    fn allocate(
        &self,
        mac: Mac,
        pool: &crate::ipam::Pool,
        wanted: Option<std::net::Ipv4Addr>,
        taken: &dyn Fn(std::net::Ipv4Addr) -> bool,
        now: DateTime<Utc>,
    ) -> Result<Option<std::net::Ipv4Addr>>;
    /// Returns `mac`'s addresses (in `pool` only, if given) to their pools, unused until
    /// `free_after`.
    fn release_addresses(&self, mac: Mac, pool: Option<&str>, free_after: DateTime<Utc>) -> Result<usize>;
    /// How many addresses of `pool` are held or quarantined at `now`.
    fn addresses_used(&self, pool: &str, now: DateTime<Utc>) -> Result<u64>;
    /// The addresses `mac` holds: (pool, ip).
    fn addresses(&self, mac: Mac) -> Result<Vec<(String, String)>>;
    /// The machine `ip` in `pool` was given to (held, or resting in quarantine).
    fn address_holder(&self, pool: &str, ip: std::net::Ipv4Addr) -> Result<Option<Mac>>;
    /// How many pull requests are open on the forge (proposals open, being merged or being
    /// closed; a group counts once).
    fn open_proposals(&self) -> Result<u64>;
    /// `work` waits for a review slot (`discovery.max_open_proposals`): synced for now,
    /// `why` shown on the machine, in the slot queue until `release_slots` lets it through.
    fn wait_for_slot(&self, work: Pending, why: &str, now: DateTime<Utc>) -> Result<()>;
    /// Queues again the `n` machines that waited longest for a slot (they keep their
    /// place until let through); which ones.
    fn release_slots(&self, n: u64, now: DateTime<Utc>) -> Result<Vec<Mac>>;
    /// How many machines wait for a slot ahead of `mac` (all of them, if it does not wait).
    fn slot_position(&self, mac: Mac) -> Result<u64>;
    /// `mac` got its slot: it no longer waits.
    fn leave_slot_queue(&self, mac: Mac) -> Result<()>;
    /// How many machines wait for a slot, and the `limit` that waited longest (since when).
    fn slot_queue(&self, limit: u32) -> Result<SlotQueue>;
    /// Other machines that reported the serial, system UUID or asset tag of `facts` (at
    /// most a few of each): (MAC, which).
    fn sharing_identity(&self, mac: Mac, facts: &Facts) -> Result<Vec<(Mac, String)>>;
    /// The number `mac` was given for a counting name pattern, if any.
    fn name_number(&self, mac: Mac) -> Result<Option<u64>>;
    /// The number after the highest given so far.
    fn next_name_number(&self) -> Result<u64>;
    /// Gives `mac` the number `seq` if neither has one; the number `mac` holds afterwards,
    /// None when `seq` is another machine's (see `sqlite/names.rs`).
    fn claim_name_number(&self, mac: Mac, seq: u64) -> Result<Option<u64>>;
    /// A counter that moves whenever anything changed: the console's live updates.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;
}
