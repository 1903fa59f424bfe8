//! `registrar check` and `registrar render` as an operator runs them.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn copy_templates(to: &Path) {
    copy_dir(&manifest_dir().join("hardware-templates"), to);
}

fn registrar(templates: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(args)
        .env("REGISTRAR_TEMPLATES_DIR", templates)
        .env("REGISTRAR_STATE_DIR", templates.join("state"))
        .env_remove("REGISTRAR_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `registrar check` on a copy of the shipped templates after `edit(file, text) -> text`
/// changed one file: (success, stderr).
fn check_edited(file: &str, edit: impl FnOnce(String) -> String) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_templates(dir.path());
    let path = dir.path().join(file);
    let edited = edit(std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, &edited).unwrap();
    let (ok, _, stderr) = registrar(dir.path(), &["check"]);
    (ok, stderr, edited)
}

#[test]
fn the_shipped_templates_pass() {
    let (ok, stdout, stderr) = registrar(&manifest_dir().join("hardware-templates"), &["check"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok:"), "{stdout}");
}

#[test]
fn a_broken_template_is_named_with_its_line() {
    let (ok, stderr, text) = check_edited("hardware.yaml.j2", |t| {
        t.replacen("  interfaces:", "  interfaces: {% if %}", 1)
    });
    let line = text.lines().position(|l| l.contains("{% if %}")).unwrap() + 1;
    assert!(!ok);
    assert!(stderr.contains(&format!("hardware.yaml.j2:{line}")), "{stderr}");
    assert!(stderr.contains("syntax error"), "{stderr}");
}

#[test]
fn rules_that_reference_a_missing_template_are_refused() {
    let (ok, stderr, _) = check_edited("rules.yaml", |t| {
        t.replace(
            "  - name: gpu\n",
            "  - name: gpu\n    hardware: gpu-hardware.yaml.j2\n    workflow: ubuntu-2604\n",
        )
    });
    assert!(!ok);
    assert!(
        stderr.contains("rule \"gpu\" references hardware template \"gpu-hardware.yaml.j2\", which does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("workflows/ubuntu-2604.yaml.j2 does not exist"),
        "{stderr}"
    );
}

#[test]
fn a_rule_condition_that_does_not_compile_is_refused() {
    let (ok, stderr, _) = check_edited("rules.yaml", |t| t.replace("facts.gpus | length > 0", "facts.gpus |"));
    assert!(!ok);
    assert!(stderr.contains("rule \"gpu\""), "{stderr}");
}

#[test]
fn an_undefined_variable_fails_the_sample_render() {
    let (ok, stderr, _) = check_edited("workflows/ubuntu-2204.yaml.j2", |t| {
        t.replace("templateRef: {{ workflow }}", "templateRef: {{ wrokflow }}")
    });
    assert!(!ok);
    assert!(stderr.contains("ubuntu-2204.yaml.j2"), "{stderr}");
    assert!(stderr.contains("undefined"), "{stderr}");
}

#[test]
fn render_prints_manifests_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(
        &report,
        serde_json::to_vec(&lshw("packet-c3small-asrockrack-e3c246d4i-nl.json")).unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(["render", report.to_str().unwrap(), "--mac", "B4-96-91-70-26-C8"])
        .env("REGISTRAR_TEMPLATES_DIR", manifest_dir().join("hardware-templates"))
        .env("REGISTRAR_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs[0]["metadata"]["name"], "d5s0r8000105");
    assert_eq!(docs[0]["spec"]["agentID"], "b4:96:91:70:26:c8");
    assert!(!dir.path().join("state").exists(), "render must not create state");
}
