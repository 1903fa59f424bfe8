//! One machine's page and the actions taken from it.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{Value, context};

use super::list::{location_of, source_label};
use super::{Done, PageResult, actor, error_page, flash, page, run, ser, store_error};
use crate::domain::{Mac, ProposalState, State as MachineState};
use crate::propose::Intent;
use crate::server::AppState;
use crate::server::auth::Role;
use crate::server::console::session::Operator;
use crate::server::console::view::{ago, diff, highlight_yaml};
use crate::store::StoreError;

pub async fn machine(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(mac): Path<String>,
    Query(done): Query<Done>,
) -> PageResult {
    let mac = Mac::parse(&mac)
        .map_err(|e| error_page(&state, &op, StatusCode::BAD_REQUEST, "Not a MAC", &e.to_string(), None))?;
    let store = state.proposer.store().clone();
    let loaded = run(move || {
        Ok((
            store.machine(mac)?,
            store.transitions(mac)?,
            store.proposal(mac)?,
            store.addresses(mac)?,
        ))
    })
    .await;
    let (m, transitions, proposal, addresses) = loaded.map_err(|e| store_error(&state, &op, &e))?;
    let Some(m) = m else {
        return Err(error_page(
            &state,
            &op,
            StatusCode::NOT_FOUND,
            "No such machine",
            &format!("Registrar knows no machine with MAC {mac}."),
            None,
        ));
    };
    let now = Utc::now();
    let base = state.proposer.git().base().to_string();

    // What Approve would merge (an open proposal: every file its branch changes, read from
    // git, so a branch someone pushed more to says so), what was merged, or what would be
    // proposed now (a fresh render, before there is a proposal).
    let mut render_error = None;
    let mut manifest_text = None;
    let mut rule = proposal.as_ref().map(|p| p.rule.clone());
    let mut workflow = m
        .workflow
        .clone()
        .or_else(|| proposal.as_ref().and_then(|p| p.workflow.clone()));
    let mut path = proposal.as_ref().map(|p| p.path.clone());
    let mut diff_html = String::new();
    let mut foreign_files = Vec::new();
    let read_base = |f: String| {
        let (git, b) = (state.proposer.git().clone(), base.clone());
        async move {
            tokio::task::spawn_blocking(move || git.read(&b, &f))
                .await
                .ok()
                .and_then(|r| r.ok())
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        }
    };
    let open = proposal
        .as_ref()
        .filter(|p| matches!(p.state, ProposalState::Open | ProposalState::Approving));
    let changes = match open {
        Some(p) => {
            let (git, branch) = (state.proposer.git().clone(), p.branch.clone());
            tokio::task::spawn_blocking(move || git.changes(&branch))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default()
        }
        None => vec![],
    };
    if let (Some(p), false) = (open, changes.is_empty()) {
        let dir = crate::propose::index::manifest_dir(&p.path);
        manifest_text = changes.iter().find(|c| c.path == p.path).and_then(|c| c.new.clone());
        foreign_files = changes
            .iter()
            .filter(|c| c.path.rsplit_once('/').map_or("", |(d, _)| d) != dir)
            .map(|c| c.path.clone())
            .collect();
        diff_html = changes
            .iter()
            .map(|c| {
                diff(
                    c.old.as_deref().unwrap_or(""),
                    c.new.as_deref().unwrap_or(""),
                    &format!("{base}:{}", c.path),
                    &format!("{}:{}", p.branch, c.path),
                )
            })
            .filter(|d| !d.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
    } else if let Some(p) = proposal.as_ref().filter(|p| p.state == ProposalState::Merged) {
        manifest_text = read_base(p.path.clone()).await;
    } else if let Some(facts) = m.facts.clone() {
        let address = state.proposer.held_address(&m).await.ok().flatten();
        match state.proposer.render_for(&m, &facts, address.as_ref()).await {
            Ok(r) => {
                rule = Some(r.decision.rule.clone());
                workflow = r.decision.workflow.clone();
                path = Some(state.proposer.path_for(&r.name, &m.mac));
                manifest_text = Some(r.manifest);
            }
            Err(e) => render_error = Some(format!("Rendering failed: {e}")),
        }
    }
    let base_text = match &path {
        Some(p) => read_base(p.clone()).await,
        None => None,
    };
    if changes.is_empty()
        && let (Some(new), Some(p)) = (&manifest_text, &path)
    {
        diff_html = diff(
            base_text.as_deref().unwrap_or(""),
            new,
            &format!("{base}:{p}"),
            "proposal",
        );
    }
    let f = m.facts.clone().unwrap_or_default();
    let human = crate::render::human_bytes;
    let disks: Vec<Value> = f.disks.iter().map(|d| context! { device => &d.device, size => d.size_bytes.map(human).unwrap_or_default(), model => &d.model }).collect();
    let timeline: Vec<Value> = transitions
        .iter()
        .rev()
        .map(|t| context! { at => t.at.to_rfc3339(), ago => ago(t.at, now), from => t.from.map(|s| s.as_str()), to => t.to.as_str(), cause => &t.cause, actor => &t.actor })
        .collect();
    let open = proposal
        .as_ref()
        .is_some_and(|p| matches!(p.state, ProposalState::Open | ProposalState::Approving));
    let flash = flash(&done);
    // Buttons a person's role does not allow are not shown (the server refuses them anyway).
    let reviewer = op.role >= Role::Approver;
    let approve_on_forge = open
        && proposal
            .as_ref()
            .is_some_and(|p| state.proposer.approval_elsewhere(p).is_some());
    page(
        &state,
        "machine.html",
        context! {
            title => m.name.clone().unwrap_or_else(|| m.mac.to_string()), nav => "machines", user => &op.user, csrf => &op.csrf,
            flash => flash.as_ref().map(|f| &f.0), flash_kind => flash.as_ref().map(|f| f.1),
            m => context! {
                mac => m.mac.to_string(), name => &m.name, state => m.state.as_str(), error => &m.last_error, suppressed => m.suppressed,
                source => source_label(m.source), seen_count => m.seen_count, first_seen => m.first_seen.to_rfc3339(), last_seen => m.last_seen.to_rfc3339(),
                expected => m.expected.as_ref().map(|e| e.provenance()),
            },
            first_seen_ago => ago(m.first_seen, now),
            last_seen_ago => if m.seen_count == 0 { "not seen yet".to_string() } else { ago(m.last_seen, now) },
            location => location_of(&m),
            addresses => addresses.iter().map(|(pool, ip)| context! { pool => pool, ip => ip }).collect::<Vec<_>>(),
            f => ser(&f),
            facts_json => m.facts.as_ref().map(ser),
            memory => f.memory_bytes.map(human).unwrap_or_else(|| "unknown".into()),
            disks,
            rule => &rule,
            rule_when => rule.as_deref().and_then(|r| state.proposer.renderer().rule_condition(r)).map(str::to_string),
            workflow => &workflow,
            workflows => state.proposer.renderer().workflows().map(str::to_string).collect::<Vec<_>>(),
            forge => state.forge_kind,
            proposal => proposal.as_ref().map(|p| context! {
                state => p.state.as_str(), kind => p.kind.as_str(), branch => &p.branch, path => &p.path, number => p.number,
                url => p.url.as_ref().filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            }),
            timeline,
            render_error,
            manifest => manifest_text.as_deref().map(|t| Value::from_safe_string(highlight_yaml(t))),
            diff => (!diff_html.is_empty()).then(|| Value::from_safe_string(diff_html)),
            base, path, base_exists => base_text.is_some(),
            foreign_files,
            hands_off => proposal.as_ref().is_some_and(|p| p.hands_off),
            can_approve => open && reviewer && !approve_on_forge,
            approve_on_forge,
            // A machine git holds is not rejected; an open change of it is closed.
            can_reject => reviewer && if m.state.is_settled() { open } else { !matches!(m.state, MachineState::Rejected | MachineState::Decommissioning | MachineState::Decommissioned) },
            can_decommission => reviewer && m.state.is_settled() && m.wanted.is_none() && !open,
            can_reprovision => reviewer && matches!(m.state, MachineState::Provisioned | MachineState::Failed) && m.wanted.is_none() && !open,
            can_reinventory => reviewer && state.follows_cluster && m.state == MachineState::Provisioned && m.wanted.is_none(),
            can_unsuppress => reviewer && m.suppressed,
            can_rerender => reviewer && m.state.accepts_facts() && !m.suppressed && m.facts.is_some(),
            can_forget => op.role >= Role::Admin && !open && !proposal.as_ref().is_some_and(|p| matches!(p.state, ProposalState::Merged | ProposalState::Rejecting)) && !matches!(m.state, MachineState::Approved | MachineState::Applied | MachineState::Provisioned | MachineState::Inventorying | MachineState::Failed),
        },
    )
}

/// One action on one machine, then back to its page (or an explanation).
pub async fn machine_action(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path((mac, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(mac) = Mac::parse(&mac) else {
        return error_page(
            &state,
            &op,
            StatusCode::BAD_REQUEST,
            "Not a MAC",
            "That address is not a MAC.",
            None,
        );
    };
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let who = actor(&op);
    let back = format!("/machines/{mac}");
    let intent: Result<Intent, String> = match action.as_str() {
        "approve" => Ok(Intent::Approve),
        "reject" => {
            let reason: String = field("reason")
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            let reason = if reason.is_empty() {
                "rejected in the console".to_string()
            } else {
                reason
            };
            Ok(Intent::Reject { reason })
        }
        "rerender" => Ok(Intent::Rerender),
        "unsuppress" => Ok(Intent::Unsuppress),
        "forget" => Ok(Intent::Forget),
        "decommission" => Ok(Intent::Decommission),
        "reprovision" => Ok(Intent::Reprovision),
        "reinventory" if state.follows_cluster => Ok(Intent::Reinventory),
        "reinventory" => {
            Err("Re-inventory boots the machine through the cluster: Registrar does not follow one here.".into())
        }
        "workflow" => match field("workflow") {
            Some(w) if state.proposer.renderer().has_workflow(&w) => Ok(Intent::Workflow(w)),
            _ => Err("Choose one of the workflows that have a template.".into()),
        },
        _ => {
            return error_page(
                &state,
                &op,
                StatusCode::NOT_FOUND,
                "Unknown action",
                "That action does not exist.",
                Some((&back, "Back to the machine")),
            );
        }
    };
    let forgetting = matches!(intent, Ok(Intent::Forget));
    // intend() runs it on its own task: a browser that gives up never cuts it off half-way.
    let result: Result<(), String> = match intent {
        Err(why) => Err(why),
        Ok(intent) => match state.proposer.intend(mac, intent, &who).await {
            Ok(_) if forgetting => return Redirect::to("/?done=forget&n=1").into_response(),
            Ok(_) => Ok(()),
            Err(crate::propose::ProposeError::Store(StoreError::Transition { from, .. })) if forgetting => {
                Err(format!(
                    "A machine that is {from}, or whose proposal is open or merged, is in git's hands: reject an open proposal instead; a merged one is removed from git."
                ))
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => Redirect::to(&format!("{back}?done={action}")).into_response(),
        Err(message) => {
            // On GitHub, a merge that branch protection refuses is reviewed on the PR.
            let store = state.proposer.store().clone();
            let url = run(move || store.proposal(mac))
                .await
                .ok()
                .flatten()
                .and_then(|p| p.url);
            let link = url
                .as_deref()
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .map(|u| (u, "Open the pull request"));
            error_page(
                &state,
                &op,
                StatusCode::CONFLICT,
                &format!("Could not {action} {mac}"),
                &message,
                link.or(Some((&back, "Back to the machine"))),
            )
        }
    }
}
