//! What a restart would render differently: the templates this process runs with against
//! the ones in `templates_dir` now (an edited ConfigMap, a `git pull` on the host), for
//! every machine under review or in git, each with its diff. Read-only: nothing is
//! proposed until Registrar restarts with the new templates.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use minijinja::context;

use super::{PageResult, error_page, page};
use crate::propose::impact::compare_store;
use crate::render::Renderer;
use crate::server::AppState;
use crate::server::console::session::Operator;

pub async fn impact(State(state): State<AppState>, Extension(op): Extension<Operator>) -> PageResult {
    let (proposer, dir) = (state.proposer.clone(), state.console.templates_dir.clone());
    let namespace = proposer.renderer().namespace().to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        // Templates that no longer load are the first thing to show, not an error page.
        let after = match Renderer::load(&dir, &namespace) {
            Ok(after) => after,
            Err(e) => return Ok(Err(format!("{e:#}"))),
        };
        compare_store(
            proposer.renderer(),
            &after,
            proposer.store().as_ref(),
            &proposer.pools(),
        )
        .map(Ok)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()))
    .map_err(|e| {
        error_page(
            &state,
            &op,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Impact preview failed",
            &e,
            None,
        )
    })?;
    let (load_error, impact) = match outcome {
        Ok(impact) => (None, Some(impact)),
        Err(e) => (Some(e), None),
    };
    page(
        &state,
        "impact.html",
        context! {
            title => "Template impact", nav => "impact", user => &op.user, csrf => &op.csrf,
            templates_dir => state.console.templates_dir.display().to_string(),
            load_error,
            compared => impact.as_ref().map(|i| i.compared),
            changed => impact.as_ref().map(|i| super::ser(&i.changed)),
        },
    )
}
