//! Facts + templates + rules → validated manifests. Knows nothing of git, forges or HTTP,
//! so `registrar render` runs it with no server at all.
//!
//! Safety by construction: in `*.yaml.j2` templates every interpolated value is emitted as
//! a JSON (hence YAML) quoted scalar unless the template says `|safe`; in `*.md.j2` values
//! are Markdown-escaped; undefined variables are errors. After rendering, every document is
//! parsed, validated against the CRD schema, and checked to still name this machine.

mod identity;
pub mod impact;
pub mod markdown;
pub mod names;
pub mod rules;
pub mod schema;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as JValue};
use serde::Serialize;
use serde_json::Value;

use crate::domain::{Facts, Mac, Sighting, Source};
pub use rules::{Decision, RulesFile};

pub const RULES_FILE: &str = "rules.yaml";
pub const SUMMARY_TEMPLATE: &str = "proposal.md.j2";
pub const BMC_TEMPLATE: &str = "bmc.yaml.j2";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Template(String),
    #[error("rendered {document} is invalid:\n  {}", .errors.join("\n  "))]
    Invalid { document: String, errors: Vec<String> },
    #[error("no workflow template named {0:?} (expected workflows/{0}.yaml.j2)")]
    UnknownWorkflow(String),
}

pub struct Renderer {
    dir: PathBuf,
    env: Environment<'static>,
    rules: RulesFile,
    workflows: BTreeSet<String>,
    namespace: String,
}

/// What a render needs to know about one machine.
pub struct RenderInput<'a> {
    pub mac: &'a Mac,
    pub facts: &'a Facts,
    pub source: Source,
    /// A reviewer's choice, overriding the rules.
    pub workflow: Option<&'a str>,
    /// Set when the facts' name is taken by another machine.
    pub force_mac_name: bool,
    /// What DHCP revealed; fills in arch, UEFI and UUID where the report is silent.
    pub sighting: Option<&'a Sighting>,
    /// What an operator imported for this machine: wins over what it says of itself.
    pub expected: Option<&'a crate::domain::Expected>,
    /// The address its pool gave it (`ipam.pools`), for `dhcp.ip` in the Hardware.
    pub address: Option<&'a crate::ipam::Address>,
    /// Its number, where the name pattern counts machines (`seq`).
    pub sequence: Option<u64>,
    /// What the reviewer must not miss (a name or an identity another machine has, a BMC
    /// address refused), shown first in the proposal.
    pub warnings: &'a [String],
    /// The name git already holds for it: a machine keeps its name through every change.
    pub name: Option<&'a str>,
    /// Rendered for a provisioned machine: netboot off unless its rule sets `keep_netboot`.
    pub provisioned: bool,
    /// Its provisioning round (0 until re-provisioned), which names its Workflow.
    pub round: u32,
}

impl<'a> RenderInput<'a> {
    /// What the store knows of `machine`, with `facts` (its own, or with a part left out):
    /// no address, number or warnings yet.
    pub fn for_machine(machine: &'a crate::domain::Machine, facts: &'a Facts) -> Self {
        RenderInput {
            workflow: machine.workflow.as_deref(),
            sighting: machine.sighting.as_ref(),
            expected: machine.expected.as_ref(),
            ..RenderInput::of_facts(&machine.mac, facts, machine.source)
        }
    }

    /// Facts alone, as `registrar render` and `check` preview them.
    pub fn of_facts(mac: &'a Mac, facts: &'a Facts, source: Source) -> Self {
        RenderInput {
            mac,
            facts,
            source,
            workflow: None,
            force_mac_name: false,
            sighting: None,
            expected: None,
            address: None,
            sequence: None,
            warnings: &[],
            name: None,
            provisioned: false,
            round: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    pub name: String,
    pub title: String,
    pub decision: Decision,
    /// One YAML file of `---`-separated documents: Hardware, then Workflow and BMC if any.
    pub manifest: String,
    pub summary: String,
    #[serde(skip)]
    pub documents: Vec<Value>,
    /// What the reviewer must not miss (shown first in the summary): a proposal with any
    /// is never approved by policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The instructions one render (or one rule's condition) may take: real templates take a few
/// thousand.
const RENDER_FUEL: u64 = 5_000_000;

impl Renderer {
    /// Loads every `*.j2` below `dir` and `rules.yaml`. All problems are reported at once,
    /// each naming its file and line.
    pub fn load(dir: &Path, namespace: &str) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // A bound on every render and rule: a template's loop gone wrong (or a pull
        // request's template, rendered for its impact) ends with an error, not a hung worker.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".yaml.j2") || name.ends_with(".yml.j2") || name.ends_with(".json.j2") {
                AutoEscape::Json
            } else if name.ends_with(".md.j2") {
                AutoEscape::Custom("markdown".into())
            } else if name.ends_with(".html.j2") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if *state.auto_escape() == AutoEscape::Custom("markdown".into()) && !value.is_safe() {
                let text = if value.is_undefined() || value.is_none() {
                    String::new()
                } else {
                    value.to_string()
                };
                return out.write_str(&markdown::escape(&text)).map_err(minijinja::Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("dns1123", |s: String| names::dns1123(&s).unwrap_or_default());
        env.add_filter("pad", names::pad);
        env.add_filter("fenced", |s: String, lang: Option<String>| {
            JValue::from_safe_string(markdown::fenced(&s, lang.as_deref().unwrap_or("")))
        });
        env.add_filter("to_json", |v: JValue| {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        });
        env.add_filter("human_bytes", |v: Option<u64>| {
            v.map(human_bytes).unwrap_or_else(|| "unknown".into())
        });

        let mut workflows = BTreeSet::new();
        let mut broken = BTreeSet::new();
        for path in template_files(dir)? {
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let source = match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if let Some(wf) = name.strip_prefix("workflows/").and_then(|n| n.strip_suffix(".yaml.j2")) {
                if is_workflow_name(wf) {
                    workflows.insert(wf.to_string());
                } else {
                    problems.push(format!(
                        "{}: workflow names are lower-case letters, digits and dashes",
                        path.display()
                    ));
                }
            }
            if let Err(e) = env.add_template_owned(name.clone(), source) {
                problems.push(template_error(dir, &e));
                broken.insert(name);
            }
        }
        let rules = match rules::load(&dir.join(RULES_FILE)) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                RulesFile {
                    name: String::new(),
                    defaults: Default::default(),
                    rules: vec![],
                }
            }
        };
        let renderer = Renderer {
            dir: dir.to_path_buf(),
            env,
            rules,
            workflows,
            namespace: namespace.to_string(),
        };
        problems.extend(renderer.check_references(&broken));
        if !problems.is_empty() {
            anyhow::bail!(
                "{} problem(s) in {}:\n  {}",
                problems.len(),
                dir.display(),
                problems.join("\n  ")
            );
        }
        Ok(renderer)
    }

    /// `broken` templates exist but did not parse; they were reported already.
    fn check_references(&self, broken: &BTreeSet<String>) -> Vec<String> {
        let mut problems = Vec::new();
        let exists = |t: &str| broken.contains(t) || self.env.get_template(t).is_ok();
        let rules_path = self.dir.join(RULES_FILE);
        let choices = std::iter::once(("defaults".to_string(), &self.rules.defaults)).chain(
            self.rules
                .rules
                .iter()
                .map(|r| (format!("rule {:?}", r.name), &r.choice)),
        );
        for (who, choice) in choices {
            if let Some(t) = &choice.hardware
                && !exists(t)
            {
                problems.push(format!(
                    "{}: {who} references hardware template {t:?}, which does not exist",
                    rules_path.display()
                ));
            }
            if let Some(w) = &choice.workflow
                && !self.workflows.contains(w)
            {
                problems.push(format!(
                    "{}: {who} references workflow {w:?}, but workflows/{w}.yaml.j2 does not exist",
                    rules_path.display()
                ));
            }
        }
        if self.rules.defaults.hardware.is_none() && !exists("hardware.yaml.j2") {
            problems.push(format!(
                "{}: no defaults.hardware and no hardware.yaml.j2",
                self.dir.display()
            ));
        }
        if !exists(SUMMARY_TEMPLATE) {
            problems.push(format!("{}: {SUMMARY_TEMPLATE} is missing", self.dir.display()));
        }
        for rule in &self.rules.rules {
            if let Err(e) = self.env.compile_expression(&rule.when) {
                problems.push(format!(
                    "{}: rule {:?}: `when: {}`: {}",
                    rules_path.display(),
                    rule.name,
                    rule.when,
                    e.detail().unwrap_or(&e.to_string())
                ));
            }
        }
        if let Err(e) = self.env.template_from_str(&self.rules.name) {
            problems.push(format!("{}: name: {e}", rules_path.display()));
        }
        problems
    }

    pub fn workflows(&self) -> impl Iterator<Item = &str> {
        self.workflows.iter().map(String::as_str)
    }

    /// A workflow name is usable only if its template exists; this is the only way a label
    /// or a reviewer's choice reaches the file system, and it cannot leave the directory.
    pub fn has_workflow(&self, name: &str) -> bool {
        self.workflows.contains(name)
    }

    /// The condition of the rule named `name`, to show why a machine matched it.
    pub fn rule_condition(&self, name: &str) -> Option<&str> {
        self.rules
            .rules
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.when.as_str())
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// First matching rule wins; a rule whose condition fails to evaluate is an error,
    /// not a silent miss, since it would otherwise hide machines from the rule meant for them.
    pub fn decide(&self, ctx: &JValue) -> Result<Decision, RenderError> {
        for rule in &self.rules.rules {
            let expr = self
                .env
                .compile_expression(&rule.when)
                .map_err(|e| RenderError::Template(format!("rule {:?}: {e}", rule.name)))?;
            let hit = expr
                .eval(ctx.clone())
                .map_err(|e| RenderError::Template(format!("rule {:?}: `{}`: {e}", rule.name, rule.when)))?;
            if hit.is_true() {
                return Ok(self.rules.decide(Some(rule)));
            }
        }
        Ok(self.rules.decide(None))
    }

    /// The facts as templates see them (DHCP fills gaps, an import's BMC wins), and the
    /// context rules' conditions see.
    fn base_context(&self, input: &RenderInput) -> (Facts, JValue) {
        let mut facts = with_sighting(input.facts, input.sighting);
        if let Some(addr) = input.expected.and_then(|e| e.bmc_address.clone()) {
            facts.bmc = Some(crate::domain::facts::Bmc { address: addr });
        }
        let base = minijinja::context! {
            mac => input.mac.to_string(),
            mac_dashed => input.mac.dashed(),
            facts => to_jinja(&facts),
            source => input.source.as_str(),
            seen => input.sighting.map(to_jinja),
            location => to_jinja(names::location(input)),
            expected => input.expected.map(to_jinja),
            address => input.address.map(to_jinja),
        };
        (facts, base)
    }

    /// Whether a condition written like a rule's `when` (an address pool's `match.when`)
    /// holds for the machine; one that cannot be evaluated is an error, not a silent no.
    pub fn holds(&self, when: &str, input: &RenderInput) -> Result<bool, RenderError> {
        let expr = self
            .env
            .compile_expression(when)
            .map_err(|e| RenderError::Template(format!("`{when}`: {e}")))?;
        let (_, ctx) = self.base_context(input);
        Ok(expr
            .eval(ctx)
            .map_err(|e| RenderError::Template(format!("`{when}`: {e}")))?
            .is_true())
    }

    /// Whether a condition compiles, for checks at start.
    pub fn check_condition(&self, when: &str) -> Result<(), String> {
        self.env
            .compile_expression(when)
            .map(|_| ())
            .map_err(|e| e.detail().unwrap_or(&e.to_string()).to_string())
    }

    pub fn render(&self, input: &RenderInput) -> Result<Rendered, RenderError> {
        let name = self.name_for(input);
        let (facts, base) = self.base_context(input);
        let mut decision = self.decide(&base)?;
        if let Some(h) = input.expected.and_then(|e| e.hostname.clone()) {
            decision.values.insert("hostname".into(), Value::String(h));
        }
        let workflow = input
            .workflow
            .or_else(|| input.expected.and_then(|e| e.workflow.as_deref()));
        if let Some(w) = workflow {
            if !self.has_workflow(w) {
                return Err(RenderError::UnknownWorkflow(w.to_string()));
            }
            decision.workflow = Some(w.to_string());
        }
        let hostname = decision
            .values
            .get("hostname")
            .and_then(|h| h.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| name.clone());
        let address = input.address;
        // A provisioned machine no longer boots from the network: a reboot must not re-image
        // it. Re-provisioning is then a change someone proposes, not an accident.
        let keep_netboot = decision
            .values
            .get("keep_netboot")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let netboot = !input.provisioned || keep_netboot;
        let ctx = minijinja::context! {
            ..base,
            ..minijinja::context! {
                name => &name,
                warnings => input.warnings.to_vec(),
                // The address's parts as plain variables, for templates of one's own.
                hostname => &hostname,
                ip => address.map(|a| &a.ip),
                netmask => address.map(|a| &a.netmask),
                gateway => address.and_then(|a| a.gateway.as_ref()),
                nameservers => address.map(|a| a.nameservers.clone()).unwrap_or_default(),
                pool => address.map(|a| &a.pool),
                namespace => &self.namespace,
                workflow => decision.workflow.as_deref(),
                rule => &decision.rule,
                workflows => self.workflows.iter().cloned().collect::<Vec<String>>(),
                values => to_jinja(&decision.values),
                disk_total_bytes => facts.disk_total_bytes(),
                provisioned => input.provisioned,
                // Each provisioning round's Workflow has a name of its own.
                workflow_name => workflow_name(&name, input.round),
                netboot => netboot,
            }
        };

        let mut templates = vec![decision.hardware.clone()];
        if let Some(w) = &decision.workflow {
            templates.push(format!("workflows/{w}.yaml.j2"));
        }
        if facts.bmc.is_some() && self.env.get_template(BMC_TEMPLATE).is_ok() {
            templates.push(BMC_TEMPLATE.to_string());
        }
        let mut manifest = String::new();
        let mut documents = Vec::new();
        for t in &templates {
            let text = self.render_template(t, &ctx)?;
            let doc: Value = yaml_serde::from_str(&text).map_err(|e| RenderError::Invalid {
                document: t.clone(),
                errors: vec![format!("not YAML: {e}")],
            })?;
            schema::schemas()
                .validate(&doc)
                .map_err(|errors| RenderError::Invalid {
                    document: t.clone(),
                    errors,
                })?;
            self.check_identity(t, &doc, input.mac, &name)?;
            manifest.push_str("---\n");
            manifest.push_str(text.trim_end());
            manifest.push('\n');
            documents.push(doc);
        }
        if documents.first().and_then(|d| d["kind"].as_str()) != Some("Hardware") {
            return Err(RenderError::Invalid {
                document: decision.hardware.clone(),
                errors: vec!["the hardware template must render a Hardware".into()],
            });
        }
        let title = proposal_title(&name, &facts, input.mac);
        let summary = self.render_template(
            SUMMARY_TEMPLATE,
            &minijinja::context! { ..ctx, ..minijinja::context! { manifest => &manifest, title => &title } },
        )?;
        let summary = cap_summary(summary);
        Ok(Rendered {
            name,
            title,
            decision,
            manifest,
            summary,
            documents,
            warnings: input.warnings.to_vec(),
        })
    }

    fn render_template(&self, name: &str, ctx: &JValue) -> Result<String, RenderError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::Template(template_error(&self.dir, &e)))?;
        t.render(ctx)
            .map_err(|e| RenderError::Template(template_error(&self.dir, &e)))
    }
}

/// The facts as reported, with what DHCP revealed filling the gaps: firmware tells UEFI
/// and architecture more reliably than an OS-level inventory does.
fn with_sighting(facts: &Facts, sighting: Option<&Sighting>) -> Facts {
    let mut f = facts.clone();
    if let Some(s) = sighting {
        f.arch = f.arch.or_else(|| s.arch.clone());
        f.uefi = f.uefi.or(s.uefi);
        f.uuid = f.uuid.or_else(|| s.uuid.clone());
    }
    f
}

/// Forges cap PR bodies at 65,536 characters; stay well below and say so when cut.
pub const MAX_SUMMARY_BYTES: usize = 60_000;

fn cap_summary(summary: String) -> String {
    if summary.len() <= MAX_SUMMARY_BYTES {
        return summary;
    }
    let cut = summary[..MAX_SUMMARY_BYTES].rfind('\n').unwrap_or(0);
    format!(
        "{}\n\n_(cut at {MAX_SUMMARY_BYTES} bytes: the full facts are in the commit message)_\n",
        &summary[..cut]
    )
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn to_jinja<T: Serialize>(value: T) -> JValue {
    JValue::from(minijinja::value::Serde(value))
}

pub fn proposal_title(name: &str, facts: &Facts, mac: &Mac) -> String {
    let model: Vec<&str> = [facts.vendor.as_deref(), facts.product.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if model.is_empty() {
        format!("Register {name} ({mac})")
    } else {
        format!("Register {name} ({}, {mac})", model.join(" "))
    }
}

/// The provisioning Workflow's name in round `round`: the Hardware's name, then
/// `<name>-r<round>` for each re-provisioning.
pub fn workflow_name(name: &str, round: u32) -> String {
    match round {
        0 => name.to_string(),
        n => format!("{name}-r{n}"),
    }
}

pub fn is_workflow_name(s: &str) -> bool {
    names::is_dns1123(s)
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn template_error(dir: &Path, e: &minijinja::Error) -> String {
    let file = e
        .name()
        .map(|n| dir.join(n).display().to_string())
        .unwrap_or_else(|| dir.display().to_string());
    let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!("{file}{line}: {}{detail}", e.kind())
}

fn template_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("templates directory {}: {e}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "j2") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
