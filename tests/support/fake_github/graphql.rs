//! The fake's GraphQL endpoint.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::api::reply;
use super::{FakeGithub, shapes};

/// GitHub's GraphQL, as far as Registrar uses it: `enable`/`disablePullRequestAutoMerge`. Like
/// GitHub, errors come back with 200 and an `errors` list.
pub(super) fn graphql(gh: &FakeGithub, body: &Value) -> Response {
    let query = body["query"].as_str().unwrap_or_default();
    let enable = query.contains("enablePullRequestAutoMerge");
    if !enable && !query.contains("disablePullRequestAutoMerge") {
        let message = "the fake knows only enable/disablePullRequestAutoMerge";
        return reply(StatusCode::OK, json!({"errors": [{"message": message}]}));
    }
    let id = body["variables"]["id"].as_str().unwrap_or_default();
    let mut st = gh.state.lock().unwrap();
    st.requests.push(("POST".into(), "/graphql".into()));
    let checks = st.required_checks;
    let Some(p) = st.pulls.iter_mut().find(|p| shapes::node_id(p.number) == id) else {
        let message = format!("Could not resolve to a node with the global id of '{id}'");
        return reply(
            StatusCode::OK,
            json!({"errors": [{"type": "NOT_FOUND", "message": message}]}),
        );
    };
    if !p.open {
        return reply(
            StatusCode::OK,
            json!({"errors": [{"message": "Pull request is closed"}]}),
        );
    }
    if !enable {
        p.auto_merge = false;
        let number = p.number;
        let data = json!({"disablePullRequestAutoMerge": {"pullRequest": {"number": number}}});
        return reply(StatusCode::OK, json!({ "data": data }));
    }
    if !checks {
        return reply(
            StatusCode::OK,
            json!({"errors": [{"message": "Pull request is in clean status"}]}),
        );
    }
    p.auto_merge = true;
    let number = p.number;
    reply(
        StatusCode::OK,
        json!({"data": {"enablePullRequestAutoMerge": {"pullRequest": {"number": number}}}}),
    )
}
