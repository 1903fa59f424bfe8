//! The console's pages and forms. Handlers gather data and hand it to a template; the
//! decisions (approve, reject, import) are the proposer's, exactly as for the API.
// Both arms of a page's result are an HTTP response (the error one is the error page):
// boxing one would only add an allocation to every page.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::session::{Operator, cookie_id};
use super::view::{ago, diff, highlight_yaml};
use crate::domain::{ImportMode, Mac, Machine, ProposalState, Source, State as MachineState};
use crate::metrics::KindLabel;
use crate::server::AppState;
use crate::server::api::ListQuery;
use crate::sources::import as csv_import;
use crate::store::{Sort, StoreError};

/// Rows per page: a screenful, and a page weight far below 200 KB even at 10,000 machines.
const PAGE: u32 = 50;

type PageResult = Result<Response, Response>;

fn ser<T: Serialize>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

fn page(state: &AppState, name: &str, ctx: Value) -> PageResult {
    match state.console.render(name, ctx) {
        Ok(html) => Ok(Html(html).into_response()),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console template failed");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the log says why",
            )
                .into_response())
        }
    }
}

fn error_page(
    state: &AppState,
    op: &Operator,
    status: StatusCode,
    heading: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let ctx = context! {
        title => heading, user => &op.user, csrf => &op.csrf, heading, message,
        link => link.map(|l| l.0), link_label => link.map(|l| l.1),
    };
    match page(state, "error.html", ctx) {
        Ok(mut r) => {
            *r.status_mut() = status;
            r
        }
        Err(r) => r,
    }
}

async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
}

fn actor(op: &Operator) -> String {
    format!("console:{}", op.user)
}

// ---- login ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this server: a crafted `next` must not send anyone elsewhere.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

pub async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    page(
        &state,
        "login.html",
        context! { title => "Log in", next => local_path(q.next.as_deref()) },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    name: Option<String>,
    next: Option<String>,
}

pub async fn login(State(state): State<AppState>, axum::Form(form): axum::Form<LoginForm>) -> PageResult {
    if state.tokens.role(form.token.trim()) != Some(crate::server::auth::Role::Operator) {
        state.metrics.auth_failures.inc();
        let mut r = page(
            &state,
            "login.html",
            context! { title => "Log in", next => local_path(form.next.as_deref()), error => "That is not the operator token." },
        )?;
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(r);
    }
    let name: String = form
        .name
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .take(64)
        .collect();
    let user = if name.is_empty() { "operator".to_string() } else { name };
    let (id, _) = state.console.sessions.start(&user);
    tracing::info!(user, "console login");
    let mut r = Redirect::to(&local_path(form.next.as_deref())).into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, state.console.sessions.cookie(&id));
    Ok(r)
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_id(&headers) {
        state.console.sessions.end(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, state.console.sessions.clear_cookie());
    r
}

// ---- machines ------------------------------------------------------------------------

#[derive(Serialize)]
struct Row {
    mac: String,
    state: &'static str,
    error: Option<String>,
    name: Option<String>,
    vendor: Option<String>,
    product: Option<String>,
    cores: Option<u32>,
    memory: Option<String>,
    disk: Option<String>,
    nics: Option<usize>,
    source: &'static str,
    location: Option<String>,
    first_seen: String,
    first_seen_ago: String,
    last_seen: String,
    last_seen_ago: String,
    expected: Option<String>,
    proposal_url: Option<String>,
    proposal_label: Option<String>,
}

pub fn source_label(s: Source) -> &'static str {
    match s {
        Source::Report => "report",
        Source::Dhcp => "DHCP",
        Source::Smee => "Smee",
        Source::AutoDiscovery => "Tinkerbell discovery",
        Source::Import => "import",
    }
}

/// Where the machine is: the switch port it is cabled to (LLDP) when it said, else the
/// DHCP relay that forwarded its request, else where the operator's import put it.
fn location_of(m: &Machine) -> Option<String> {
    let lldp = m
        .facts
        .as_ref()
        .and_then(|f| f.lldp.first())
        .and_then(|n| match (&n.switch, &n.port) {
            (Some(sw), Some(port)) => Some(format!("{sw} {port}")),
            (Some(sw), None) => Some(sw.clone()),
            (None, Some(port)) => Some(format!("port {port}")),
            (None, None) => None,
        });
    lldp.or_else(|| m.sighting.as_ref().and_then(|s| s.location()))
        .or_else(|| m.expected.as_ref().and_then(|e| e.location.clone()))
}

fn row(m: &Machine, proposal: Option<&crate::domain::Proposal>, now: chrono::DateTime<Utc>) -> Row {
    let f = m.facts.as_ref();
    let human = crate::render::human_bytes;
    Row {
        mac: m.mac.to_string(),
        state: m.state.as_str(),
        error: m.last_error.clone(),
        name: m.name.clone(),
        vendor: f.and_then(|f| f.vendor.clone()),
        product: f.and_then(|f| f.product.clone()),
        cores: f.map(|f| f.cpu_cores).filter(|&c| c > 0),
        memory: f.and_then(|f| f.memory_bytes).map(human),
        disk: f.map(|f| f.disk_total_bytes()).filter(|&b| b > 0).map(human),
        nics: f.map(|f| f.nics.len()).filter(|&n| n > 0),
        source: source_label(m.source),
        location: location_of(m),
        first_seen: m.first_seen.to_rfc3339(),
        first_seen_ago: ago(m.first_seen, now),
        last_seen: m.last_seen.to_rfc3339(),
        last_seen_ago: if m.seen_count == 0 {
            "not seen yet".into()
        } else {
            ago(m.last_seen, now)
        },
        expected: m.expected.as_ref().map(|e| e.provenance()),
        proposal_url: proposal
            .and_then(|p| p.url.clone())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
        proposal_label: proposal.map(|p| match (p.url.is_some(), p.number) {
            (true, Some(n)) => format!("PR #{n} ({})", p.state),
            (_, Some(n)) => format!("local #{n} ({})", p.state),
            _ => p.state.to_string(),
        }),
    }
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
    n: Option<u32>,
    failed: Option<u32>,
}

/// A message after a redirect, built from fixed words and numbers only: a crafted link
/// cannot make the console say anything else.
fn flash(done: &Done) -> Option<(String, &'static str)> {
    let what = match done.done.as_deref()? {
        "approve" => "approved",
        "reject" => "rejected",
        "rerender" => "queued for re-rendering",
        "unsuppress" => "un-suppressed",
        "forget" => "forgotten",
        "workflow" => "given a new workflow; re-rendering",
        "import" => "imported",
        _ => return None,
    };
    let n = done.n.unwrap_or(1);
    let failed = done.failed.unwrap_or(0);
    let text = format!("{n} machine{} {what}.", if n == 1 { "" } else { "s" });
    Some(if failed > 0 {
        (
            format!("{text} {failed} could not be: open each for the reason."),
            "err",
        )
    } else {
        (text, "ok")
    })
}

pub async fn machines(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Query(q): Query<ListQuery>,
    Query(done): Query<Done>,
) -> PageResult {
    let mut q = q;
    q.limit = Some(q.limit.unwrap_or(PAGE).clamp(1, 500));
    let query = match q.to_query() {
        Ok(query) => query,
        Err(e) => return Err(error_page(&state, &op, StatusCode::BAD_REQUEST, "Bad filter", &e, None)),
    };
    let store = state.proposer.store().clone();
    let query2 = query.clone();
    let loaded = run(move || {
        let machines = store.machines(&query2)?;
        let proposals = machines
            .iter()
            .map(|m| store.proposal(m.mac))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            machines,
            proposals,
            store.count_machines(&query2)?,
            store.count_by_state()?,
        ))
    })
    .await;
    let (machines, proposals, total, counts) = loaded.map_err(|e| {
        error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store error",
            &e.to_string(),
            None,
        )
    })?;
    let now = Utc::now();
    let rows: Vec<Row> = machines
        .iter()
        .zip(&proposals)
        .map(|(m, p)| row(m, p.as_ref(), now))
        .collect();
    let all: u64 = counts.iter().map(|(_, n)| n).sum();
    let counts: Vec<_> = MachineState::ALL
        .iter()
        .map(|s| {
            let n = counts.iter().find(|(st, _)| st == s).map(|(_, n)| *n).unwrap_or(0);
            let pct = (n * 100 + all / 2).checked_div(all).map_or(0, |p| p.min(100));
            context! { state => s.as_str(), n, pct }
        })
        .collect();

    // Links keep every filter and change one thing.
    let link = |sort: Option<Sort>, desc: Option<bool>, offset: u32| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("state", &q.state),
            ("source", &q.source),
            ("expected", &q.expected),
            ("q", &q.q),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                ser.append_pair(k, v);
            }
        }
        let sort = sort.unwrap_or(query.sort);
        ser.append_pair("sort", sort.as_str());
        ser.append_pair(
            "order",
            if desc.unwrap_or(query.descending) {
                "desc"
            } else {
                "asc"
            },
        );
        if offset > 0 {
            ser.append_pair("offset", &offset.to_string());
        }
        format!("/?{}", ser.finish())
    };
    let columns: Vec<Value> = [
        ("State", Some(Sort::State)), ("MAC", Some(Sort::Mac)), ("Name", Some(Sort::Name)), ("Vendor / product", None), ("Cores", None),
        ("Memory", None), ("Disk", None), ("NICs", None), ("Source", None), ("Seen at", None), ("First seen", Some(Sort::FirstSeen)),
        ("Last seen", Some(Sort::LastSeen)), ("Expected", None), ("Proposal", None),
    ]
    .into_iter()
    .map(|(label, sort)| {
        let active = sort == Some(query.sort);
        let desc = if active { !query.descending } else { matches!(sort, Some(Sort::LastSeen | Sort::FirstSeen)) };
        context! { label, sort => sort.is_some(), active, desc => query.descending, href => sort.map(|s| link(Some(s), Some(desc), 0)) }
    })
    .collect();
    let limit = query.limit;
    let offset = query.offset;
    let shown = rows.len() as u32;
    let flash = flash(&done);
    page(
        &state,
        "machines.html",
        context! {
            title => "Machines", nav => "machines", user => &op.user, csrf => &op.csrf,
            flash => flash.as_ref().map(|f| &f.0), flash_kind => flash.as_ref().map(|f| f.1),
            machines => ser(&rows), counts, all_count => all, total,
            first => offset + 1, last => offset + shown,
            states => MachineState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            sources => [Source::Report, Source::Dhcp, Source::Smee, Source::AutoDiscovery, Source::Import].iter().map(|s| (s.as_str(), source_label(*s))).collect::<Vec<_>>(),
            query => context! { q => &q.q, state => &q.state, source => &q.source, expected => &q.expected, sort => query.sort.as_str(), order => if query.descending { "desc" } else { "asc" } },
            columns,
            filtered => q.state.is_some() || q.source.is_some() || q.expected.is_some() || q.q.as_ref().is_some_and(|t| !t.is_empty()),
            prev_href => (offset > 0).then(|| link(None, None, offset.saturating_sub(limit))),
            next_href => ((offset + shown) < total as u32).then(|| link(None, None, offset + limit)),
        },
    )
}

/// Approve or reject several machines at once; each goes through the proposer on its own,
/// so one failure stops nobody else.
pub async fn bulk(State(state): State<AppState>, Extension(op): Extension<Operator>, body: Bytes) -> Response {
    let mut action = None;
    let mut macs = Vec::new();
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "action" => action = Some(v.into_owned()),
            "mac" => {
                if let Ok(m) = Mac::parse(&v)
                    && !macs.contains(&m)
                {
                    macs.push(m);
                }
            }
            _ => {}
        }
    }
    let action = match action.as_deref() {
        Some(a @ ("approve" | "reject")) => a.to_string(),
        _ => {
            return error_page(
                &state,
                &op,
                StatusCode::BAD_REQUEST,
                "Nothing to do",
                "Choose approve or reject.",
                None,
            );
        }
    };
    if macs.is_empty() {
        return error_page(
            &state,
            &op,
            StatusCode::BAD_REQUEST,
            "Nothing selected",
            "Select one or more machines first.",
            Some(("/", "Back to the list")),
        );
    }
    // One page of a list holds at most 500 rows; more is not a form this console made.
    if macs.len() > 500 {
        return error_page(
            &state,
            &op,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too many",
            "Select at most 500 machines at once.",
            Some(("/", "Back to the list")),
        );
    }
    let who = actor(&op);
    let mut ok = 0;
    let mut failed = Vec::new();
    for mac in macs {
        let result = if action == "approve" {
            state.proposer.approve(mac, &who).await
        } else {
            state.proposer.reject(mac, &who, "rejected in the console").await
        };
        match result {
            Ok(_) => ok += 1,
            Err(e) => {
                tracing::warn!(%mac, error = %e, action, "bulk action failed");
                failed.push(format!("{mac}: {e}"));
            }
        }
    }
    if !failed.is_empty() {
        let heading = format!("{ok} done, {} could not be {}d", failed.len(), action);
        return error_page(
            &state,
            &op,
            StatusCode::CONFLICT,
            &heading,
            &failed.join(" · "),
            Some(("/", "Back to the list")),
        );
    }
    Redirect::to(&format!("/?done={action}&n={ok}&failed=0")).into_response()
}

// ---- one machine ---------------------------------------------------------------------

pub async fn machine(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Path(mac): Path<String>,
    Query(done): Query<Done>,
) -> PageResult {
    let mac = Mac::parse(&mac)
        .map_err(|e| error_page(&state, &op, StatusCode::BAD_REQUEST, "Not a MAC", &e.to_string(), None))?;
    let store = state.proposer.store().clone();
    let loaded = run(move || Ok((store.machine(mac)?, store.transitions(mac)?, store.proposal(mac)?))).await;
    let (m, transitions, proposal) = loaded.map_err(|e| {
        error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store error",
            &e.to_string(),
            None,
        )
    })?;
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
        match state.proposer.render_for(&m, &facts).await {
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
                state => p.state.as_str(), branch => &p.branch, path => &p.path, number => p.number,
                url => p.url.as_ref().filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            }),
            timeline,
            render_error,
            manifest => manifest_text.as_deref().map(|t| Value::from_safe_string(highlight_yaml(t))),
            diff => (!diff_html.is_empty()).then(|| Value::from_safe_string(diff_html)),
            base, path, base_exists => base_text.is_some(),
            foreign_files,
            hands_off => proposal.as_ref().is_some_and(|p| p.hands_off),
            can_approve => open,
            can_reject => !matches!(m.state, MachineState::Rejected | MachineState::Approved | MachineState::Applied | MachineState::Provisioned | MachineState::Failed),
            can_rerender => m.state.accepts_facts() && !m.suppressed && m.facts.is_some(),
            can_forget => !open && !proposal.as_ref().is_some_and(|p| matches!(p.state, ProposalState::Merged | ProposalState::Rejecting)) && !matches!(m.state, MachineState::Approved | MachineState::Applied | MachineState::Provisioned | MachineState::Failed),
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
    let result: Result<(), String> = match action.as_str() {
        "approve" => state
            .proposer
            .approve(mac, &who)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "reject" => {
            let reason: String = field("reason")
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            state
                .proposer
                .reject(
                    mac,
                    &who,
                    if reason.is_empty() {
                        "rejected in the console"
                    } else {
                        &reason
                    },
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "rerender" => {
            let store = state.proposer.store().clone();
            let r = run(move || store.requeue(mac, Utc::now()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            state.proposer.wake();
            r
        }
        "unsuppress" => {
            let store = state.proposer.store().clone();
            let r = run(move || store.unsuppress(mac, &who, Utc::now()))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            state.proposer.wake();
            r
        }
        "forget" => match state.proposer.forget(mac, &who).await {
            Ok(()) => return Redirect::to("/?done=forget&n=1").into_response(),
            Err(crate::propose::ProposeError::Store(StoreError::Transition { from, .. })) => Err(format!(
                "A machine that is {from}, or whose proposal is open or merged, is in git's hands: reject an open proposal instead; a merged one is removed from git."
            )),
            Err(e) => Err(e.to_string()),
        },
        "workflow" => match field("workflow") {
            Some(w) if state.proposer.renderer().has_workflow(&w) => {
                let store = state.proposer.store().clone();
                let r = run(move || store.set_workflow(mac, &w, &who, Utc::now()))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                state.proposer.wake();
                r
            }
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

// ---- import --------------------------------------------------------------------------

fn default_batch_name(op: &Operator) -> String {
    format!("{} {}", Utc::now().format("%Y-%m-%d %H:%M"), op.user)
}

pub async fn import_page(State(state): State<AppState>, Extension(op): Extension<Operator>) -> PageResult {
    page(
        &state,
        "import.html",
        context! { title => "Import", nav => "import", user => &op.user, csrf => &op.csrf, mode => "expected", name => default_batch_name(&op) },
    )
}

pub async fn import_post(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    mut form: Multipart,
) -> Response {
    let (mut file, mut pasted, mut name, mut mode, mut confirm) = (
        None::<Bytes>,
        None::<String>,
        None::<String>,
        ImportMode::Expected,
        false,
    );
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "The upload is larger than {} MiB; split it.",
                        super::MAX_IMPORT_BYTES >> 20
                    )
                } else {
                    e.body_text()
                };
                return error_page(
                    &state,
                    &op,
                    status,
                    "Upload failed",
                    &msg,
                    Some(("/import", "Back to the import")),
                );
            }
        };
        let field_name = field.name().unwrap_or_default().to_string();
        let data = match field.bytes().await {
            Ok(d) => d,
            Err(e) => {
                let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return error_page(
                    &state,
                    &op,
                    status,
                    "Upload failed",
                    &e.body_text(),
                    Some(("/import", "Back to the import")),
                );
            }
        };
        match field_name.as_str() {
            "file" if !data.is_empty() => file = Some(data),
            "csv" => pasted = Some(String::from_utf8_lossy(&data).into_owned()),
            "name" => {
                name = Some(
                    String::from_utf8_lossy(&data)
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(64)
                        .collect(),
                )
            }
            "mode" => mode = String::from_utf8_lossy(&data).parse().unwrap_or_default(),
            "confirm" => confirm = &data[..] == b"1",
            _ => {}
        }
    }
    let bytes = match (file, pasted) {
        (Some(f), _) => f,
        (None, Some(p)) if !p.trim().is_empty() => Bytes::from(p.into_bytes()),
        _ => {
            return error_page(
                &state,
                &op,
                StatusCode::BAD_REQUEST,
                "Nothing to import",
                "Choose a file or paste the CSV.",
                Some(("/import", "Back to the import")),
            );
        }
    };
    let name = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| default_batch_name(&op));
    let csv_text = String::from_utf8_lossy(&bytes).into_owned();
    let base_ctx = |extra: Value| {
        context! { ..extra, ..context! { title => "Import", nav => "import", user => &op.user, csrf => &op.csrf, mode => mode.as_str(), name => &name, csv => &csv_text } }
    };
    let rows = match csv_import::parse_csv(&bytes) {
        Ok(rows) => rows,
        Err(e) => {
            return page(
                &state,
                "import.html",
                base_ctx(context! { file_error => e.to_string() }),
            )
            .map_or_else(
                |r| r,
                |mut r| {
                    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                    r
                },
            );
        }
    };
    match state
        .proposer
        .import(rows, mode, &name, &actor(&op), !confirm, true)
        .await
    {
        Ok(outcome) if outcome.batch.is_some() => {
            Redirect::to(&format!("/imports?done=import&n={}", outcome.valid)).into_response()
        }
        Ok(outcome) => {
            page(&state, "import.html", base_ctx(context! { preview => ser(&outcome) })).unwrap_or_else(|r| r)
        }
        Err(e) => error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Import failed",
            &e.to_string(),
            Some(("/import", "Back to the import")),
        ),
    }
}

pub async fn batches(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Query(done): Query<Done>,
) -> PageResult {
    let store = state.proposer.store().clone();
    let batches = run(move || store.batches(50)).await.map_err(|e| {
        error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store error",
            &e.to_string(),
            None,
        )
    })?;
    let now = Utc::now();
    let batches: Vec<Value> = batches
        .iter()
        .map(|b| {
            context! {
                id => b.id, name => &b.name, mode => b.mode.as_str(), actor => &b.actor, created_at => b.created_at.to_rfc3339(), ago => ago(b.created_at, now),
                rows => b.rows.iter().map(|r| context! { line => r.line, mac => r.mac.map(|m| m.to_string()), error => &r.error, state => r.state.map(|s| s.as_str()) }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let flash = flash(&done);
    page(
        &state,
        "batches.html",
        context! { title => "Batches", nav => "imports", user => &op.user, csrf => &op.csrf, batches, flash => flash.as_ref().map(|f| &f.0) },
    )
}

// ---- status and live updates -----------------------------------------------------------

pub async fn status(State(state): State<AppState>, Extension(op): Extension<Operator>) -> PageResult {
    let store = state.proposer.store().clone();
    let loaded = run(move || {
        let (n, oldest) = store.queue_summary()?;
        let head = store.pending(1)?.first().map(|p| p.mac);
        let err = match head {
            Some(mac) => store.machine(mac)?.and_then(|m| m.last_error.map(|e| (mac, e))),
            None => None,
        };
        Ok((n, oldest, err))
    })
    .await;
    let (n, oldest, err) = loaded.map_err(|e| {
        error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Store error",
            &e.to_string(),
            None,
        )
    })?;
    state.sync_forge_metrics();
    let m = &state.metrics;
    let kind = |k: &str| m.forge_errors.get_or_create(&KindLabel { kind: k.into() }).get();
    let now = Utc::now();
    page(
        &state,
        "status.html",
        context! {
            title => "Status", nav => "status", user => &op.user, csrf => &op.csrf,
            queue => context! {
                length => n, oldest => oldest.map(|o| o.to_rfc3339()), oldest_ago => oldest.map(|o| ago(o, now)),
                last_error => err.as_ref().map(|e| &e.1), last_error_mac => err.as_ref().map(|e| e.0.to_string()),
            },
            forge => state.forge_kind, base => state.proposer.git().base(),
            forge_remaining => m.forge_rate_limit_remaining.get(), forge_rate_limited => kind("rate_limited"), forge_errors => kind("error"),
            cluster_enabled => state.console.cluster_enabled, cluster_up => m.cluster_watch_up.get() == 1,
            known => state.known.counts().into_iter().map(|(k, n)| (k.to_string(), n)).collect::<Vec<_>>(),
            dhcp => context! {
                up => m.dhcp_listener_up.get() == 1, packets => m.dhcp_packets.get(), parsed => m.dhcp_parsed.get(),
                new_macs => m.dhcp_new_macs.get(), tracked => m.dhcp_tracked_macs.get(),
            },
        },
    )
}

/// Server-sent events: `changed` whenever the store changed, coalesced; ends at shutdown so
/// a graceful stop is not held open by browsers.
pub async fn events(State(state): State<AppState>) -> Response {
    use std::sync::atomic::Ordering;
    let streams = state.console.streams.clone();
    if streams.fetch_add(1, Ordering::SeqCst) >= super::MAX_STREAMS {
        streams.fetch_sub(1, Ordering::SeqCst);
        // The pages work without live updates; the script retries later.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "too many live-update streams open\n",
        )
            .into_response();
    }
    /// Gives the stream's slot back when the browser goes away.
    struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let slot = Slot(streams);
    let rx = state.proposer.store().changes();
    let stop = state.shutdown.clone();
    let stream = futures::stream::unfold((rx, stop, slot), |(mut rx, stop, slot)| async move {
        let stopped = async {
            match &stop {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => changed.ok()?,
            _ = stopped => return None,
        }
        // Bursts (an import, a drain) become one event.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = *rx.borrow_and_update();
        Some((
            Ok::<_, Infallible>(Event::default().event("changed").data(n.to_string())),
            (rx, stop, slot),
        ))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
