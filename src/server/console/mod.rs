//! The web console: server-rendered pages over the same store and proposer the API uses.
//!
//! Pages are minijinja templates compiled into the binary and autoescaped as HTML, so a
//! fact is always text. One small script (ours, served from `/static`) makes the pages
//! live through server-sent events; without it every page still works.

pub mod oidc;
mod pages;
pub mod session;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use minijinja::{AutoEscape, Environment};

use super::AppState;
pub use session::Sessions;

/// Largest import a browser may upload (10,000 rows are about 1 MiB).
pub const MAX_IMPORT_BYTES: usize = 8 << 20;

pub struct Console {
    pub sessions: Sessions,
    env: Environment<'static>,
    pub cluster_enabled: bool,
    /// Open live-update streams; each holds a connection, so they are bounded.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Where the templates are on disk: the impact page compares them with the loaded ones.
    pub templates_dir: std::path::PathBuf,
    /// Login through an OpenID Connect provider, when `ui.oidc` is set.
    pub oidc: Option<oidc::Oidc>,
}

/// Browsers keep one stream per open tab; more than this is not a team looking.
pub const MAX_STREAMS: usize = 256;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("machines.html", include_str!("templates/machines.html")),
    ("machine.html", include_str!("templates/machine.html")),
    ("import.html", include_str!("templates/import.html")),
    ("batches.html", include_str!("templates/batches.html")),
    ("status.html", include_str!("templates/status.html")),
    ("impact.html", include_str!("templates/impact.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("error.html", include_str!("templates/error.html")),
];

pub const CSS: &str = include_str!("static/console.css");
pub const JS: &str = include_str!("static/console.js");

/// No inline script, no foreign origin, no framing: a fact that slipped through escaping
/// still could not run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

impl Console {
    pub fn new(
        ui: &crate::config::UiConfig,
        auth: &crate::config::AuthConfig,
        cluster_enabled: bool,
        templates_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("console template {name}: {e}"))?;
        }
        Ok(Console {
            sessions: Sessions::new(ui, auth)?,
            env,
            cluster_enabled,
            streams: Default::default(),
            templates_dir: templates_dir.to_path_buf(),
            oidc: ui.oidc.as_ref().map(oidc::Oidc::new).transpose()?,
        })
    }

    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/", get(pages::machines))
        .route("/machines/bulk", post(pages::bulk))
        .route("/machines/{mac}", get(pages::machine))
        .route("/machines/{mac}/{action}", post(pages::machine_action))
        .route("/import", get(pages::import_page).post(pages::import_post))
        .route("/imports", get(pages::batches))
        .route("/status", get(pages::status))
        .route("/impact", get(pages::impact))
        .route("/audit", get(pages::audit))
        .route("/events", get(pages::events))
        .route("/logout", post(pages::logout))
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES + 64 * 1024))
        .route_layer(from_fn_with_state(state, session::page_guard));
    Router::new()
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/login/oidc", get(pages::oidc_begin))
        .route("/login/oidc/callback", get(pages::oidc_callback))
        .route(
            "/static/console.css",
            get(|| async {
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/css; charset=utf-8"),
                        ),
                        (header::CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
                    ],
                    CSS,
                )
            }),
        )
        .route(
            "/static/console.js",
            get(|| async {
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/javascript; charset=utf-8"),
                        ),
                        (header::CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
                    ],
                    JS,
                )
            }),
        )
        .merge(guarded)
}

pub type SharedConsole = Arc<Console>;
