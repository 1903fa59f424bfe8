//! The release workflow, held to what deploy/VERIFY.md tells people to check.

use super::*;

/// What the release workflow promises (deploy/VERIFY.md): images signed by digest with
/// cosign keyless, SBOM and provenance attached, and install manifests that reference every
/// image by digest, each signed. The workflow itself runs only on GitHub; this holds it to
/// what the verification instructions check.
#[test]
fn the_release_signs_by_digest_and_publishes_digest_pinned_manifests() {
    let workflow: Value = yaml_serde::from_str(&read(".github/workflows/release.yml")).unwrap();
    assert_eq!(
        workflow["permissions"]["id-token"], "write",
        "keyless signing needs the OIDC token"
    );
    let steps = |job: &str| -> Vec<Value> { workflow["jobs"][job]["steps"].as_array().unwrap().clone() };
    let run = |job: &str| -> String {
        steps(job)
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let push = steps("image")
        .into_iter()
        .find(|s| s["id"] == "push")
        .expect("the image is pushed by a step with id push");
    assert_eq!(push["with"]["sbom"], true);
    assert_eq!(push["with"]["provenance"], true);
    let image = run("image");
    assert!(
        image.contains("cosign sign --yes \"${{ steps.build.outputs.ref }}\""),
        "{image}"
    );
    assert!(
        image.contains("@${{ steps.push.outputs.digest }}"),
        "signed by digest: {image}"
    );
    let manifests = run("manifests");
    assert!(manifests.contains("kustomize edit set image \"ghcr.io/registrar/registrar=$REGISTRAR\""));
    for file in [
        "deploy/discovery/template.yaml",
        "deploy/discovery/reinventory-template.yaml",
    ] {
        assert!(manifests.contains(file), "{file} is pinned too");
    }
    assert!(manifests.contains("cosign sign-blob --yes --bundle"), "{manifests}");
    assert!(
        manifests.contains("! grep -E \"image: ghcr.io/[^@]*:[0-9]\""),
        "no tag left: {manifests}"
    );
    let verify = read("deploy/VERIFY.md");
    for promise in [
        "cosign verify ",
        "cosign verify-blob",
        r"release\.yml@refs/tags/v",
        "install.yaml",
    ] {
        assert!(verify.contains(promise), "deploy/VERIFY.md says how: {promise}");
    }
}

/// Released together: the image tags, the Flux and Argo CD revisions and the discovery
/// action's image carry the crate's version.
#[test]
fn shipped_references_carry_the_crate_version() {
    let version = env!("CARGO_PKG_VERSION");
    for file in [
        "deploy/discovery/template.yaml",
        "deploy/discovery/reinventory-template.yaml",
    ] {
        assert!(
            read(file).contains(&format!("image: ghcr.io/registrar/registrar-discover:{version}")),
            "{file}: the action's image tag"
        );
    }
    let base = read("deploy/base/kustomization.yaml");
    assert!(
        base.contains(&format!("newTag: {version}")),
        "deploy/base/kustomization.yaml: images newTag"
    );
    assert!(
        read("deploy/examples/flux/registrar.yaml").contains(&format!("tag: v{version}")),
        "Flux GitRepository ref"
    );
    assert_eq!(
        read("deploy/examples/argocd/registrar.yaml")
            .matches(&format!("targetRevision: v{version}"))
            .count(),
        2,
        "Argo CD sources"
    );
    if kubectl_missing() {
        return;
    }
    for (name, objects) in installs() {
        assert_eq!(
            container(deployment(objects))["image"],
            format!("ghcr.io/registrar/registrar:{version}"),
            "{name}"
        );
    }
}
