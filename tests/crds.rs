//! Registrar validates renders against CRDs embedded in the binary (`crds/`). They must be
//! the upstream ones in `../shared/crds/`, byte for byte.

mod support;

#[test]
fn embedded_crds_equal_upstream() {
    let upstream = support::shared().join("crds/tinkerbell/v1alpha1");
    for file in [
        "tinkerbell.org_hardware.yaml",
        "tinkerbell.org_workflows.yaml",
        "tinkerbell.org_templates.yaml",
        "bmc.tinkerbell.org_machines.yaml",
    ] {
        let ours = std::fs::read(support::manifest_dir().join("crds").join(file)).unwrap();
        let theirs = std::fs::read(upstream.join(file)).unwrap();
        assert!(
            ours == theirs,
            "crds/{file} differs from {}",
            upstream.join(file).display()
        );
    }
}
