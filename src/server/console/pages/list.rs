//! The machine list and its bulk approve/reject form.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{Value, context};
use serde::Serialize;

use super::{Done, PAGE, PageResult, actor, error_page, flash, page, run, ser, store_error};
use crate::domain::{Mac, Machine, Source, State as MachineState};
use crate::propose::Intent;
use crate::server::AppState;
use crate::server::api::ListQuery;
use crate::server::console::session::Operator;
use crate::server::console::view::ago;
use crate::store::Sort;

#[derive(Serialize)]
struct Row {
    mac: String,
    state: &'static str,
    error: Option<String>,
    name: Option<String>,
    /// Its addresses, "10.0.10.12 (rack1)", the permanent one first.
    address: Option<String>,
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
pub(super) fn location_of(m: &Machine) -> Option<String> {
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

fn row(
    m: &Machine,
    proposal: Option<&crate::domain::Proposal>,
    addresses: &[(String, String)],
    discovery_pool: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> Row {
    let f = m.facts.as_ref();
    let mut addresses: Vec<&(String, String)> = addresses.iter().collect();
    addresses.sort_by_key(|(pool, _)| Some(pool.as_str()) == discovery_pool);
    let human = crate::render::human_bytes;
    Row {
        mac: m.mac.to_string(),
        state: m.state.as_str(),
        error: m.last_error.clone(),
        name: m.name.clone(),
        address: (!addresses.is_empty()).then(|| {
            addresses
                .iter()
                .map(|(pool, ip)| format!("{ip} ({pool})"))
                .collect::<Vec<_>>()
                .join(", ")
        }),
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
        let addresses = machines
            .iter()
            .map(|m| store.addresses(m.mac))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            machines,
            (proposals, addresses),
            store.count_machines(&query2)?,
            store.count_by_state()?,
        ))
    })
    .await;
    let (machines, (proposals, addresses), total, counts) = loaded.map_err(|e| store_error(&state, &op, &e))?;
    let now = Utc::now();
    let discovery_pool = state.proposer.pools().discovery.as_ref().map(|p| p.name.clone());
    let rows: Vec<Row> = machines
        .iter()
        .zip(proposals.iter().zip(&addresses))
        .map(|(m, (p, a))| row(m, p.as_ref(), a, discovery_pool.as_deref(), now))
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
        ("State", Some(Sort::State)), ("MAC", Some(Sort::Mac)), ("Name", Some(Sort::Name)), ("Address", None), ("Vendor / product", None), ("Cores", None),
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
            reviewer => op.role >= crate::server::auth::Role::Approver,
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
        // On their own task: a browser that gives up never cuts a review off half-way.
        let intent = if action == "approve" {
            Intent::Approve
        } else {
            Intent::Reject {
                reason: "rejected in the console".into(),
            }
        };
        let result = state.proposer.intend(mac, intent, &who).await;
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
