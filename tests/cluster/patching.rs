//! PATCH on the fake API server, through the real kube client.
//!
//! Registrar itself only creates and deletes (the RBAC test in main.rs holds it to that); these
//! tests use their own fake so that Flux-style server-side apply and kubectl-style patches
//! behave as a real apiserver's do: strict CRD validation, resourceVersion and watch events
//! only on a real change, 404/409/415/422 where the apiserver answers them.

use super::*;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "tinkerbell.org".into(),
        version: "v1alpha1".into(),
        api_version: "tinkerbell.org/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn apis(kube: &FakeKube) -> (Api<DynamicObject>, Api<DynamicObject>) {
    (
        Api::namespaced_with(kube.client(), "tinkerbell", &resource("Hardware", "hardware")),
        Api::namespaced_with(kube.client(), "tinkerbell", &resource("Workflow", "workflows")),
    )
}

fn rv(obj: &DynamicObject) -> String {
    obj.metadata.resource_version.clone().unwrap()
}

fn api_error(result: Result<DynamicObject, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn json_patch(ops: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

fn labelled(name: &str, mac: &str, labels: Value) -> Value {
    let mut hw = hardware(name, mac);
    hw["metadata"]["labels"] = labels;
    hw
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_apply_creates_then_updates_idempotently() {
    let kube = FakeKube::start().await;
    let (hw, _) = apis(&kube);
    let flux = PatchParams::apply("flux").force();
    let mut desired = labelled("node-ssa", "02:00:00:00:a0:01", json!({"rack": "r1", "role": "worker"}));

    // Apply on a missing object creates it.
    let created = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(created.metadata.labels.as_ref().unwrap()["rack"], "r1");
    assert_eq!(created.metadata.generation, Some(1));
    let managers: Vec<_> = created
        .metadata
        .managed_fields
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert_eq!(managers, vec![("flux".to_string(), "Apply".to_string())]);

    // The same apply again changes nothing: same resourceVersion, no event.
    let events = kube.event_count();
    let again = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(rv(&again), rv(&created), "a no-op apply does not bump resourceVersion");
    assert_eq!(again.metadata.uid, created.metadata.uid);
    assert_eq!(kube.event_count(), events, "and sends no watch event");

    // A changed apply: new values, a new resourceVersion and generation, same uid; a
    // label the manager stops applying is removed.
    desired["metadata"]["labels"] = json!({"rack": "r2"});
    desired["spec"]["interfaces"][0]["dhcp"]["arch"] = json!("aarch64");
    let changed = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
    assert_ne!(rv(&changed), rv(&created));
    assert_eq!(changed.metadata.uid, created.metadata.uid);
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.metadata.labels.as_ref().unwrap().len(), 1);
    assert_eq!(changed.data["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64");
    assert_eq!(
        kube.object("hardware", "tinkerbell", "node-ssa").unwrap()["metadata"]["labels"],
        json!({"rack": "r2"})
    );

    // Labels only: the generation (spec changes) stays.
    desired["metadata"]["labels"] = json!({"rack": "r3"});
    let relabelled = hw.patch("node-ssa", &flux, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(relabelled.metadata.generation, Some(2));

    // Another manager changing a field flux owns conflicts, unless it forces.
    let mut other = json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware", "metadata": {"name": "node-ssa", "labels": {"rack": "r9"}}});
    let (code, message) = api_error(
        hw.patch("node-ssa", &PatchParams::apply("kubectl"), &Patch::Apply(&other))
            .await,
    );
    assert_eq!(code, 409, "{message}");
    assert!(
        message.contains("flux") && message.contains("/metadata/labels/rack"),
        "{message}"
    );
    assert_eq!(
        kube.object("hardware", "tinkerbell", "node-ssa").unwrap()["metadata"]["labels"]["rack"],
        "r3"
    );
    // The same value is no conflict: both own it.
    other["metadata"]["labels"]["rack"] = json!("r3");
    hw.patch("node-ssa", &PatchParams::apply("kubectl"), &Patch::Apply(&other))
        .await
        .unwrap();
    other["metadata"]["labels"]["rack"] = json!("r9");
    let forced = hw
        .patch(
            "node-ssa",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.metadata.labels.as_ref().unwrap()["rack"], "r9");
    // Flux lost the label; its spec fields stay its own.
    let fields = forced.metadata.managed_fields.unwrap();
    let of = |m: &str| {
        fields
            .iter()
            .find(|f| f.manager.as_deref() == Some(m))
            .map(|f| serde_json::to_value(&f.fields_v1).unwrap())
            .unwrap()
    };
    assert!(of("flux")["f:metadata"].is_null(), "{:?}", of("flux"));
    assert!(!of("flux")["f:spec"]["f:interfaces"].is_null());
    assert_eq!(of("kubectl")["f:metadata"]["f:labels"]["f:rack"], json!({}));

    // Apply needs a field manager, and names the object it patches.
    let (code, _) = api_error(
        hw.patch("node-ssa", &PatchParams::default(), &Patch::Apply(&desired))
            .await,
    );
    assert_eq!(code, 400);
    let (code, message) = api_error(hw.patch("node-other", &flux, &Patch::Apply(&desired)).await);
    assert_eq!(code, 400, "{message}");
    assert!(
        kube.rbac_used()
            .contains(&("tinkerbell.org".into(), "hardware".into(), "patch".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_and_json_patches_change_existing_objects_only() {
    let kube = FakeKube::start().await;
    let (hw, _) = apis(&kube);
    let pp = PatchParams::default();

    // A missing object: 404 for merge and JSON patches.
    let (code, _) = api_error(
        hw.patch(
            "node-mp",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await,
    );
    assert_eq!(code, 404);
    let (code, _) = api_error(
        hw.patch(
            "node-mp",
            &pp,
            &json_patch(json!([{"op": "add", "path": "/metadata/labels", "value": {}}])),
        )
        .await,
    );
    assert_eq!(code, 404);

    let obj: DynamicObject = serde_json::from_value(labelled(
        "node-mp",
        "02:00:00:00:a0:02",
        json!({"rack": "r1", "stale": "x"}),
    ))
    .unwrap();
    let created = hw.create(&PostParams::default(), &obj).await.unwrap();

    // Merge patch (RFC 7386): maps merge, null deletes.
    let merged = hw
        .patch(
            "node-mp",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2", "stale": null}}, "spec": {"tinkVersion": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.as_ref().unwrap().iter().collect::<Vec<_>>(),
        vec![(&"rack".to_string(), &"r2".to_string())]
    );
    assert_eq!(merged.data["spec"]["tinkVersion"], 2);
    assert_eq!(merged.data["spec"]["agentID"], "02:00:00:00:a0:02", "the rest is kept");
    assert_ne!(rv(&merged), rv(&created));
    // A merge patch that changes nothing writes nothing.
    let events = kube.event_count();
    let same = hw
        .patch(
            "node-mp",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&merged));
    assert_eq!(kube.event_count(), events);

    // JSON patch (RFC 6902): add, replace, remove, copy, move and test, all or nothing.
    let patched = hw
        .patch(
            "node-mp",
            &pp,
            &json_patch(json!([
                {"op": "test", "path": "/metadata/labels/rack", "value": "r2"},
                {"op": "add", "path": "/metadata/labels/zone", "value": "z1"},
                {"op": "replace", "path": "/spec/interfaces/0/dhcp/arch", "value": "aarch64"},
                {"op": "copy", "from": "/metadata/labels/zone", "path": "/metadata/labels/zone-copy"},
                {"op": "move", "from": "/metadata/labels/zone-copy", "path": "/metadata/labels/site"},
                {"op": "add", "path": "/spec/interfaces/-", "value": {"dhcp": {"mac": "02:00:00:00:a0:03"}}},
                {"op": "remove", "path": "/spec/tinkVersion"}
            ])),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.as_ref().unwrap().len(), 3);
    assert_eq!(patched.metadata.labels.as_ref().unwrap()["site"], "z1");
    assert_eq!(patched.data["spec"]["interfaces"][0]["dhcp"]["arch"], "aarch64");
    assert_eq!(
        patched.data["spec"]["interfaces"][1]["dhcp"]["mac"],
        "02:00:00:00:a0:03"
    );
    assert!(patched.data["spec"].get("tinkVersion").is_none());
    let before = kube.object("hardware", "tinkerbell", "node-mp").unwrap();
    for (ops, needle) in [
        (
            json!([{"op": "add", "path": "/metadata/labels/x", "value": "y"}, {"op": "test", "path": "/metadata/labels/rack", "value": "r1"}]),
            "test failed",
        ),
        (json!([{"op": "remove", "path": "/spec/nothing"}]), "does not exist"),
        (
            json!([{"op": "replace", "path": "/spec/interfaces/7/dhcp", "value": {}}]),
            "does not exist",
        ),
        (
            json!([{"op": "add", "path": "/spec/interfaces/7", "value": {}}]),
            "out of range",
        ),
    ] {
        let (code, message) = api_error(hw.patch("node-mp", &pp, &json_patch(ops)).await);
        assert_eq!(code, 422, "{message}");
        assert!(message.contains(needle), "{message}");
    }
    assert_eq!(
        kube.object("hardware", "tinkerbell", "node-mp").unwrap(),
        before,
        "a failed JSON patch changes nothing"
    );

    // Strategic merge patch is not for custom resources: 415, as the apiserver answers.
    let (code, message) = api_error(
        hw.patch(
            "node-mp",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await,
    );
    assert_eq!(code, 415, "{message}");
    assert!(message.contains("application/merge-patch+json"), "{message}");

    // resourceVersion in a patch is a precondition; name and namespace cannot change.
    let stale = json!({"metadata": {"resourceVersion": rv(&created), "labels": {"rack": "r5"}}});
    let (code, _) = api_error(hw.patch("node-mp", &pp, &Patch::Merge(stale)).await);
    assert_eq!(code, 409);
    let fresh = json!({"metadata": {"resourceVersion": rv(&patched), "labels": {"rack": "r5"}}});
    hw.patch("node-mp", &pp, &Patch::Merge(fresh)).await.unwrap();
    let (code, _) = api_error(
        hw.patch(
            "node-mp",
            &pp,
            &Patch::Merge(json!({"metadata": {"name": "node-renamed"}})),
        )
        .await,
    );
    assert_eq!(code, 400);
    // A dry run answers with the result and stores nothing.
    let before = kube.object("hardware", "tinkerbell", "node-mp").unwrap();
    let dry = hw
        .patch(
            "node-mp",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"metadata": {"labels": {"rack": "dry"}}})),
        )
        .await
        .unwrap();
    assert_eq!(dry.metadata.labels.unwrap()["rack"], "dry");
    assert_eq!(kube.object("hardware", "tinkerbell", "node-mp").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_with_an_unknown_field_is_rejected_and_nothing_changes() {
    let kube = FakeKube::start().await;
    let (hw, wf) = apis(&kube);
    kube.create(labelled("node-strict", "02:00:00:00:a0:04", json!({"rack": "r1"})));
    kube.create_workflow(json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "node-strict", "namespace": "tinkerbell"},
        "spec": {"templateRef": "ubuntu", "hardwareRef": "node-strict", "hardwareMap": {"device_1": "02:00:00:00:a0:04"}}
    }));
    let hw_before = kube.object("hardware", "tinkerbell", "node-strict").unwrap();
    let wf_before = kube.object("workflows", "tinkerbell", "node-strict").unwrap();
    let mut bogus_apply = hardware("node-strict", "02:00:00:00:a0:04");
    bogus_apply["spec"]["interfaces"][0]["dhcp"]["bogus"] = json!(true);
    let attempts: Vec<(&Api<DynamicObject>, Patch<Value>)> = vec![
        (&hw, Patch::Apply(bogus_apply)),
        (&hw, Patch::Merge(json!({"spec": {"bogus": "x"}}))),
        (
            &hw,
            Patch::Merge(
                json!({"spec": {"interfaces": [{"dhcp": {"mac": "02:00:00:00:a0:04", "lease_time": "long"}}]}}),
            ),
        ),
        (
            &hw,
            Patch::Json(
                serde_json::from_value(json!([{"op": "add", "path": "/spec/interfaces/0/netboot/bogus", "value": 1}]))
                    .unwrap(),
            ),
        ),
        (
            &wf,
            Patch::Merge(json!({"spec": {"hardwareMap": {"device_1": "x"}, "bogus": 1}})),
        ),
        (
            &wf,
            Patch::Apply(
                json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow", "metadata": {"name": "node-strict"}, "spec": {"bogus": 1}}),
            ),
        ),
    ];
    for (api, patch) in attempts {
        let pp = if matches!(patch, Patch::Apply(_)) {
            PatchParams::apply("flux").force()
        } else {
            PatchParams::default()
        };
        let (code, message) = api_error(api.patch("node-strict", &pp, &patch).await);
        assert_eq!(code, 422, "{message}");
        assert!(message.contains("is invalid"), "{message}");
    }
    assert_eq!(kube.object("hardware", "tinkerbell", "node-strict").unwrap(), hw_before);
    assert_eq!(
        kube.object("workflows", "tinkerbell", "node-strict").unwrap(),
        wf_before
    );
    // An apply of an invalid new object creates nothing.
    let mut bogus_new = hardware("node-never", "02:00:00:00:a0:05");
    bogus_new["spec"]["bogus"] = json!(1);
    let (code, _) = api_error(
        hw.patch("node-never", &PatchParams::apply("flux"), &Patch::Apply(bogus_new))
            .await,
    );
    assert_eq!(code, 422);
    assert!(kube.object("hardware", "tinkerbell", "node-never").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_and_selectors_see_patches_and_status_is_its_own_subresource() {
    let kube = FakeKube::start().await;
    let (hw, wf) = apis(&kube);
    kube.create(labelled("node-w", "02:00:00:00:a0:06", json!({"rack": "r1"})));
    let start = rv(&hw.get("node-w").await.unwrap());
    let mut events = hw.watch(&WatchParams::default(), &start).await.unwrap().boxed();
    macro_rules! next {
        () => {
            match tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("an event")
                .unwrap()
                .unwrap()
            {
                WatchEvent::Added(o) => ("ADDED", o),
                WatchEvent::Modified(o) => ("MODIFIED", o),
                WatchEvent::Deleted(o) => ("DELETED", o),
                other => panic!("{other:?}"),
            }
        };
    }

    let pp = PatchParams::default();
    hw.patch(
        "node-w",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
    )
    .await
    .unwrap();
    let (kind, obj) = next!();
    assert_eq!(
        (kind, obj.metadata.labels.unwrap()["rack"].as_str()),
        ("MODIFIED", "r2")
    );
    // A no-op patch sends no event: the next one is the next real change.
    hw.patch(
        "node-w",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"rack": "r2"}}})),
    )
    .await
    .unwrap();
    hw.patch(
        "node-new",
        &PatchParams::apply("flux"),
        &Patch::Apply(labelled("node-new", "02:00:00:00:a0:07", json!({"rack": "r2"}))),
    )
    .await
    .unwrap();
    let (kind, obj) = next!();
    assert_eq!((kind, obj.metadata.name.as_deref()), ("ADDED", Some("node-new")));
    hw.patch(
        "node-w",
        &pp,
        &json_patch(json!([{"op": "replace", "path": "/metadata/labels/rack", "value": "r3"}])),
    )
    .await
    .unwrap();
    let (kind, obj) = next!();
    assert_eq!(
        (kind, obj.metadata.labels.unwrap()["rack"].as_str()),
        ("MODIFIED", "r3")
    );

    // Label selectors see the patched labels.
    let names = |l: kube::api::ObjectList<DynamicObject>| {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(hw.list(&ListParams::default().labels("rack=r3")).await.unwrap()),
        vec!["node-w"]
    );
    assert_eq!(
        names(hw.list(&ListParams::default().labels("rack=r2")).await.unwrap()),
        vec!["node-new"]
    );
    assert!(names(hw.list(&ListParams::default().labels("rack=r1")).await.unwrap()).is_empty());

    // Status: the object's patches leave it alone, the subresource changes only it.
    let with_status = hw
        .patch(
            "node-w",
            &pp,
            &Patch::Merge(json!({"status": {"state": "ignored"}, "metadata": {"labels": {"rack": "r4"}}})),
        )
        .await
        .unwrap();
    assert!(with_status.data.get("status").is_none());
    let status = hw
        .patch_status(
            "node-w",
            &pp,
            &Patch::Merge(json!({"status": {"state": "in_use"}, "spec": {"agentID": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["state"], "in_use");
    assert_eq!(status.data["spec"]["agentID"], "02:00:00:00:a0:06");
    assert_eq!(
        status.metadata.generation, with_status.metadata.generation,
        "status is no spec change"
    );
    let (kind, _) = next!();
    assert_eq!(kind, "MODIFIED");
    let (kind, obj) = next!();
    assert_eq!(
        (kind, obj.data["status"]["state"].as_str()),
        ("MODIFIED", Some("in_use"))
    );

    // Workflows are watched and patched the same way.
    kube.create_workflow(json!({
        "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "node-w", "namespace": "tinkerbell"},
        "spec": {"templateRef": "ubuntu", "hardwareRef": "node-w", "hardwareMap": {"device_1": "02:00:00:00:a0:06"}}
    }));
    let wrv = rv(&wf.get("node-w").await.unwrap());
    let mut wf_events = wf.watch(&WatchParams::default(), &wrv).await.unwrap().boxed();
    wf.patch_status(
        "node-w",
        &pp,
        &Patch::Merge(json!({"status": {"state": "STATE_SUCCESS"}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), wf_events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Modified(o) => assert_eq!(o.data["status"]["state"], "STATE_SUCCESS"),
        other => panic!("{other:?}"),
    }
    let used = kube.rbac_used();
    assert!(
        used.contains(&("tinkerbell.org".into(), "hardware/status".into(), "patch".into())),
        "{used:?}"
    );
    assert!(
        used.contains(&("tinkerbell.org".into(), "workflows/status".into(), "patch".into())),
        "{used:?}"
    );
}
