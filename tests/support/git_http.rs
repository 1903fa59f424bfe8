//! A smart-HTTP git server for tests: `git http-backend` run as CGI behind axum, with
//! HTTP basic auth, serving bare repositories under one root. The same transport GitHub
//! and every git host speak.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;

#[derive(Clone)]
struct Backend {
    root: PathBuf,
    user: String,
    password: String,
}

pub struct GitHttpServer {
    pub addr: SocketAddr,
}

impl GitHttpServer {
    /// Serves the bare repositories below `root`; pushes need `user`:`password`.
    pub async fn start(root: PathBuf, user: &str, password: &str) -> Self {
        let backend = Backend {
            root,
            user: user.into(),
            password: password.into(),
        };
        let app = Router::new().fallback(cgi).with_state(backend);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        GitHttpServer { addr }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }
}

async fn cgi(State(b): State<Backend>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    serve(&b.root, &b.user, &b.password, method, uri, headers, body).await
}

/// Serves one smart-HTTP request for the bare repositories under `root`, as `git
/// http-backend` would behind a web server, requiring basic auth `user`:`password`.
pub async fn serve(
    root: &std::path::Path,
    user: &str,
    password: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = Backend {
        root: root.to_path_buf(),
        user: user.into(),
        password: password.into(),
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.user, b.password))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &b.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", &b.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
        .expect("CGI headers");
    let (head, rest) = (
        String::from_utf8_lossy(&out.stdout[..split.0]).to_string(),
        out.stdout[split.0 + split.1..].to_vec(),
    );
    let mut resp = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("status") {
            status = StatusCode::from_u16(v.trim()[..3].parse().unwrap()).unwrap();
        } else {
            resp = resp.header(k.trim(), v.trim());
        }
    }
    resp.status(status).body(Body::from(rest)).unwrap()
}
