//! The audit trail: every step a person took, newest first, one person's if asked.

use axum::Extension;
use axum::extract::{Query, State};
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;

use super::{PAGE, PageResult, page, run, store_error};
use crate::server::AppState;
use crate::server::console::session::Operator;
use crate::server::console::view::ago;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    before: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    Extension(op): Extension<Operator>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let store = state.proposer.store().clone();
    let actor = q.actor.clone().filter(|a| !a.is_empty());
    let wanted = actor.clone();
    let entries = run(move || store.audit(wanted.as_deref(), q.before, PAGE))
        .await
        .map_err(|e| store_error(&state, &op, &e))?;
    let now = Utc::now();
    let query = |pairs: &[(&str, &str)]| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        format!("/audit?{}", q.finish())
    };
    let older = (entries.len() == PAGE as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten()
        .map(|id| {
            let id = id.to_string();
            match actor.as_deref() {
                Some(a) => query(&[("before", &id), ("actor", a)]),
                None => query(&[("before", &id)]),
            }
        });
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            context! {
                id => e.id, at => e.at.to_rfc3339(), ago => ago(e.at, now), actor => &e.actor,
                actor_href => query(&[("actor", &e.actor)]), mac => &e.mac, action => &e.action,
            }
        })
        .collect();
    page(
        &state,
        "audit.html",
        context! { title => "Audit", nav => "audit", user => &op.user, csrf => &op.csrf, rows, actor, older },
    )
}
