//! Grouped proposals: a row per open group and one per member. Both go when the group's
//! pull request is merged or closed and its members are recorded, so nothing at rest grows
//! with history: the members' proposals keep the record.

use super::tx::{OptionalExtension, Row, Tx, params};
use chrono::{DateTime, Utc};

use super::rows::{conv, parse_ts, ts};
use super::{Database, Result};
use crate::domain::{Group, GroupKey, GroupMember, Mac, group_branch};
use crate::store::Groups;

const GROUP_COLUMNS: &str = "id, key, title, branch, number, url, head, rev, synced_rev, hands_off, state, created_at,
    (SELECT COUNT(*) FROM group_members WHERE group_id = proposal_groups.id), auto_merge";
const MEMBER_COLUMNS: &str = "mac, path, name, manifest, workflow, address, expected, warnings, exact";

fn group_from_row(r: &Row) -> Result<Group> {
    Ok(Group {
        id: r.get(0)?,
        key: r.get(1)?,
        title: r.get(2)?,
        branch: r.get(3)?,
        number: r.get::<_, Option<i64>>(4)?.map(|n| n as u64),
        url: r.get(5)?,
        head: r.get(6)?,
        rev: r.get(7)?,
        synced_rev: r.get(8)?,
        hands_off: r.get(9)?,
        state: r.get(10)?,
        created_at: parse_ts(&r.get::<_, String>(11)?)?,
        members: r.get::<_, i64>(12)? as u64,
        auto_merge: r.get(13)?,
    })
}

fn member_from_row(r: &Row) -> Result<GroupMember> {
    Ok(GroupMember {
        mac: conv(Mac::parse(&r.get::<_, String>(0)?))?,
        path: r.get(1)?,
        name: r.get(2)?,
        manifest: r.get(3)?,
        workflow: r.get(4)?,
        address: r.get(5)?,
        expected: r.get(6)?,
        warnings: conv(serde_json::from_str(&r.get::<_, String>(7)?))?,
        exact: r.get(8)?,
    })
}

fn group(tx: &Tx, id: i64) -> Result<Option<Group>> {
    tx.query_row(
        &format!("SELECT {GROUP_COLUMNS} FROM proposal_groups WHERE id = ?1 AND state <> 'finished'"),
        [id],
        group_from_row,
    )
    .optional()
}

fn touch(tx: &Tx, id: i64) -> Result<()> {
    tx.execute("UPDATE proposal_groups SET rev = rev + 1 WHERE id = ?1", [id])?;
    Ok(())
}

/// Takes `mac` out of its group, if it is in one (the group is rewritten without it).
pub(super) fn leave(tx: &Tx, mac: Mac) -> Result<Option<i64>> {
    let id: Option<i64> = tx
        .query_row(
            "DELETE FROM group_members WHERE mac = ?1 RETURNING group_id",
            [mac.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = id {
        touch(tx, id)?;
    }
    Ok(id)
}

/// Open pull requests on the forge: single proposals, and groups (a group's members are one).
pub(super) fn open_pull_requests(tx: &Tx) -> Result<u64> {
    let n: i64 = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM proposals WHERE state IN ('open', 'approving', 'rejecting')
                   AND mac NOT IN (SELECT mac FROM group_members))
              + (SELECT COUNT(*) FROM proposal_groups WHERE state = 'open')",
        (),
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

impl<D: Database> Groups for D {
    fn join_group(&self, key: &GroupKey, max_members: u64, member: &GroupMember, now: DateTime<Utc>) -> Result<Group> {
        self.write(|tx| {
            let mac = member.mac.to_string();
            let current: Option<(i64, String, String, Option<String>, bool)> = tx
                .query_row(
                    "SELECT m.group_id, m.manifest, m.path, m.workflow, m.exact FROM group_members m
                       JOIN proposal_groups g ON g.id = m.group_id WHERE m.mac = ?1 AND g.state = 'open' AND g.key = ?2",
                    params![mac, key.key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let id = match current {
                Some((id, manifest, path, workflow, exact)) => {
                    if manifest != member.manifest
                        || path != member.path
                        || workflow != member.workflow
                        || exact != member.exact
                    {
                        touch(tx, id)?;
                    }
                    id
                }
                None => {
                    leave(tx, member.mac)?;
                    let open: Option<i64> = tx
                        .query_row(
                            "SELECT g.id FROM proposal_groups g WHERE g.key = ?1 AND g.state = 'open' AND g.hands_off = 0
                               AND (SELECT COUNT(*) FROM group_members WHERE group_id = g.id) < ?2
                             ORDER BY g.id LIMIT 1",
                            params![key.key, max_members as i64],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match open {
                        Some(id) => {
                            touch(tx, id)?;
                            id
                        }
                        None => {
                            let id: i64 = tx.query_row(
                                "INSERT INTO proposal_groups (key, title, branch, created_at) VALUES (?1, ?2, '', ?3) RETURNING id",
                                params![key.key, key.title, ts(now)],
                                |r| r.get(0),
                            )?;
                            tx.execute(
                                "UPDATE proposal_groups SET branch = ?2 WHERE id = ?1",
                                params![id, group_branch(&key.key, id)],
                            )?;
                            id
                        }
                    }
                }
            };
            tx.execute(
                &format!(
                    "INSERT INTO group_members (group_id, {MEMBER_COLUMNS}, joined_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (mac) DO UPDATE SET path = excluded.path, name = excluded.name, manifest = excluded.manifest,
                       workflow = excluded.workflow, address = excluded.address, expected = excluded.expected,
                       warnings = excluded.warnings, exact = excluded.exact"
                ),
                params![
                    id,
                    mac,
                    member.path,
                    member.name,
                    member.manifest,
                    member.workflow,
                    member.address,
                    member.expected,
                    serde_json::to_string(&member.warnings).expect("strings serialise"),
                    member.exact,
                    ts(now)
                ],
            )?;
            // Its proposal is this group's pull request (none yet: no number), never one it
            // was in before.
            tx.execute(
                "UPDATE proposals SET number = g.number, url = g.url, head = g.head, branch = g.branch
                   FROM (SELECT number, url, head, branch FROM proposal_groups WHERE id = ?2) AS g WHERE mac = ?1",
                params![mac, id],
            )?;
            Ok(group(tx, id)?.expect("just written"))
        })
    }

    fn leave_group(&self, mac: Mac) -> Result<Option<i64>> {
        self.write(|tx| leave(tx, mac))
    }

    fn group(&self, id: i64) -> Result<Option<Group>> {
        self.read(|tx| group(tx, id))
    }

    fn groups(&self) -> Result<Vec<Group>> {
        self.read(|tx| {
            tx.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM proposal_groups WHERE state <> 'finished' ORDER BY id"
            ))?
            .query_map((), group_from_row)?
            .collect::<Result<_>>()
        })
    }

    fn group_members(&self, id: i64) -> Result<Vec<GroupMember>> {
        self.read(|tx| {
            tx.prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM group_members WHERE group_id = ?1 ORDER BY name, mac"
            ))?
            .query_map([id], member_from_row)?
            .collect::<Result<_>>()
        })
    }

    fn mark_group_synced(&self, id: i64, rev: i64, number: Option<u64>, url: Option<&str>, head: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposal_groups SET synced_rev = CASE WHEN synced_rev > ?2 THEN synced_rev ELSE ?2 END, number = ?3, url = ?4, head = ?5 WHERE id = ?1",
                params![id, rev, number.map(|n| n as i64), url, head],
            )?;
            // Each member's proposal is this pull request, at this head.
            tx.execute(
                "UPDATE proposals SET number = ?2, url = ?3, head = ?4
                   WHERE mac IN (SELECT mac FROM group_members WHERE group_id = ?1) AND state IN ('open', 'approving')",
                params![id, number.map(|n| n as i64), url, head],
            )?;
            Ok(())
        })
    }

    fn set_group_state(&self, id: i64, state: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposal_groups SET state = ?2 WHERE id = ?1",
                params![id, state],
            )?;
            Ok(())
        })
    }

    fn set_group_auto_merge(&self, id: i64, on: bool) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposal_groups SET auto_merge = ?2 WHERE id = ?1",
                params![id, on],
            )?;
            Ok(())
        })
    }

    fn set_group_hands_off(&self, id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE proposal_groups SET hands_off = 1, synced_rev = rev WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
    }

    fn touch_group(&self, id: i64) -> Result<()> {
        self.write(|tx| touch(tx, id))
    }

    fn finish_group(&self, id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM group_members WHERE group_id = ?1", [id])?;
            // The newest finished group stays behind, marked, so its id — and so its branch
            // name — is never handed out again: SQLite numbers a new row after the largest
            // id present, and a reused branch name would carry an old pull request's history
            // (one closed there could be reopened onto a new group's branch). At most one
            // such row is kept.
            tx.execute("UPDATE proposal_groups SET state = 'finished' WHERE id = ?1", [id])?;
            tx.execute(
                "DELETE FROM proposal_groups WHERE state = 'finished' AND id < (SELECT MAX(id) FROM proposal_groups)",
                (),
            )?;
            Ok(())
        })
    }
}
