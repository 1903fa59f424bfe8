//! The console's pages and forms. Handlers gather data and hand it to a template; the
//! decisions (approve, reject, import) are the proposer's, exactly as for the API.
// Both arms of a page's result are an HTTP response (the error one is the error page):
// boxing one would only add an allocation to every page.
#![allow(clippy::result_large_err)]

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::session::Operator;
use crate::server::AppState;
use crate::store::StoreError;

mod audit;
mod impact;
mod imports;
mod list;
mod login;
mod machine;
mod status;

pub use audit::audit;
pub use impact::impact;
pub use imports::{batches, import_page, import_post};
pub use list::{bulk, machines};
pub use login::{login, login_page, logout, oidc_begin, oidc_callback};
pub use machine::{machine, machine_action};
pub use status::{events, status};

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

/// The page for a store that failed to answer.
fn store_error(state: &AppState, op: &Operator, e: &StoreError) -> Response {
    error_page(
        state,
        op,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Store error",
        &e.to_string(),
        None,
    )
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

// ---- messages after a redirect ---------------------------------------------------------

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
