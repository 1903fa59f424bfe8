//! Grouped proposals: one pull request that registers several machines (an import batch, a
//! rack, the machines behind one switch, or a key a rule chooses), one file per machine as
//! for a machine proposed alone. Reviewers take or leave single machines; Registrar rewrites
//! the branch without the ones they leave out, and the rest merge together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::mac::Mac;
use super::proposal::branch_prefix;

/// What machines are grouped by (`discovery.group_by`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Every machine is proposed alone.
    #[default]
    None,
    /// The import batch that expected it.
    Import,
    /// The rack its import row names.
    Rack,
    /// The switch its DHCP relay names (option 82's remote id).
    Switch,
    /// The value `group` its rule sets in `values`.
    Rule,
}

/// Which group a machine belongs to: a stable key (part of the branch name) and words for
/// reviewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub key: String,
    pub title: String,
}

impl GroupKey {
    /// `kind` and a value reported or imported (so bounded, but any text): the key keeps
    /// only what a branch name may hold.
    pub fn new(kind: &str, value: &str, title: String) -> Option<GroupKey> {
        let slug = slug(value);
        (!slug.is_empty()).then(|| GroupKey {
            key: format!("{kind}-{slug}"),
            title,
        })
    }
}

/// Lower-case letters, digits and single dashes, at most 40 of them.
fn slug(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
        if out.len() >= 40 {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

/// One grouped pull request as Registrar records it.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: i64,
    pub key: String,
    pub title: String,
    pub branch: String,
    pub number: Option<u64>,
    pub url: Option<String>,
    /// The commit Registrar last pushed to the branch.
    pub head: String,
    /// Bumped whenever its members change; the branch is rewritten while `rev` is ahead of
    /// `synced_rev`.
    pub rev: i64,
    pub synced_rev: i64,
    /// A person pushed to the branch: Registrar no longer rewrites it.
    pub hands_off: bool,
    /// `open` while it takes members; `merged` or `closed` while its end is carried out.
    pub state: String,
    pub created_at: DateTime<Utc>,
    /// How many machines it holds now.
    pub members: u64,
    /// Handed to the forge's merge-when-ready: every member matched its import row.
    pub auto_merge: bool,
}

/// One machine in a group: what its file says, and what reviewers are shown of it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub mac: Mac,
    pub path: String,
    pub name: String,
    pub manifest: String,
    pub workflow: Option<String>,
    pub address: Option<String>,
    /// "row 12 of rack-a.csv" when an import row expected it.
    pub expected: Option<String>,
    /// What a reviewer must not miss (name or identity clashes), as rendered.
    pub warnings: Vec<String>,
    /// It reported exactly what its import row says, with no warning: approval by policy
    /// (`discovery.auto_approve: expected`) may merge it without a person.
    pub exact: bool,
}

/// The branch of group `id`: `registrar/group-<key>-<id>`.
pub fn group_branch(key: &str, id: i64) -> String {
    format!("{}group-{key}-{id}", branch_prefix())
}

/// The group a branch carries, by its id: `registrar/group-<key>-<id>`.
pub fn group_of_branch(branch: &str) -> Option<i64> {
    let rest = branch.strip_prefix(branch_prefix())?.strip_prefix("group-")?;
    let (_, id) = rest.rsplit_once('-')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

/// A reviewer's command in a comment: `/registrar reject <mac> [reason]` or
/// `/registrar workflow <mac> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Reject { mac: Mac, reason: String },
    Workflow { mac: Mac, workflow: String },
}

/// At most this many commands are read from one comment.
pub const MAX_COMMANDS: usize = 100;

/// The commands in a comment, one per line starting with `/registrar`, and a sentence for
/// each such line that is not one.
pub fn parse_commands(body: &str) -> (Vec<Command>, Vec<String>) {
    let (mut commands, mut problems) = (Vec::new(), Vec::new());
    for line in body.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("/registrar") else {
            continue;
        };
        if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
            continue;
        }
        if commands.len() + problems.len() >= MAX_COMMANDS {
            problems.push(format!("more than {MAX_COMMANDS} commands: the rest were not read"));
            break;
        }
        let mut words = rest.split_whitespace();
        let (verb, mac) = (words.next(), words.next().map(Mac::parse));
        match (verb, mac) {
            (Some("reject"), Some(Ok(mac))) => {
                let reason: String = words.collect::<Vec<_>>().join(" ").chars().take(200).collect();
                commands.push(Command::Reject { mac, reason });
            }
            (Some("workflow"), Some(Ok(mac))) => match (words.next(), words.next()) {
                (Some(workflow), None) if workflow.len() <= 63 => commands.push(Command::Workflow {
                    mac,
                    workflow: workflow.to_string(),
                }),
                _ => problems.push("`/registrar workflow` takes a MAC and one workflow name".to_string()),
            },
            (Some("reject" | "workflow"), _) => problems.push("the second word must be a MAC address".to_string()),
            _ => problems.push(
                "unknown command: `/registrar reject <mac> [reason]` and `/registrar workflow <mac> <name>` are known"
                    .to_string(),
            ),
        }
    }
    (commands, problems)
}

/// The members a pull request's description shows unchecked (`- [ ] … \`<mac>\``): the
/// reviewer left them out. Only the task-list lines Registrar writes are read.
pub fn unchecked_members(body: &str) -> Vec<Mac> {
    body.lines()
        // `[~]` is GitLab's "inapplicable" task: left out as surely as an unchecked one.
        .filter_map(|line| {
            let line = line.trim_start();
            line.strip_prefix("- [ ] `").or_else(|| line.strip_prefix("- [~] `"))
        })
        .filter_map(|rest| rest.split_once('`'))
        .filter_map(|(mac, _)| Mac::parse(mac).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_round_trip_and_reject_others() {
        let b = group_branch("import-12", 7);
        assert_eq!(b, "registrar/group-import-12-7");
        assert_eq!(group_of_branch(&b), Some(7));
        assert_eq!(group_of_branch("registrar/aa-bb-cc-dd-ee-ff"), None);
        assert_eq!(group_of_branch("registrar/group-x-"), None);
        assert_eq!(group_of_branch("other/group-x-1"), None);
    }

    #[test]
    fn keys_hold_only_what_a_branch_may() {
        let k = GroupKey::new("rack", "R 12/../\"x\"", "rack".into()).unwrap();
        assert_eq!(k.key, "rack-r-12-x");
        assert!(GroupKey::new("rack", "///", "rack".into()).is_none());
    }

    #[test]
    fn commands_are_read_line_by_line() {
        let body = "Thanks!\n/registrar reject aa:bb:cc:dd:ee:01 wrong rack\n /registrar workflow AA-BB-CC-DD-EE-02 ubuntu\n/registrarx nope\n/registrar reject nonsense\n/registrar dance";
        let (commands, problems) = parse_commands(body);
        assert_eq!(
            commands,
            vec![
                Command::Reject {
                    mac: Mac::parse("aa:bb:cc:dd:ee:01").unwrap(),
                    reason: "wrong rack".into()
                },
                Command::Workflow {
                    mac: Mac::parse("aa:bb:cc:dd:ee:02").unwrap(),
                    workflow: "ubuntu".into()
                },
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn unchecked_lines_name_members() {
        let body =
            "- [x] `aa:bb:cc:dd:ee:01` node-1\n- [ ] `aa:bb:cc:dd:ee:02` node-2\n* [ ] `aa:bb:cc:dd:ee:03`\n- [ ] `zz`";
        assert_eq!(unchecked_members(body), vec![Mac::parse("aa:bb:cc:dd:ee:02").unwrap()]);
        let gitlab = "- [~] `aa:bb:cc:dd:ee:04` node-4 (inapplicable)\n- [x] `aa:bb:cc:dd:ee:05`";
        assert_eq!(
            unchecked_members(gitlab),
            vec![Mac::parse("aa:bb:cc:dd:ee:04").unwrap()]
        );
    }
}
