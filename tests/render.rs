//! The shipped templates and rules over real lshw outputs and hostile facts.

mod support;

use std::path::Path;

use registrar::domain::facts::{self, Bmc, Facts};
use registrar::domain::{Mac, Source};
use registrar::render::{RenderInput, Renderer};
use serde_json::Value;

fn renderer() -> Renderer {
    Renderer::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-templates"),
        "tinkerbell",
    )
    .unwrap()
}

fn lshw(name: &str) -> Facts {
    // support::lshw names what ../shared must hold when it is missing.
    facts::from_lshw(&support::lshw(name))
}

fn mac() -> Mac {
    "AC:1F:6B:DC:19:C2".parse().unwrap()
}

fn render(facts: &Facts) -> registrar::render::Rendered {
    renderer()
        .render(&RenderInput {
            mac: &mac(),
            facts,
            source: Source::Report,
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
        })
        .unwrap()
}

#[test]
fn supermicro_renders_a_bootable_hardware_and_workflow() {
    let r = render(&lshw("supermicro-ssg-6029p-x11dph-t.json"));
    assert_eq!(r.name, "a401031x0502795");
    assert_eq!(
        r.title,
        "Register a401031x0502795 (Supermicro SSG-6029P-E1CR12L-PH004, ac:1f:6b:dc:19:c2)"
    );
    let hw = &r.documents[0];
    assert_eq!(hw["kind"], "Hardware");
    assert_eq!(hw["spec"]["agentID"], "ac:1f:6b:dc:19:c2");
    let dhcp = &hw["spec"]["interfaces"][0]["dhcp"];
    assert_eq!(dhcp["mac"], "ac:1f:6b:dc:19:c2");
    assert_eq!(dhcp["arch"], "x86_64");
    assert_eq!(dhcp["lease_time"], 86400);
    assert_eq!(dhcp["uefi"], true);
    assert_eq!(hw["spec"]["interfaces"][0]["netboot"]["allowPXE"], true);
    assert!(
        hw["spec"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == "/dev/nvme0n1")
    );
    let wf = &r.documents[1];
    assert_eq!(wf["kind"], "Workflow");
    assert_eq!(wf["spec"]["templateRef"], "ubuntu-2404");
    assert_eq!(wf["spec"]["hardwareRef"], "a401031x0502795");
    assert!(
        r.manifest
            .starts_with("---\napiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\n"),
        "{}",
        r.manifest
    );
    assert!(r.summary.contains("| Memory | 191\\.0 GiB |"), "{}", r.summary);
    assert_eq!(r.decision.rule, "default");
}

#[test]
fn rules_choose_by_facts_first_match_wins() {
    let arm = render(&lshw("globalscale-espressobin-arm64.json"));
    assert_eq!(arm.decision.rule, "arm64");
    assert_eq!(arm.documents[0]["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64");
    // No DMI serial: named after the MAC.
    assert_eq!(arm.name, "node-ac-1f-6b-dc-19-c2");
    let mut gpu = lshw("supermicro-ssg-6029p-x11dph-t.json");
    gpu.gpus.push(facts::Gpu {
        vendor: Some("NVIDIA Corporation".into()),
        product: Some("A100".into()),
    });
    assert_eq!(render(&gpu).decision.rule, "gpu");
}

#[test]
fn a_reviewer_may_pick_only_workflows_that_exist() {
    let r = renderer();
    let f = lshw("supermicro-ssg-6029p-x11dph-t.json");
    let ok = r
        .render(&RenderInput {
            mac: &mac(),
            facts: &f,
            source: Source::Report,
            workflow: Some("ubuntu-2204"),
            force_mac_name: false,
            sighting: None,
            expected: None,
            address: None,
            sequence: None,
            warnings: &[],
            name: None,
            provisioned: false,
            round: 0,
        })
        .unwrap();
    assert_eq!(ok.documents[1]["spec"]["templateRef"], "ubuntu-2204");
    for bad in ["../../etc/passwd", "nope", "workflows/ubuntu-2404"] {
        let err = r
            .render(&RenderInput {
                mac: &mac(),
                facts: &f,
                source: Source::Report,
                workflow: Some(bad),
                force_mac_name: false,
                sighting: None,
                expected: None,
                address: None,
                sequence: None,
                warnings: &[],
                name: None,
                provisioned: false,
                round: 0,
            })
            .unwrap_err();
        assert!(err.to_string().contains("no workflow template"), "{err}");
    }
}

/// The keys of every mapping, recursively: the document's shape without its values.
fn shape(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            out.push(format!("{path}/{k}"));
            shape(v, format!("{path}/{k}"), out)
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| shape(v, format!("{path}/{i}"), out)),
        _ => out.push(format!("{path}: {}", if v.is_string() { "string" } else { "scalar" })),
    }
}

#[test]
fn hostile_facts_change_no_structure() {
    let clean = lshw("supermicro-ssg-6029p-x11dph-t.json");
    let mut hostile = clean.clone();
    let payloads = [
        "x\nspec: {}",
        "{{ 7*7 }}",
        "<img src=x onerror=alert(1)>",
        "@octocat fixes #1 [x](http://evil)",
        "\"quoted\": 'yes' # comment",
        "{% raw %}",
    ];
    hostile.serial = Some("A401031X0502795".into());
    hostile.product = Some(payloads.join(" "));
    hostile.vendor = Some(payloads[0].into());
    hostile.hostname = Some(payloads[1].into());
    hostile.disks[0].device = "/dev/sda\n  - device: /dev/evil".into();
    hostile.nics[0].name = Some("`|` </details> <!--".into());
    hostile.bmc = None;
    let a = render(&clean);
    let b = render(&hostile);
    for (da, db) in a.documents.iter().zip(&b.documents) {
        let (mut sa, mut sb) = (vec![], vec![]);
        shape(da, String::new(), &mut sa);
        shape(db, String::new(), &mut sb);
        assert_eq!(sa, sb, "structure changed:\n{}", b.manifest);
    }
    assert_eq!(
        b.documents[0]["spec"]["disks"][0]["device"],
        "/dev/sda\n  - device: /dev/evil"
    );
    assert!(!b.manifest.contains("\nspec: {}"));
    // Inside code fences text stays literal; everywhere else nothing may become markup.
    let prose = outside_fences(&b.summary);
    assert!(!prose.contains("<img"), "{prose}");
    assert!(!prose.contains("@octocat"), "{prose}");
    assert!(!prose.contains("](http"), "{prose}");
    assert!(!prose.contains("<!--"), "{prose}");
    assert!(!b.summary.contains("49"), "a fact was evaluated as a template");
    assert_eq!(
        prose.matches("</details>").count(),
        2,
        "a fact closed a collapsed block"
    );
}

/// The summary without its fenced code blocks (a fence is a line of 3+ backticks).
fn outside_fences(md: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<String> = None;
    for line in md.lines() {
        let ticks: String = line.chars().take_while(|&c| c == '`').collect();
        match &fence {
            Some(f) if line.trim_end() == f => fence = None,
            Some(_) => {}
            None if ticks.len() >= 3 => fence = Some(ticks),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(fence.is_none(), "unclosed fence");
    out
}

#[test]
fn facts_cannot_rename_the_machine_into_another_shape() {
    let mut f = lshw("supermicro-ssg-6029p-x11dph-t.json");
    f.serial = Some("../../../x\nkind: Secret".into());
    let r = render(&f);
    assert_eq!(r.name, "x-kind-secret");
    assert_eq!(r.documents[0]["kind"], "Hardware");
}

#[test]
fn a_bmc_address_adds_a_rufio_machine() {
    let mut f = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
    f.bmc = Some(Bmc {
        address: "10.0.0.50".into(),
    });
    let r = render(&f);
    assert_eq!(r.documents.len(), 3);
    assert_eq!(r.documents[2]["kind"], "Machine");
    assert_eq!(r.documents[2]["spec"]["connection"]["insecureTLS"], false);
    assert_eq!(
        r.documents[0]["spec"]["bmcRef"]["name"],
        r.documents[2]["metadata"]["name"]
    );
}

#[test]
fn the_same_facts_render_the_same_bytes() {
    let f = lshw("packet-c3small-asrockrack-e3c246d4i-nl.json");
    assert_eq!(render(&f).manifest, render(&f).manifest);
}

/// The shipped templates with another name pattern, as an operator would write it.
fn renderer_named(pattern: &str) -> (tempfile::TempDir, Renderer) {
    let dir = tempfile::tempdir().unwrap();
    let templates = support::templates_named(dir.path(), pattern);
    let r = Renderer::load(&templates, "tinkerbell").unwrap();
    (dir, r)
}

#[test]
fn names_follow_the_pattern_with_rack_unit_and_number() {
    let f = lshw("supermicro-ssg-6029p-x11dph-t.json");
    let expected = registrar::domain::Expected {
        rack: Some("r12".into()),
        u: Some(7),
        ..Default::default()
    };
    let input = RenderInput {
        mac: &mac(),
        facts: &f,
        source: Source::Import,
        workflow: None,
        force_mac_name: false,
        sighting: None,
        expected: Some(&expected),
        address: None,
        sequence: Some(7),
        warnings: &[],
        name: None,
        provisioned: false,
        round: 0,
    };
    let (_dir, racked) = renderer_named("{{ location.rack }}-u{{ location.u }}");
    assert_eq!(racked.name_for(&input), "r12-u7");
    let (_dir, counted) = renderer_named("node-{{ seq | pad(4) }}");
    assert!(counted.names_by_sequence());
    let rendered = counted.render(&input).unwrap();
    assert_eq!(rendered.name, "node-0007");
    assert_eq!(rendered.documents[0]["metadata"]["name"], "node-0007");
    // A pattern over untrusted facts still makes a DNS-1123 label, or the MAC's name.
    let mut hostile = f.clone();
    hostile.serial = Some("X\nspec: {}\n<b>".into());
    let (_dir, by_serial) = renderer_named("{{ facts.serial | lower }}");
    assert_eq!(
        by_serial.name_for(&RenderInput {
            facts: &hostile,
            ..input
        }),
        "x-spec-b"
    );
    hostile.serial = Some("---".into());
    assert_eq!(
        by_serial.name_for(&RenderInput {
            facts: &hostile,
            ..input
        }),
        "node-ac-1f-6b-dc-19-c2"
    );
}

#[test]
fn a_name_clash_is_told_to_the_reviewer() {
    let f = lshw("supermicro-ssg-6029p-x11dph-t.json");
    let rendered = renderer()
        .render(&RenderInput {
            mac: &mac(),
            facts: &f,
            source: Source::Report,
            workflow: None,
            force_mac_name: true,
            sighting: None,
            expected: None,
            address: None,
            sequence: None,
            warnings: &["Name: the name a1 is a Hardware in the cluster, for another machine".to_string()],
            name: None,
            provisioned: false,
            round: 0,
        })
        .unwrap();
    assert_eq!(rendered.name, "node-ac-1f-6b-dc-19-c2");
    assert!(
        // (Markdown-escaped: `Name\:`.)
        rendered
            .summary
            .replace('\\', "")
            .starts_with("> **⚠ Name: the name a1 is a Hardware in the cluster, for another machine**"),
        "{}",
        rendered.summary
    );
}
