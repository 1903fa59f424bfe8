//! The operator's API: machines, proposals, and reviews on the local forge.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::{Mac, ProposalState, Source, State as MachineState};
use crate::propose::Intent;
use crate::store::{MachineQuery, Sort};

pub(super) fn parse_mac(raw: &str) -> Result<Mac, ApiError> {
    Mac::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)??)
}

#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    pub state: Option<String>,
    pub source: Option<String>,
    pub expected: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    /// `asc` or `desc`.
    pub order: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl ListQuery {
    /// The store query, or a sentence naming the parameter that is wrong.
    pub fn to_query(&self) -> Result<MachineQuery, String> {
        let empty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
        let sort = match empty(&self.sort) {
            None => Sort::LastSeen,
            Some(s) => Sort::parse(&s)
                .ok_or_else(|| format!("sort must be one of {}", Sort::ALL.map(|(_, n)| n).join(", ")))?,
        };
        let descending = match empty(&self.order).as_deref() {
            None => matches!(sort, Sort::LastSeen | Sort::FirstSeen),
            Some("desc") => true,
            Some("asc") => false,
            Some(_) => return Err("order must be asc or desc".into()),
        };
        Ok(MachineQuery {
            state: empty(&self.state).map(|s| s.parse::<MachineState>()).transpose()?,
            source: empty(&self.source).map(|s| s.parse::<Source>()).transpose()?,
            expected: match empty(&self.expected).as_deref() {
                None => None,
                Some("true" | "yes" | "1") => Some(true),
                Some("false" | "no" | "0") => Some(false),
                Some(_) => return Err("expected must be true or false".into()),
            },
            text: empty(&self.q).map(|t| t.chars().take(100).collect()),
            sort,
            descending,
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0),
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/machines",
    tag = "machines",
    params(("state" = Option<String>, Query, description = "only machines in this state"), ("q" = Option<String>, Query, description = "free text over MAC, name, vendor, product, serial"), ("limit" = Option<u32>, Query), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "machines, newest first", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn list_machines(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filter = q.to_query().map_err(ApiError::bad_request)?;
    let store = state.proposer.store().clone();
    let (machines, total, counts) = run(move || {
        Ok((
            store.machines(&filter)?,
            store.count_machines(&filter)?,
            store.count_by_state()?,
        ))
    })
    .await?;
    let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    Ok(Json(json!({ "machines": machines, "total": total, "counts": counts })))
}

#[utoipa::path(
    get,
    path = "/api/v1/machines/{mac}",
    tag = "machines",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    responses((status = 200, description = "the machine, its proposal, addresses and timeline", body = Object), (status = 404, description = "no such machine"), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn get_machine(State(state): State<AppState>, Path(mac): Path<String>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let store = state.proposer.store().clone();
    let (machine, transitions, proposal, addresses) = run(move || {
        Ok((
            store.machine(mac)?,
            store.transitions(mac)?,
            store.proposal(mac)?,
            store.addresses(mac)?,
        ))
    })
    .await?;
    let machine = machine.ok_or_else(|| ApiError::not_found(format!("no machine with MAC {mac}")))?;
    let addresses: Vec<Value> = addresses
        .into_iter()
        .map(|(pool, ip)| json!({"pool": pool, "ip": ip}))
        .collect();
    Ok(Json(
        json!({ "machine": machine, "transitions": transitions, "proposal": proposal, "addresses": addresses }),
    ))
}

#[derive(Deserialize, Default)]
pub struct ReviewBody {
    /// Who is acting, for the record (defaults to "api").
    actor: Option<String>,
    reason: Option<String>,
    workflow: Option<String>,
}

pub(super) type Session = Option<axum::Extension<super::console::session::Operator>>;
pub(super) type NamedCaller = Option<axum::Extension<super::auth::Caller>>;

/// Who acts: a console session or a personal token names its user (what the body says is
/// not proof); with the shared operator token, the body's `actor` is recorded as the
/// caller's own account of itself.
pub(super) fn actor(session: &Session, caller: &NamedCaller, body: &Option<Json<ReviewBody>>) -> String {
    if let Some(s) = session {
        return format!("console:{}", s.user);
    }
    if let Some(c) = caller {
        return format!("api:{}", c.0.0);
    }
    let who = body
        .as_ref()
        .and_then(|b| b.actor.clone())
        .unwrap_or_else(|| "operator".into());
    let who: String = who.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("api:{who}")
}

/// Carries out `intent` for the MAC in the path, as the caller: the machine as recorded.
pub(super) async fn intend(state: &AppState, mac: &str, who: String, intent: Intent) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(mac)?;
    let machine = state.proposer.intend(mac, intent, &who).await?;
    Ok(Json(json!({ "machine": machine })))
}

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/approve",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …, \"reason\": …, \"workflow\": …}"),
    responses((status = 200, description = "approved: the proposal is merged", body = Object), (status = 409, description = "not open, or the forge refused (a reason is given)"), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Approve).await
}

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/reject",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …, \"reason\": …, \"workflow\": …}"),
    responses((status = 200, description = "rejected and suppressed", body = Object), (status = 409, description = "already merged"), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn reject(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    let reason: String = body
        .as_ref()
        .and_then(|b| b.reason.clone())
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Reject { reason }).await
}

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/unsuppress",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …, \"reason\": …, \"workflow\": …}"),
    responses((status = 200, description = "proposed again", body = Object), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn unsuppress(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    intend(&state, &mac, actor(&session, &caller, &body), Intent::Unsuppress).await
}

#[utoipa::path(
    post,
    path = "/api/v1/machines/{mac}/workflow",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …, \"reason\": …, \"workflow\": …}"),
    responses((status = 200, description = "re-rendered with the workflow", body = Object), (status = 422, description = "no template for that workflow"), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn set_workflow(
    State(state): State<AppState>,
    session: Session,
    caller: NamedCaller,
    Path(mac): Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    parse_mac(&mac)?;
    let workflow = body
        .as_ref()
        .and_then(|b| b.workflow.clone())
        .ok_or_else(|| ApiError::bad_request("send {\"workflow\": \"<name>\"}"))?;
    if !state.proposer.renderer().has_workflow(&workflow) {
        let known: Vec<&str> = state.proposer.renderer().workflows().collect();
        return Err(ApiError::unprocessable(format!(
            "no workflow template named {workflow:?}; known: {}",
            known.join(", ")
        )));
    }
    intend(
        &state,
        &mac,
        actor(&session, &caller, &body),
        Intent::Workflow(workflow),
    )
    .await
}

#[derive(Deserialize)]
pub struct ProposalQuery {
    state: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/proposals",
    tag = "review",
    params(("state" = Option<String>, Query, description = "open, approving, merged, rejecting or closed")),
    responses((status = 200, description = "proposals", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn list_proposals(
    State(state): State<AppState>,
    Query(q): Query<ProposalQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = q
        .state
        .as_deref()
        .map(str::parse::<ProposalState>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let store = state.proposer.store().clone();
    let proposals = run(move || store.proposals(filter)).await?;
    Ok(Json(json!({ "proposals": proposals })))
}

/// The address pools: what each may hand out and how much of it is held or quarantined.
#[utoipa::path(
    get,
    path = "/api/v1/ipam",
    tag = "addresses",
    responses((status = 200, description = "the pools with their size and use", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn pools(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pools = state.proposer.pools().clone();
    let store = state.proposer.store().clone();
    let listed = run(move || {
        let mut out = Vec::new();
        for (purpose, pool) in pools
            .discovery
            .iter()
            .map(|p| ("discovery", p))
            .chain(pools.production.iter().map(|p| ("production", p)))
        {
            out.push(json!({
                "name": pool.name,
                "purpose": purpose,
                "cidr": pool.net.to_string(),
                "gateway": pool.gateway.map(|g| g.to_string()),
                "size": pool.size(),
                "used": store.addresses_used(&pool.name, chrono::Utc::now())?,
            }));
        }
        Ok(out)
    })
    .await?;
    Ok(Json(json!({ "pools": listed })))
}

/// Addresses inside a pool's ranges that a Hardware (on the base branch, in the cluster)
/// holds but Registrar never gave: they are skipped, and belong in the pool's `exclude`.
#[utoipa::path(
    get,
    path = "/api/v1/ipam/check",
    tag = "addresses",
    responses((status = 200, description = "addresses in the pools' ranges that Hardware Registrar did not render holds", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn pool_clashes(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pools = state.proposer.pools().clone();
    let store = state.proposer.store().clone();
    let registered = state.known.addresses();
    let clashes = run(move || {
        let mut out = Vec::new();
        for (source, ip) in registered {
            let Some((key, pool)) = pools.keyed().find(|(_, p)| p.may_hand_out(ip)) else {
                continue;
            };
            if store.address_holder(&pool.name, ip)?.is_none() {
                let place = if source == "gitops" { "the base branch" } else { "the cluster" };
                out.push(json!({
                    "pool": pool.name,
                    "ip": ip.to_string(),
                    "registered_in": source,
                    "message": format!("{ip} is in pool {:?}'s ranges and held by a Hardware in {place} that Registrar did not give it to; it is skipped — add it to {key}.exclude", pool.name),
                }));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(json!({ "clashes": clashes })))
}

/// One machine's addresses, and the pool its permanent address comes from (and why).
#[utoipa::path(
    get,
    path = "/api/v1/ipam/{mac}",
    tag = "addresses",
    params(("mac" = String, Path, description = "the machine's MAC, colon- or dash-separated")),
    responses((status = 200, description = "the machine's addresses and what chose its pool", body = Object), (status = 404, description = "no such machine"), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn machine_addresses(
    State(state): State<AppState>,
    Path(mac): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let store = state.proposer.store().clone();
    let (machine, held) = run(move || Ok((store.machine(mac)?, store.addresses(mac)?))).await?;
    let machine = machine.ok_or_else(|| ApiError::not_found(format!("no machine with MAC {mac}")))?;
    let (pool, pool_error) = match state.proposer.production_pool(&machine) {
        Ok(pool) => (pool.map(|p| p.name), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Json(json!({
        "mac": mac.to_string(),
        "addresses": held.into_iter().map(|(pool, ip)| json!({"pool": pool, "ip": ip})).collect::<Vec<_>>(),
        "production_pool": pool,
        "pool_error": pool_error,
        // What pools are chosen by, as Registrar knows it for this machine.
        "chosen_by": crate::ipam::Placement::of(&machine),
        "last_error": machine.last_error,
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    responses((status = 200, description = "counts by state, the queue, the forge", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.proposer.store().clone();
    let ((queued, oldest), counts) = run(move || Ok((store.queue_summary()?, store.count_by_state()?))).await?;
    let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    Ok(Json(json!({
        "queue": { "length": queued, "oldest_since": oldest },
        "machines": counts,
        "forge": state.forge_kind,
        "gitops": { "base_branch": state.proposer.git().base() },
        "workflows": state.proposer.renderer().workflows().collect::<Vec<_>>(),
        "known_macs": state.known.counts().into_iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
    })))
}

#[derive(Deserialize, Default)]
pub struct ImportQuery {
    mode: Option<String>,
    dry_run: Option<bool>,
    /// Store the valid rows even when others are invalid (the preview's "import the rest").
    skip_invalid: Option<bool>,
    name: Option<String>,
}

pub async fn refuse_oversize_import(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::console::MAX_IMPORT_BYTES as u64) {
        return Err(too_large_import());
    }
    Ok(next.run(req).await)
}

fn too_large_import() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "an import may be at most {} MiB; split the file",
            super::console::MAX_IMPORT_BYTES >> 20
        ),
    )
}

/// `POST /api/v1/imports`: a CSV (`text/csv`) or JSON rows; `?dry_run=true` previews.
/// A file-level problem is 422 and stores nothing; row problems are listed by line, and
/// unless `skip_invalid=true` a file with any bad row stores nothing either.
#[utoipa::path(
    post,
    path = "/api/v1/imports",
    tag = "imports",
    params(("mode" = Option<String>, Query, description = "expected (default) or register"), ("name" = Option<String>, Query), ("dry_run" = Option<bool>, Query), ("skip_invalid" = Option<bool>, Query)),
    request_body(content = String, content_type = "text/csv", description = "a CSV with a header row (mac, and optionally hostname, ip, rack, u, bmc_address, labels…)"),
    responses((status = 200, description = "the batch, or its preview", body = Object), (status = 400, description = "rows that do not parse, each named"), (status = 413, description = "too big"), (status = 401, description = "no token, or not one that may do this"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn post_import(
    State(state): State<AppState>,
    Query(q): Query<ImportQuery>,
    session: Session,
    caller: NamedCaller,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let bytes = axum::body::to_bytes(body, super::console::MAX_IMPORT_BYTES)
        .await
        .map_err(|_| too_large_import())?;
    let mode: crate::domain::ImportMode = q
        .mode
        .as_deref()
        .unwrap_or("expected")
        .parse()
        .map_err(ApiError::bad_request)?;
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let parsed = if is_json {
        crate::sources::import::parse_json(&bytes)
    } else {
        crate::sources::import::parse_csv(&bytes)
    };
    let rows = parsed.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_import",
            e.to_string(),
        )
    })?;
    let who = match (&session, &caller) {
        (Some(s), _) => format!("console:{}", s.user),
        (None, Some(c)) => format!("api:{}", c.0.0),
        (None, None) => "api:operator".to_string(),
    };
    let name: String = q
        .name
        .unwrap_or_else(|| format!("{} import", chrono::Utc::now().format("%Y-%m-%d %H:%M")))
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let dry_run = q.dry_run.unwrap_or(false);
    let outcome = state
        .proposer
        .import(rows, mode, &name, &who, dry_run, q.skip_invalid.unwrap_or(false))
        .await?;
    let status = if outcome.batch.is_some() {
        axum::http::StatusCode::CREATED
    } else if outcome.invalid > 0 && !dry_run {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "dry_run": dry_run,
            "stored": outcome.batch.is_some(),
            "valid": outcome.valid,
            "invalid": outcome.invalid,
            "rows": outcome.rows,
            "batch": outcome.batch,
        })),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/imports",
    tag = "imports",
    responses((status = 200, description = "import batches", body = Object), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn list_imports(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.proposer.store().clone();
    let batches = run(move || store.batches(100)).await?;
    Ok(Json(json!({ "imports": batches })))
}

#[utoipa::path(
    get,
    path = "/api/v1/imports/{id}",
    tag = "imports",
    params(("id" = i64, Path, description = "the batch")),
    responses((status = 200, description = "one batch with its rows", body = Object), (status = 404, description = "no such batch"), (status = 401, description = "no token, or not one that may do this")),
    security(("bearer" = []))
)]
pub async fn get_import(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let store = state.proposer.store().clone();
    let batch = run(move || store.batch(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no import batch {id}")))?;
    Ok(Json(json!({ "import": batch })))
}

/// The same as `POST /api/v1/machines/{mac}/approve`, under the proposal's path.
#[utoipa::path(
    post,
    path = "/api/v1/proposals/{mac}/approve",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …}"),
    responses((status = 200, description = "approved", body = Object), (status = 409, description = "not open"), (status = 401, description = "no token"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn approve_proposal(
    state: State<AppState>,
    session: Session,
    caller: NamedCaller,
    mac: Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    approve(state, session, caller, mac, body).await
}

/// The same as `POST /api/v1/machines/{mac}/reject`, under the proposal's path.
#[utoipa::path(
    post,
    path = "/api/v1/proposals/{mac}/reject",
    tag = "review",
    params(("mac" = String, Path, description = "the machine's MAC")),
    request_body(content = Option<Object>, content_type = "application/json", description = "optional: {\"actor\": …, \"reason\": …}"),
    responses((status = 200, description = "rejected", body = Object), (status = 409, description = "already merged"), (status = 401, description = "no token"), (status = 403, description = "the caller's role does not allow it")),
    security(("bearer" = []))
)]
pub async fn reject_proposal(
    state: State<AppState>,
    session: Session,
    caller: NamedCaller,
    mac: Path<String>,
    body: Option<Json<ReviewBody>>,
) -> Result<Json<Value>, ApiError> {
    reject(state, session, caller, mac, body).await
}
