//! Importing expected machines from a file, and the list of import batches.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{Value, context};

use super::{Done, PageResult, actor, error_page, flash, page, run, ser, store_error};
use crate::domain::ImportMode;
use crate::server::AppState;
use crate::server::console::session::Operator;
use crate::server::console::view::ago;
use crate::sources::import as csv_import;

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
                        super::super::MAX_IMPORT_BYTES >> 20
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
    let batches = run(move || store.batches(50))
        .await
        .map_err(|e| store_error(&state, &op, &e))?;
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
