//! The operator's API: machines, proposals, and reviews on the local forge.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::domain::{Mac, ProposalState, State as MachineState};
use crate::store::MachineQuery;

fn parse_mac(raw: &str) -> Result<Mac, ApiError> {
    Mac::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)??)
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

pub async fn list_machines(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filter = MachineQuery {
        state: q.state.as_deref().map(str::parse::<MachineState>).transpose().map_err(ApiError::bad_request)?,
        text: q.q.filter(|t| !t.is_empty()).map(|t| t.chars().take(100).collect()),
        limit: q.limit.unwrap_or(100),
        offset: q.offset.unwrap_or(0),
    };
    let store = state.proposer.store().clone();
    let (machines, counts) = run(move || Ok((store.machines(&filter)?, store.count_by_state()?))).await?;
    let counts: serde_json::Map<String, Value> = counts.into_iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    Ok(Json(json!({ "machines": machines, "counts": counts })))
}

pub async fn get_machine(State(state): State<AppState>, Path(mac): Path<String>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let store = state.proposer.store().clone();
    let (machine, transitions, proposal) = run(move || Ok((store.machine(mac)?, store.transitions(mac)?, store.proposal(mac)?))).await?;
    let machine = machine.ok_or_else(|| ApiError::not_found(format!("no machine with MAC {mac}")))?;
    Ok(Json(json!({ "machine": machine, "transitions": transitions, "proposal": proposal })))
}

#[derive(Deserialize, Default)]
pub struct ReviewBody {
    /// Who is acting, for the record (defaults to "api").
    actor: Option<String>,
    reason: Option<String>,
    workflow: Option<String>,
}

fn actor(body: &Option<Json<ReviewBody>>) -> String {
    let who = body.as_ref().and_then(|b| b.actor.clone()).unwrap_or_else(|| "operator".into());
    let who: String = who.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("api:{who}")
}

pub async fn approve(State(state): State<AppState>, Path(mac): Path<String>, body: Option<Json<ReviewBody>>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let machine = state.proposer.approve(mac, &actor(&body)).await?;
    Ok(Json(json!({ "machine": machine })))
}

pub async fn reject(State(state): State<AppState>, Path(mac): Path<String>, body: Option<Json<ReviewBody>>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let reason: String = body.as_ref().and_then(|b| b.reason.clone()).unwrap_or_default().chars().take(500).collect();
    let machine = state.proposer.reject(mac, &actor(&body), &reason).await?;
    Ok(Json(json!({ "machine": machine })))
}

pub async fn unsuppress(State(state): State<AppState>, Path(mac): Path<String>, body: Option<Json<ReviewBody>>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let who = actor(&body);
    let store = state.proposer.store().clone();
    let machine = run(move || store.unsuppress(mac, &who, chrono::Utc::now())).await?;
    state.proposer.wake();
    Ok(Json(json!({ "machine": machine })))
}

pub async fn set_workflow(State(state): State<AppState>, Path(mac): Path<String>, body: Option<Json<ReviewBody>>) -> Result<Json<Value>, ApiError> {
    let mac = parse_mac(&mac)?;
    let workflow = body.as_ref().and_then(|b| b.workflow.clone()).ok_or_else(|| ApiError::bad_request("send {\"workflow\": \"<name>\"}"))?;
    if !state.proposer.renderer().has_workflow(&workflow) {
        let known: Vec<&str> = state.proposer.renderer().workflows().collect();
        return Err(ApiError::unprocessable(format!("no workflow template named {workflow:?}; known: {}", known.join(", "))));
    }
    let who = actor(&body);
    let store = state.proposer.store().clone();
    let machine = run(move || store.set_workflow(mac, &workflow, &who, chrono::Utc::now())).await?;
    state.proposer.wake();
    Ok(Json(json!({ "machine": machine })))
}

#[derive(Deserialize)]
pub struct ProposalQuery {
    state: Option<String>,
}

pub async fn list_proposals(State(state): State<AppState>, Query(q): Query<ProposalQuery>) -> Result<Json<Value>, ApiError> {
    let filter = q.state.as_deref().map(str::parse::<ProposalState>).transpose().map_err(ApiError::bad_request)?;
    let store = state.proposer.store().clone();
    let proposals = run(move || store.proposals(filter)).await?;
    Ok(Json(json!({ "proposals": proposals })))
}

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
