//! GitHub REST calls, made the way `../shared/docs/github-bot-practices.md` asks:
//!
//! - octocrab carries auth and the base URL (GitHub Enterprise: `…/api/v3`); its own
//!   retries are off, since it would resend a pull-request POST that a 502 may have hidden;
//! - reads and idempotent writes are retried here on 5xx and timeouts with exponential
//!   backoff and full jitter; a create is never resent blindly — the caller looks first;
//! - one gate per installation: mutations are serialised and paced, and any rate-limit
//!   answer (primary or secondary, 403 or 429) pauses every request until `Retry-After`
//!   or `x-ratelimit-reset`;
//! - every call is counted by kind, so the cost per proposal can be measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use serde_json::Value;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum GhError {
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
        body: Value,
    },
    #[error("GitHub did not answer {method} {path} ({detail}); it may or may not have acted")]
    Ambiguous {
        method: Method,
        path: String,
        detail: String,
    },
    #[error("GitHub's answer to {method} {path} is not what its API describes: {detail}")]
    Unreadable {
        method: Method,
        path: String,
        detail: String,
    },
    #[error("GitHub keeps refusing {method} {path}: {detail}")]
    GaveUp {
        method: Method,
        path: String,
        detail: String,
    },
}

impl GhError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            GhError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `errors[].message` texts of a 422, where GitHub says what failed validation.
    pub fn validation_messages(&self) -> Vec<String> {
        match self {
            GhError::Status { body, .. } => body["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["message"].as_str().or_else(|| e["code"].as_str()).map(str::to_string))
                .chain(body["message"].as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    }
}

/// How a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// GET: retried freely.
    Read,
    /// PATCH/PUT/DELETE and label adds: the same request twice has the same effect.
    Idempotent,
    /// POST that creates something (a pull request, a comment): never resent on an
    /// ambiguous failure.
    Create,
}

#[derive(Debug)]
pub struct Counters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub creates: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Conditional reads GitHub answered 304 Not Modified: they cost no rate limit.
    pub not_modified: AtomicU64,
    pub retries: AtomicU64,
    /// Calls that failed in the end (gave up, ambiguous, or refused other than 404/422,
    /// which callers expect as answers).
    pub errors: AtomicU64,
    /// `x-ratelimit-remaining` of the latest answer; -1 before the first.
    pub remaining: std::sync::atomic::AtomicI64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            creates: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            remaining: std::sync::atomic::AtomicI64::new(-1),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Pacing {
    /// Minimum time between two mutations.
    pub mutation_interval: Duration,
    /// At most this many mutations per `minute` and per `hour` (sliding windows). GitHub's
    /// secondary limits allow about 80 content-creating requests a minute and 500 an hour;
    /// the windows are parameters so a benchmark can run the same pacing faster.
    pub per_minute: usize,
    pub per_hour: usize,
    pub minute: Duration,
    pub hour: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_attempts: u32,
    pub timeout: Duration,
}

impl Pacing {
    /// When the next mutation may be sent, given when earlier ones were (oldest first;
    /// entries older than an hour are dropped).
    pub fn next_slot(&self, sent: &mut std::collections::VecDeque<Instant>, now: Instant) -> Instant {
        while sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.hour)
        {
            sent.pop_front();
        }
        let mut next = sent.back().map(|t| *t + self.mutation_interval).unwrap_or(now);
        let in_window = |window: Duration| {
            sent.iter()
                .filter(|t| now.saturating_duration_since(**t) < window)
                .count()
        };
        if self.per_minute > 0 && in_window(self.minute) >= self.per_minute {
            // The slot frees when the oldest send within the window leaves it.
            let oldest = sent
                .iter()
                .rev()
                .take(self.per_minute)
                .next_back()
                .copied()
                .unwrap_or(now);
            next = next.max(oldest + self.minute);
        }
        if self.per_hour > 0 && sent.len() >= self.per_hour {
            let oldest = sent
                .iter()
                .rev()
                .take(self.per_hour)
                .next_back()
                .copied()
                .unwrap_or(now);
            next = next.max(oldest + self.hour);
        }
        next.max(now)
    }
}

pub struct Client {
    octo: Octocrab,
    pacing: Pacing,
    /// Serialises mutations (merges first) and remembers when they were sent (budgets).
    mutations: super::gate::MutationGate,
    /// Every request waits until this instant (set by rate-limit answers).
    paused_until: Mutex<Option<Instant>>,
    /// The last answer to each conditional read (a few listing pages): its ETag and body.
    cached: std::sync::Mutex<std::collections::HashMap<String, (http::HeaderValue, Value)>>,
    pub counters: Arc<Counters>,
}

pub struct Reply {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The body as one of octocrab's models (a pull request, labels, a comment).
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, GhError> {
        serde_json::from_value(self.body).map_err(|e| GhError::Unreadable {
            method: self.method,
            path: self.path,
            detail: e.to_string(),
        })
    }
}

impl Client {
    pub fn new(octo: Octocrab, pacing: Pacing) -> Self {
        Client {
            octo,
            pacing,
            mutations: Default::default(),
            paused_until: Mutex::new(None),
            cached: Default::default(),
            counters: Arc::new(Counters::default()),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Reply, GhError> {
        self.call(Method::GET, path, None, Kind::Read).await
    }

    /// A read that GitHub may answer "304 Not Modified" (which costs no rate limit): the
    /// last answer's ETag goes with it, and a 304 gives back that answer's body. Returns the
    /// reply and whether it changed. For the few paths that are read again and again (the
    /// reconcile's listings), so the cache stays small.
    pub async fn get_if_changed(&self, path: &str) -> Result<(Reply, bool), GhError> {
        let cached = self.cache().get(path).cloned();
        let mut headers = HeaderMap::new();
        if let Some((etag, _)) = &cached {
            headers.insert(http::header::IF_NONE_MATCH, etag.clone());
        }
        let reply = self.call_with(Method::GET, path, None, Kind::Read, headers).await?;
        if reply.status == StatusCode::NOT_MODIFIED
            && let Some((_, body)) = cached
        {
            self.counters.not_modified.fetch_add(1, Ordering::Relaxed);
            return Ok((
                Reply {
                    status: StatusCode::OK,
                    body,
                    ..reply
                },
                false,
            ));
        }
        if let Some(etag) = reply.headers.get(http::header::ETAG) {
            self.cache()
                .insert(path.to_string(), (etag.clone(), reply.body.clone()));
        }
        Ok((reply, true))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (http::HeaderValue, Value)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one request, retrying as its kind allows. Non-2xx answers other than rate
    /// limits and server errors come back as `GhError::Status` for the caller to judge.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>, kind: Kind) -> Result<Reply, GhError> {
        self.call_with(method, path, body, kind, HeaderMap::new()).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        kind: Kind,
        headers: HeaderMap,
    ) -> Result<Reply, GhError> {
        let result = self.call_once(method, path, body, kind, &headers).await;
        let expected = matches!(&result, Err(GhError::Status { status, .. }) if *status == StatusCode::NOT_FOUND || *status == StatusCode::UNPROCESSABLE_ENTITY);
        if result.is_err() && !expected {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        kind: Kind,
        headers: &HeaderMap,
    ) -> Result<Reply, GhError> {
        let mutation = method != Method::GET;
        // Holding the mutation gate across the attempts keeps mutations strictly serial.
        let mut last_mutation = if mutation {
            Some(self.mutations.enter(super::gate::is_urgent(&method, path)).await)
        } else {
            None
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_if_paused().await;
            if let Some(sent) = last_mutation.as_deref_mut() {
                let next = self.pacing.next_slot(sent, Instant::now());
                if next > Instant::now() {
                    tokio::time::sleep_until(next.into()).await;
                }
                sent.push_back(Instant::now());
            }
            match kind {
                Kind::Read => self.counters.reads.fetch_add(1, Ordering::Relaxed),
                Kind::Idempotent => self.counters.writes.fetch_add(1, Ordering::Relaxed),
                Kind::Create => self.counters.creates.fetch_add(1, Ordering::Relaxed),
            };
            let outcome = tokio::time::timeout(self.pacing.timeout, self.send(&method, path, body, headers)).await;
            let detail = match outcome {
                Err(_) => format!("no answer within {:?}", self.pacing.timeout),
                Ok(Err(e)) => format!("transport: {e}"),
                Ok(Ok(reply)) => {
                    if let Some(left) = reply
                        .headers
                        .get("x-ratelimit-remaining")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                    {
                        self.counters.remaining.store(left, Ordering::Relaxed);
                    }
                    if let Some(wait) = rate_limit_wait(reply.status, &reply.headers, &reply.body) {
                        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%method, path, wait = ?wait, "GitHub rate limit: pausing all requests");
                        self.pause(wait).await;
                        if attempt < self.pacing.max_attempts * 2 {
                            // A limited request was not carried out: safe to send again.
                            continue;
                        }
                        return Err(GhError::GaveUp {
                            method,
                            path: path.into(),
                            detail: "rate limited".into(),
                        });
                    }
                    if reply.status.is_server_error() {
                        format!("{}", reply.status)
                    } else if reply.status.is_success() || reply.status == StatusCode::NOT_MODIFIED {
                        return Ok(reply);
                    } else {
                        let message = reply.body["message"].as_str().unwrap_or_default().to_string();
                        return Err(GhError::Status {
                            method,
                            path: path.into(),
                            status: reply.status,
                            message,
                            body: reply.body,
                        });
                    }
                }
            };
            if kind == Kind::Create {
                return Err(GhError::Ambiguous {
                    method,
                    path: path.into(),
                    detail,
                });
            }
            if attempt >= self.pacing.max_attempts {
                return Err(GhError::GaveUp {
                    method,
                    path: path.into(),
                    detail,
                });
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        headers: &HeaderMap,
    ) -> Result<Reply, octocrab::Error> {
        let resp = match *method {
            Method::GET if !headers.is_empty() => self.octo._get_with_headers(path, Some(headers.clone())).await?,
            Method::GET => self.octo._get(path).await?,
            Method::POST => self.octo._post(path, body).await?,
            Method::PATCH => self.octo._patch(path, body).await?,
            Method::PUT => self.octo._put(path, body).await?,
            Method::DELETE => self.octo._delete(path, body).await?,
            _ => unreachable!("only the REST verbs are used"),
        };
        let (parts, body) = resp.into_parts();
        let bytes: Bytes = body.collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok(Reply {
            method: method.clone(),
            path: path.to_string(),
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn wait_if_paused(&self) {
        let until = *self.paused_until.lock().await;
        if let Some(until) = until
            && until > Instant::now()
        {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    async fn pause(&self, wait: Duration) {
        let mut until = self.paused_until.lock().await;
        let new = Instant::now() + wait;
        if until.is_none_or(|u| u < new) {
            *until = Some(new);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .pacing
            .retry_cap
            .min(self.pacing.retry_base.saturating_mul(1 << attempt.min(16)));
        cap.mul_f64(rand::random::<f64>())
    }
}

/// How long a rate-limit answer asks us to wait, if it is one. Primary limits carry
/// `x-ratelimit-remaining: 0`; secondary limits say so in the message; both may come as
/// 403 or 429; `Retry-After` (seconds or an HTTP date) wins when present.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, body: &Value) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let message = body["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    let secondary = message.contains("secondary rate limit") || message.contains("abuse detection");
    let primary = header("x-ratelimit-remaining").as_deref() == Some("0");
    if !(secondary || primary || status == StatusCode::TOO_MANY_REQUESTS || header("retry-after").is_some()) {
        return None; // a permission problem: do not retry
    }
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(date) = httpdate::parse_http_date(&v) {
            return Some(date.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    if primary && let Some(reset) = header("x-ratelimit-reset").and_then(|r| r.parse::<u64>().ok()) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    Some(Duration::from_secs(60))
}

/// Percent-encodes a path segment (label names contain `/`).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A listing's pull requests, each read with octocrab's model: one that does not fit it
/// (a field a GitHub Enterprise version lacks) is skipped and said, not the whole page.
pub(super) fn pulls(reply: Reply) -> Result<Vec<super::PullRequest>, GhError> {
    let path = reply.path.clone();
    let items: Vec<serde_json::Value> = reply.parse()?;
    Ok(items
        .into_iter()
        .filter_map(|item| match serde_json::from_value::<octocrab::models::pulls::PullRequest>(item) {
            Ok(pr) => Some(super::PullRequest::from(pr)),
            Err(e) => {
                tracing::warn!(%path, error = %e, "a pull request in the listing is not as GitHub describes it; skipped");
                None
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tells_rate_limits_from_permission_problems() {
        let secondary = serde_json::json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."});
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &headers(&[("retry-after", "7")]), &secondary),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), &secondary),
            Some(Duration::from_secs(60))
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let primary = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(now + 30).to_string()),
        ]);
        let wait = rate_limit_wait(
            StatusCode::FORBIDDEN,
            &primary,
            &serde_json::json!({"message": "API rate limit exceeded"}),
        )
        .unwrap();
        assert!(
            wait >= Duration::from_secs(29) && wait <= Duration::from_secs(32),
            "{wait:?}"
        );
        let forbidden = serde_json::json!({"message": "Resource not accessible by integration"});
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), &forbidden),
            None
        );
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(10));
        let w = rate_limit_wait(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", &date)]),
            &Value::Null,
        )
        .unwrap();
        assert!(w <= Duration::from_secs(10) && w >= Duration::from_secs(8));
    }

    #[test]
    fn budgets_pace_mutations() {
        let p = Pacing {
            mutation_interval: Duration::ZERO,
            per_minute: 3,
            per_hour: 5,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
            retry_base: Duration::ZERO,
            retry_cap: Duration::ZERO,
            max_attempts: 1,
            timeout: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut sent = std::collections::VecDeque::new();
        let mut at = t0;
        let mut times = vec![];
        for _ in 0..6 {
            at = p.next_slot(&mut sent, at);
            sent.push_back(at);
            times.push(at.duration_since(t0).as_secs());
        }
        // Three at once, three more a minute later, but the hour allows five: the sixth waits an hour.
        assert_eq!(times, [0, 0, 0, 60, 60, 3600]);
    }

    #[test]
    fn label_names_are_encoded() {
        assert_eq!(segment("workflow/ubuntu-2404"), "workflow%2Fubuntu-2404");
    }
}
