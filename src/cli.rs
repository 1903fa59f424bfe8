//! The command line: `serve`, `render`, `check`, and review commands that talk to a
//! running server's API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::App;
use crate::config::Config;
use crate::domain::Source;
use crate::render::{RenderInput, Renderer};

#[derive(Parser)]
#[command(
    name = "registrar",
    version,
    about = "Discover bare-metal machines for Tinkerbell and register them the GitOps way"
)]
pub struct Cli {
    /// Configuration file (YAML). Without one, defaults apply: the embedded local forge.
    #[arg(short, long, global = true, env = "REGISTRAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server: report webhook, API, proposal worker.
    Serve,
    /// Snoop DHCP on this node and forward what is noticed to the API at `dhcp.forward_to`
    /// (with `auth.snoop_token`), so that only this needs the provisioning network.
    Snoop,
    /// Render the manifests for a report file, with no side effects.
    Render {
        /// A report body (`{"mac":..., "specs": <lshw -json>}`), bare `lshw -json`, or Tink Agent attributes.
        facts: PathBuf,
        /// The machine's MAC when the file does not name it.
        #[arg(long)]
        mac: Option<String>,
        /// Pick a provisioning workflow instead of the rules' choice.
        #[arg(long)]
        workflow: Option<String>,
        /// Print the proposal summary (Markdown) instead of the manifests.
        #[arg(long)]
        summary: bool,
    },
    /// Validate the configuration, the templates and the rules. With `--impact`, list the
    /// recorded machines those rules and templates would render differently, with the diff.
    Check {
        /// Compare `templates_dir` with the templates at `--base` (or `--base-dir`), machine
        /// by machine, from the facts in the state directory's store.
        #[arg(long)]
        impact: bool,
        /// The git revision of the templates' repository to compare with.
        #[arg(long, default_value = "HEAD", requires = "impact")]
        base: String,
        /// A directory of templates to compare with, instead of a git revision.
        #[arg(long, requires = "impact")]
        base_dir: Option<std::path::PathBuf>,
        /// Print the result as JSON.
        #[arg(long, requires = "impact")]
        json: bool,
    },
    /// List machines, or show one.
    Machines {
        mac: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Address pools: list them with their use (the default), show one machine's
    /// addresses, or check them against the Hardware already registered.
    Ipam {
        #[command(subcommand)]
        action: Option<IpamCommand>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List proposals.
    Proposals {
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a machine's proposal (on the local forge: merge it into the base branch).
    Approve {
        mac: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Reject a machine: close its proposal and suppress its MAC.
    Reject {
        mac: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Propose removing a registered machine's files; merged and applied, it is decommissioned.
    Decommission {
        mac: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Propose provisioning a machine again (netboot on, a Workflow of a new name).
    Reprovision {
        mac: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Boot a provisioned machine into discovery again (its rule must set `reinventory: true`).
    Reinventory {
        mac: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a rejected MAC's suppression.
    Unsuppress {
        mac: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the HTTP API's OpenAPI 3 description (also served at /api/v1/openapi.json).
    Openapi,
    /// Copy the store to FILE while Registrar runs (an online, consistent SQLite backup).
    Backup {
        /// Where to write the copy; must not exist yet.
        file: PathBuf,
    },
    /// Import machines from a CSV (or JSON) file: expected ones, or proposals right away.
    Import {
        /// A CSV with a header row (`mac` required), or a `.json` array of rows.
        file: PathBuf,
        /// `expected`: propose each machine when it is noticed and reports; `propose`: now.
        #[arg(long, default_value = "expected")]
        mode: String,
        /// Show what would be imported, row by row, and store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store the valid rows even when some are invalid (otherwise nothing is stored).
        #[arg(long)]
        skip_invalid: bool,
        /// The batch's name (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum IpamCommand {
    /// The pools, with their size and how many addresses are held or resting.
    List,
    /// One machine's addresses, the pool its permanent address comes from, and what chose it.
    Show { mac: String },
    /// Addresses inside the pools' ranges that a Hardware on the base branch or in the
    /// cluster holds but Registrar never gave (skipped; they belong in `exclude`). Exits
    /// non-zero when there are any.
    Check,
}

#[derive(clap::Args)]
pub struct Remote {
    /// The server's URL (default: the configured listen address).
    #[arg(long, env = "REGISTRAR_URL", global = true)]
    pub url: Option<String>,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing(cli.log_json);
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Snoop => snoop(config),
        Command::Render {
            facts,
            mac,
            workflow,
            summary,
        } => render(&config, &facts, mac.as_deref(), workflow.as_deref(), summary),
        Command::Check { impact: false, .. } => check(&config),
        Command::Check {
            base, base_dir, json, ..
        } => crate::app::impact::print(
            &config,
            &match base_dir {
                Some(dir) => crate::app::impact::Base::Directory(dir),
                None => crate::app::impact::Base::Revision(base),
            },
            json,
        ),
        Command::Machines {
            mac: Some(mac), remote, ..
        } => api(
            &config,
            &remote,
            reqwest::Method::GET,
            &format!("/api/v1/machines/{mac}"),
            None,
        ),
        Command::Machines {
            mac: None,
            state,
            remote,
        } => {
            let q = state.map(|s| format!("?state={s}")).unwrap_or_default();
            api(
                &config,
                &remote,
                reqwest::Method::GET,
                &format!("/api/v1/machines{q}"),
                None,
            )
        }
        Command::Ipam { action, remote } => {
            let path = match &action {
                None | Some(IpamCommand::List) => "/api/v1/ipam".to_string(),
                Some(IpamCommand::Show { mac }) => format!("/api/v1/ipam/{mac}"),
                Some(IpamCommand::Check) => "/api/v1/ipam/check".to_string(),
            };
            let answer = api_value(&config, &remote, reqwest::Method::GET, &path, None)?;
            let clashes = answer["clashes"].as_array().map_or(0, Vec::len);
            if clashes > 0 {
                bail!("{clashes} address(es) clash with the pools");
            }
            Ok(())
        }
        Command::Proposals { state, remote } => {
            let q = state.map(|s| format!("?state={s}")).unwrap_or_default();
            api(
                &config,
                &remote,
                reqwest::Method::GET,
                &format!("/api/v1/proposals{q}"),
                None,
            )
        }
        Command::Approve { mac, remote } => machine_action(&config, &remote, &mac, "approve"),
        Command::Decommission { mac, remote } => machine_action(&config, &remote, &mac, "decommission"),
        Command::Reinventory { mac, remote } => machine_action(&config, &remote, &mac, "reinventory"),
        Command::Reprovision { mac, remote } => machine_action(&config, &remote, &mac, "reprovision"),
        Command::Unsuppress { mac, remote } => machine_action(&config, &remote, &mac, "unsuppress"),
        Command::Reject { mac, reason, remote } => api(
            &config,
            &remote,
            reqwest::Method::POST,
            &format!("/api/v1/machines/{mac}/reject"),
            Some(actor_body(&reason)),
        ),
        Command::Backup { file } => backup(&config, &file),
        Command::Openapi => {
            println!("{}", crate::server::openapi::document().to_pretty_json()?);
            Ok(())
        }
        Command::Import {
            file,
            mode,
            dry_run,
            skip_invalid,
            name,
            remote,
        } => import(&config, &remote, &file, &mode, dry_run, skip_invalid, name),
    }
}

/// `VACUUM INTO` reads one consistent snapshot while the server goes on writing (WAL), and
/// writes a compact, self-contained database file; the copy is then checked.
fn backup(config: &Config, file: &Path) -> anyhow::Result<()> {
    if config.postgres_url()?.is_some() {
        bail!("the store is PostgreSQL (store.postgres_url): back it up with pg_dump");
    }
    let db = config.state_dir.join("registrar.db");
    if !db.exists() {
        bail!("no store at {} (is state_dir right?)", db.display());
    }
    if file.exists() {
        bail!("{} exists; choose a new file name", file.display());
    }
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = file
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("backing up {} to {}", db.display(), file.display()))?;
    let copy = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the backup {} failed its integrity check: {check}", file.display());
    }
    let machines: i64 = copy.query_row("SELECT COUNT(*) FROM machines", [], |r| r.get(0))?;
    let schema: i64 = copy.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    println!(
        "backed up {} to {} ({machines} machines, schema {schema}); restore: stop Registrar, copy it to {}, remove registrar.db-wal and registrar.db-shm beside it, start",
        db.display(),
        file.display(),
        db.display()
    );
    Ok(())
}

/// Posts the file to the server's import API and prints the preview or the result as a
/// person reads it: one line per bad row, then what was stored.
fn import(
    config: &Config,
    remote: &Remote,
    file: &Path,
    mode: &str,
    dry_run: bool,
    skip_invalid: bool,
    name: Option<String>,
) -> anyhow::Result<()> {
    mode.parse::<crate::domain::ImportMode>()
        .map_err(|e| anyhow::anyhow!(e))?;
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let json = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let name = name.unwrap_or_else(|| {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "import".into())
    });
    let base = remote
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    let token = config.tokens()?.operator;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("mode", mode)
        .append_pair("dry_run", if dry_run { "true" } else { "false" })
        .append_pair("skip_invalid", if skip_invalid { "true" } else { "false" })
        .append_pair("name", &name)
        .finish();
    runtime()?.block_on(async move {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/imports?{query}", base.trim_end_matches('/')))
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, if json { "application/json" } else { "text/csv" })
            .body(body)
            .send()
            .await
            .with_context(|| format!("contacting Registrar at {base}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.context("reading the server's answer")?;
        if let Some(message) = v["message"].as_str() {
            bail!("{}: {message}", file.display());
        }
        for row in v["rows"].as_array().into_iter().flatten() {
            for e in row["errors"].as_array().into_iter().flatten() {
                println!("{}:{}: {}", file.display(), row["line"], e.as_str().unwrap_or_default());
            }
        }
        let (valid, invalid) = (v["valid"].as_u64().unwrap_or(0), v["invalid"].as_u64().unwrap_or(0));
        if v["stored"].as_bool() == Some(true) {
            println!("imported {valid} row(s) as batch {} ({}){}", v["batch"]["id"], v["batch"]["name"].as_str().unwrap_or_default(), if invalid > 0 { format!("; skipped {invalid}") } else { String::new() });
            Ok(())
        } else if dry_run {
            println!("dry run: {valid} valid, {invalid} with errors; nothing stored");
            Ok(())
        } else {
            bail!("{status}: {invalid} row(s) with errors, nothing stored (fix them, or pass --skip-invalid to import the {valid} valid row(s))")
        }
    })
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGISTRAR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn snoop(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let (trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.fire();
        });
        crate::sources::dhcp::forward::run(config, shutdown).await
    })
}

fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    // The runtime comes first: building the GitHub client (octocrab's tower stack) and the
    // Kubernetes client need a reactor, so `App::build` runs inside it.
    let rt = runtime()?;
    let app = rt.block_on(async { App::build(config) })?;
    tracing::info!(
        %listen,
        state_dir = %app.config.state_dir.display(),
        gitops = %app.config.remote_url(),
        forge = app.state.forge_kind,
        "Registrar is starting"
    );
    let grace = std::time::Duration::from_secs(app.config.server.shutdown_grace_seconds);
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let (trigger, shutdown) = crate::shutdown::channel();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                grace_seconds = grace.as_secs(),
                "shutting down: no new work; finishing what is in flight"
            );
            trigger.fire();
        });
        let serving = app.serve(listener, shutdown);
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => r,
            _ = async { stopping.wait().await; tokio::time::sleep(grace).await } => {
                // Nothing is lost: reports are stored before they are answered, and work is
                // state in the store, picked up again at the next start.
                tracing::warn!("in-flight work did not finish within the grace period; it resumes at the next start");
                Ok(())
            }
        }
    });
    // Background tasks still blocked on the network must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn render(
    config: &Config,
    path: &Path,
    mac: Option<&str>,
    workflow: Option<&str>,
    summary: bool,
) -> anyhow::Result<()> {
    let renderer = Renderer::load(&config.templates_dir, &config.tinkerbell.namespace)?;
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report = crate::sources::report::parse(&body, mac).with_context(|| format!("{}", path.display()))?;
    let rendered = renderer.render(&RenderInput {
        workflow,
        // A counting name pattern previews as the first machine.
        sequence: Some(1),
        ..RenderInput::of_facts(&report.mac, &report.facts, Source::Report)
    })?;
    if summary {
        println!("{}", rendered.summary);
    } else {
        print!("{}", rendered.manifest);
    }
    Ok(())
}

/// Checks everything a start would, without starting: config, templates (syntax, with file
/// and line), rules (conditions compile, referenced templates exist), and a sample render
/// through the defaults and every rule.
fn check(config: &Config) -> anyhow::Result<()> {
    let renderer = Renderer::load(&config.templates_dir, &config.tinkerbell.namespace)?;
    let pools = crate::app::checked_pools(&config.ipam, &renderer)?;
    match crate::app::pool_clashes::check_local_copy(config, &pools)? {
        Some(clashes) if !clashes.is_empty() => bail!(
            "the address pools clash with Hardware on the base branch (as last fetched):\n  - {}",
            clashes.join("\n  - ")
        ),
        Some(_) => println!("ok: the address pools clash with no Hardware on the base branch (as last fetched)"),
        None => {}
    }
    let sample = crate::domain::facts::Facts {
        vendor: Some("Example".into()),
        product: Some("Sample".into()),
        serial: Some("SAMPLE1".into()),
        ..Default::default()
    };
    let mac = crate::domain::Mac::parse("02:00:00:00:00:01")?;
    let mut problems = Vec::new();
    for workflow in std::iter::once(None).chain(renderer.workflows().map(Some)) {
        if let Err(e) = renderer.render(&RenderInput {
            workflow,
            sequence: Some(1),
            ..RenderInput::of_facts(&mac, &sample, Source::Report)
        }) {
            problems.push(format!(
                "sample render with workflow {}: {e}",
                workflow.unwrap_or("(rules' choice)")
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    println!(
        "ok: config, {} workflow template(s) and rules in {} are valid",
        renderer.workflows().count(),
        config.templates_dir.display()
    );
    Ok(())
}

fn actor_body(reason: &str) -> serde_json::Value {
    let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    serde_json::json!({ "actor": format!("cli:{user}"), "reason": reason })
}

/// A review or lifecycle step on one machine, by the operator at the terminal.
fn machine_action(config: &Config, remote: &Remote, mac: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/machines/{mac}/{action}");
    api(config, remote, reqwest::Method::POST, &path, Some(actor_body("")))
}

fn api(
    config: &Config,
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    api_value(config, remote, method, path, body).map(|_| ())
}

/// Calls the running server's API as the operator, prints the answer, and returns it.
fn api_value(
    config: &Config,
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let base = remote
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen));
    let token = config.tokens()?.operator;
    runtime()?.block_on(async move {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("contacting Registrar at {base}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value = serde_json::from_str::<serde_json::Value>(&text).unwrap_or(serde_json::Value::Null);
        let pretty = match &value {
            serde_json::Value::Null => text,
            v => serde_json::to_string_pretty(v).unwrap_or(text),
        };
        println!("{pretty}");
        if !status.is_success() {
            bail!("{status}");
        }
        Ok(value)
    })
}
