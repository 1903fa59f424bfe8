//! The REST API as GitHub answers it: routing, conditional requests, pull requests,
//! merges in the bare repository, labels, comments and App installation tokens.

use super::*;

pub(super) fn head_sha(repo: &std::path::Path, branch: &str) -> String {
    git2::Repository::open_bare(repo)
        .ok()
        .and_then(|r| r.refname_to_id(&format!("refs/heads/{branch}")).ok())
        .map(|o| o.to_string())
        .unwrap_or_default()
}

pub(super) fn pull_json(p: &Pull, repo: &std::path::Path) -> Value {
    shapes::pull(p, &head_sha(repo, &p.head))
}

pub(super) fn heads_of_open_pulls(gh: &FakeGithub) -> Vec<(u64, String)> {
    let repo = gh.repo().path;
    let pulls = gh.pulls();
    pulls
        .iter()
        .filter(|p| p.open && p.fork.is_none())
        .map(|p| (p.number, head_sha(&repo, &p.head)))
        .collect()
}

/// GitHub keeps every pull request's head at `refs/pull/<n>/head` in the base repository.
pub(super) fn set_pull_ref(repo: &std::path::Path, number: u64, branch: &str) {
    let repo = git2::Repository::open_bare(repo).unwrap();
    let head = repo.refname_to_id(&format!("refs/heads/{branch}")).unwrap();
    repo.reference(&format!("refs/pull/{number}/head"), head, true, "pull request head")
        .unwrap();
}

pub(super) fn merge_in_repo(path: &std::path::Path, head: &str, base: &str, message: &str) {
    super::super::Repo::at(path).merge(head, base, message, "GitHub");
}

pub(super) fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            ("content-type", "application/json; charset=utf-8"),
            ("x-ratelimit-remaining", "4999"),
        ],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl GhState {
    fn token_ok(&self, token: &str) -> bool {
        token == TOKEN || self.installation_tokens.iter().any(|t| t == token)
    }
}

/// `POST /app/installations/{id}/access_tokens`: the App proves itself with an RS256 JWT.
pub(super) fn access_token(gh: &FakeGithub, headers: &HeaderMap) -> Response {
    let mut st = gh.state.lock().unwrap();
    let Some((app_id, public_pem)) = st.app.clone() else {
        return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // GitHub's iss is the App id as a number; it is checked below.
    validation.set_required_spec_claims(&["exp", "iat"]);
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
        Ok(data)
            if data.claims["iss"].as_u64() == Some(app_id)
                || data.claims["iss"].as_str() == Some(&app_id.to_string()) =>
        {
            let token = format!("ghs_{}", hex::encode(rand::random::<[u8; 16]>()));
            st.installation_tokens.push(token.clone());
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            reply(
                StatusCode::CREATED,
                json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "permissions": {}, "repository_selection": "all"}),
            )
        }
        other => reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": format!("A JSON web token could not be decoded: {other:?}")}),
        ),
    }
}

pub(super) async fn route(
    State(gh): State<FakeGithub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path.starts_with(&format!("/{OWNER}/{REPO}.git/")) {
        // Git over HTTPS: basic auth, `x-access-token` and a token as the password.
        use base64::Engine;
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()))
            .unwrap_or_default();
        let password = if gh.state.lock().unwrap().token_ok(&presented) {
            presented
        } else {
            TOKEN.to_string()
        };
        let pushing = method == Method::POST && path.ends_with("/git-receive-pack");
        let before: Vec<(u64, String)> = heads_of_open_pulls(&gh);
        let response =
            super::super::git_http::serve(&gh.root, "x-access-token", &password, method, uri, headers, body).await;
        if pushing && gh.state.lock().unwrap().push_webhooks {
            for (number, sha) in before {
                if heads_of_open_pulls(&gh).iter().any(|(n, s)| *n == number && *s != sha) {
                    gh.deliver_pr("synchronize", number, "registrar[bot]", None).await;
                    // The pusher is still waiting for its answer while the delivery is
                    // handled: the order GitHub cannot promise, made the likely one here.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        return response;
    }
    if method == Method::POST && path.starts_with("/app/installations/") && path.ends_with("/access_tokens") {
        return access_token(&gh, &headers);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if !gh.state.lock().unwrap().token_ok(&bearer) {
        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Bad credentials"}));
    }
    if method == Method::POST && path == "/graphql" {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return super::graphql::graphql(&gh, &body);
    }
    let Some(rest) = path.strip_prefix(&format!("/repos/{OWNER}/{REPO}")) else {
        return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let rest = rest.to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Faults, decided before the request is carried out (except the 5xx-after-create).
    let (fault_5xx, fault_limit, fault_timeout, timeout_for) = {
        let mut st = gh.state.lock().unwrap();
        let method_s = method.to_string();
        let sent = st.times_sent.entry((method_s.clone(), path.clone())).or_default();
        let nth = *sent;
        *sent += 1;
        st.requests.push((method_s.clone(), path.clone()));
        let f = st.faults.clone();
        let roll = |fault: &str| f.roll(fault, &method_s, &path, nth);
        let mut limit = method != Method::GET && roll("secondary-limit") < f.secondary_limits;
        if let (Some((per_minute, minute, per_hour, hour)), true) = (f.secondary_budget, method != Method::GET) {
            let now = std::time::Instant::now();
            let in_window = |w: Duration| st.mutation_times.iter().filter(|t| now.duration_since(**t) < w).count();
            if in_window(minute) >= per_minute || in_window(hour) >= per_hour {
                limit = true;
            } else {
                st.mutation_times.push(now);
            }
        }
        if limit {
            st.secondary_limit_hits += 1;
        }
        (
            roll("server-error") < f.server_errors,
            limit,
            roll("timeout") < f.timeouts,
            f.timeout_for,
        )
    };
    while gh.state.lock().unwrap().held.iter().any(|h| path.ends_with(h.as_str())) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if fault_limit {
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json"), ("retry-after", "1")],
            json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}).to_string(),
        )
            .into_response();
    }
    if fault_timeout {
        tokio::time::sleep(timeout_for).await;
    }
    let is_create = method == Method::POST && rest == "/pulls";
    if is_create && gh.state.lock().unwrap().refuse_creates {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by integration"}),
        );
    }
    if fault_5xx && !is_create {
        return reply(StatusCode::BAD_GATEWAY, json!({"message": "Server Error"}));
    }
    let response = handle(&gh, &method, &rest, &uri, &body);
    if fault_5xx && is_create {
        // The pull request was created, but the answer is lost: the ambiguous case.
        return reply(StatusCode::BAD_GATEWAY, json!({"message": "Server Error"}));
    }
    if method == Method::GET && response.status() == StatusCode::OK {
        return conditional(&gh, &headers, response).await;
    }
    response
}

/// Like GitHub, every 200 to a GET carries an ETag, and a GET whose `If-None-Match` names
/// the current one is answered 304 with no body (and, on GitHub, costs no rate limit).
pub(super) async fn conditional(gh: &FakeGithub, headers: &HeaderMap, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let etag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        format!("\"{:016x}\"", h.finish())
    };
    let matches = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    parts.headers.insert("etag", etag.parse().unwrap());
    if matches {
        gh.state.lock().unwrap().not_modified += 1;
        parts.status = StatusCode::NOT_MODIFIED;
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

pub(super) fn handle(gh: &FakeGithub, method: &Method, rest: &str, uri: &Uri, body: &Value) -> Response {
    let repo_path = gh.repo().path;
    let mut st = gh.state.lock().unwrap();
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["pulls"]) => {
            let q = query(uri);
            let state = q.get("state").map(String::as_str).unwrap_or("open");
            // Like GitHub: `head` filters only in `owner:branch` form.
            let head = q
                .get("head")
                .and_then(|h| h.split_once(':'))
                .map(|(_, b)| b.to_string());
            let mut list: Vec<&Pull> = st
                .pulls
                .iter()
                .filter(|p| state == "all" || (state == "open") == p.open)
                .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
                .collect();
            list.sort_by_key(|p| std::cmp::Reverse(p.number));
            let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
            let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let items: Vec<Value> = list
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|p| pull_json(p, &repo_path))
                .collect();
            reply(StatusCode::OK, Value::Array(items))
        }
        ("POST", ["pulls"]) => {
            let head = body["head"].as_str().unwrap_or_default().to_string();
            let base = body["base"].as_str().unwrap_or_default().to_string();
            if head_sha(&repo_path, &head).is_empty() {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]}),
                );
            }
            if st.pulls.iter().any(|p| p.open && p.head == head) {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": format!("A pull request already exists for {OWNER}:{head}.")}]}),
                );
            }
            let number = st.next_number();
            let pull = Pull {
                body: body["body"].as_str().unwrap_or_default().into(),
                base,
                ..Pull::opened(number, &head, body["title"].as_str().unwrap_or_default(), None)
            };
            st.pulls.push(pull.clone());
            set_pull_ref(&repo_path, number, &pull.head);
            reply(StatusCode::CREATED, pull_json(&pull, &repo_path))
        }
        ("GET", ["pulls", n]) => match st.pulls.iter().find(|p| p.number.to_string() == *n) {
            Some(p) => reply(StatusCode::OK, pull_json(p, &repo_path)),
            None => reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        },
        ("PATCH", ["pulls", n]) => {
            let Some(p) = st.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            if let Some(t) = body["title"].as_str() {
                p.title = t.into();
            }
            if let Some(b) = body["body"].as_str() {
                p.body = b.into();
            }
            if let Some(s) = body["state"].as_str() {
                p.open = s == "open";
            }
            let p = p.clone();
            reply(StatusCode::OK, pull_json(&p, &repo_path))
        }
        ("PUT", ["pulls", n, "merge"]) => {
            if st.protected {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"message": "At least 1 approving review is required by reviewers with write access."}),
                );
            }
            let Some(p) = st.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            // GitHub merges only open pull requests.
            if p.merged || !p.open {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    json!({"message": "Pull Request is not mergeable"}),
                );
            }
            if body["sha"].as_str().is_none() {
                st.unpinned_merges += 1;
            }
            let Some(p) = st.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            if let Some(sha) = body["sha"].as_str()
                && sha != head_sha(&repo_path, &p.head)
            {
                return reply(
                    StatusCode::CONFLICT,
                    json!({"message": "Head branch was modified. Review and try the merge again."}),
                );
            }

            merge_in_repo(
                &repo_path,
                &p.head,
                &p.base,
                body["commit_title"].as_str().unwrap_or("merge"),
            );
            p.merged = true;
            p.open = false;
            p.merged_by = Some("registrar[bot]".into());
            if st.faults.merge_answer_lost {
                return reply(StatusCode::BAD_GATEWAY, json!({"message": "Server Error"}));
            }
            reply(
                StatusCode::OK,
                json!({"merged": true, "message": "Pull Request successfully merged"}),
            )
        }
        ("GET", ["labels"]) => reply(
            StatusCode::OK,
            Value::Array(
                st.labels
                    .iter()
                    .map(|(n, (c, d))| shapes::label_with(n, c, d))
                    .collect(),
            ),
        ),
        ("POST", ["labels"]) => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if st.labels.contains_key(&name) {
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "Label", "code": "already_exists", "field": "name"}]}),
                );
            }
            let (color, description) = (
                body["color"].as_str().unwrap_or("ededed").to_string(),
                body["description"].as_str().unwrap_or_default().to_string(),
            );
            let created = shapes::label_with(&name, &color, &description);
            st.labels.insert(name, (color, description));
            reply(StatusCode::CREATED, created)
        }
        ("POST", ["issues", n, "labels"]) => {
            let names: Vec<String> = body["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect();
            for l in &names {
                // Unknown names become grey labels without a description, as on GitHub.
                st.labels.entry(l.clone()).or_insert(("ededed".into(), String::new()));
            }
            let Some(p) = st.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            for l in names {
                if !p.labels.contains(&l) {
                    p.labels.push(l);
                }
            }
            reply(
                StatusCode::OK,
                Value::Array(p.labels.iter().map(|l| shapes::label(l)).collect()),
            )
        }
        ("DELETE", ["issues", n, "labels", name]) => {
            let name = percent_decode(name);
            let Some(p) = st.pulls.iter_mut().find(|p| p.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            if !p.labels.contains(&name) {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Label does not exist"}));
            }
            p.labels.retain(|l| *l != name);
            reply(
                StatusCode::OK,
                Value::Array(p.labels.iter().map(|l| shapes::label(l)).collect()),
            )
        }
        ("GET", ["issues"]) => {
            let q = query(uri);
            let state = q.get("state").map(String::as_str).unwrap_or("open");
            let label = q.get("labels").cloned();
            // Like GitHub, the list holds pull requests too (with a `pull_request` key).
            let mut items: Vec<Value> = st
                .issues
                .iter()
                .filter(|i| state == "all" || (state == "open") == i.open)
                .filter(|i| label.as_ref().is_none_or(|l| i.labels.contains(l)))
                .map(shapes::issue)
                .collect();
            if label.is_none() {
                items.extend(st.pulls.iter().filter(|p| state == "all" || (state == "open") == p.open).map(|p| {
                    let mut i = shapes::issue(&Issue { number: p.number, title: p.title.clone(), body: p.body.clone(), labels: p.labels.clone(), open: p.open, edits: 0 });
                    i["pull_request"] = json!({"url": format!("https://api.github.example/repos/{OWNER}/{REPO}/pulls/{}", p.number)});
                    i
                }));
            }
            reply(StatusCode::OK, Value::Array(items))
        }
        ("POST", ["issues"]) => {
            let issue = Issue {
                number: st.next_number(),
                title: body["title"].as_str().unwrap_or_default().into(),
                body: body["body"].as_str().unwrap_or_default().into(),
                labels: body["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect(),
                open: true,
                edits: 0,
            };
            st.issues.push(issue.clone());
            reply(StatusCode::CREATED, shapes::issue(&issue))
        }
        ("PATCH", ["issues", n]) => {
            let Some(i) = st.issues.iter_mut().find(|i| i.number.to_string() == *n) else {
                return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
            };
            if let Some(b) = body["body"].as_str() {
                i.body = b.into();
                i.edits += 1;
            }
            if let Some(s) = body["state"].as_str() {
                i.open = s == "open";
            }
            let i = i.clone();
            reply(StatusCode::OK, shapes::issue(&i))
        }
        ("GET", ["issues", "comments"]) => {
            // Every comment of the repository, oldest first (the fake keeps no times, so
            // `since` is not applied: Registrar must carry each comment out once anyway).
            let q = query(uri);
            let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
            let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let items: Vec<Value> = st
                .comments
                .iter()
                .flat_map(|(number, texts)| texts.iter().enumerate().map(move |(i, text)| (*number, i, text)))
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(number, i, text)| {
                    let id = number * 10_000 + i as u64 + 1;
                    let mut c = match st.comment_authors.get(&id) {
                        Some(by) => shapes::comment_by(id, text, by, "User"),
                        None => shapes::comment(id, text, "registrar[bot]"),
                    };
                    c["issue_url"] = json!(format!("https://api.example/repos/{OWNER}/{REPO}/issues/{number}"));
                    c
                })
                .collect();
            reply(StatusCode::OK, Value::Array(items))
        }
        ("GET", ["issues", n, "comments"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            let q = query(uri);
            let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
            let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let items: Vec<Value> = st
                .comments
                .get(&number)
                .into_iter()
                .flatten()
                .enumerate()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(i, text)| {
                    let id = number * 10_000 + i as u64 + 1;
                    match st.comment_authors.get(&id) {
                        Some(by) => shapes::comment_by(id, text, by, "User"),
                        None => shapes::comment(id, text, "registrar[bot]"),
                    }
                })
                .collect();
            reply(StatusCode::OK, Value::Array(items))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let (number, index) = (id / 10_000, (id % 10_000) as usize);
            let text = body["body"].as_str().unwrap_or_default().to_string();
            match st
                .comments
                .get_mut(&number)
                .and_then(|c| c.get_mut(index.wrapping_sub(1)))
            {
                Some(slot) => {
                    *slot = text.clone();
                    reply(StatusCode::OK, shapes::comment(id, &text, "registrar[bot]"))
                }
                None => reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["collaborators", login, "permission"]) => {
            let role = st.roles.get(*login).cloned().unwrap_or_else(|| "read".into());
            // `permission` is the legacy name: maintain reads as write, triage as read.
            let permission = match role.as_str() {
                "maintain" => "write",
                "triage" => "read",
                other => other,
            };
            reply(
                StatusCode::OK,
                json!({"permission": permission, "role_name": role, "user": shapes::user(login, "User")}),
            )
        }
        ("POST", ["issues", n, "comments"]) => {
            let number: u64 = n.parse().unwrap_or(0);
            let text = body["body"].as_str().unwrap_or_default().to_string();
            let comments = st.comments.entry(number).or_default();
            comments.push(text.clone());
            let id = number * 10_000 + comments.len() as u64;
            reply(StatusCode::CREATED, shapes::comment(id, &text, "registrar[bot]"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        ),
    }
}
