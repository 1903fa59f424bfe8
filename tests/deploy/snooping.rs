//! The dhcp-snooping component (issue 17, exposure): only `registrar snoop` joins the
//! node's network, with one capability, no port and no service account token; the API
//! stays on the pod network; both hold the same Secret's token; and the snooper's shipped
//! configuration loads and forwards to the API's Service.

use super::*;

fn snoop_token_ref(container: &Value) -> Option<Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "REGISTRAR_SNOOP_TOKEN")
        .map(|e| e["valueFrom"]["secretKeyRef"].clone())
}

#[test]
fn only_the_snooper_is_on_the_nodes_network_and_it_opens_no_port() {
    if kubectl_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut snooping = vec![];
    for (name, objects) in installs() {
        let api = deployment(objects);
        let api_pod = &api["spec"]["template"]["spec"];
        assert!(
            api_pod["hostNetwork"].is_null() || api_pod["hostNetwork"] == false,
            "{name}: the API is on the pod network"
        );
        let daemonsets = find(objects, "DaemonSet");
        if daemonsets.is_empty() {
            continue;
        }
        snooping.push(name.as_str());
        assert_eq!(daemonsets.len(), 1, "{name}");
        let ds = daemonsets[0];
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(
            pod["hostNetwork"], true,
            "{name}: DISCOVERs are the node network's broadcasts"
        );
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{name}");
        assert!(
            pod["nodeSelector"].as_object().is_some_and(|s| !s.is_empty()),
            "{name}: pinned to the provisioning network's node"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}: no API credentials");
        let c = container(ds);
        assert_eq!(c["args"][0], "snoop", "{name}");
        assert!(
            c["ports"].as_array().is_none_or(|p| p.is_empty()),
            "{name}: the snooper opens no port"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(sc["capabilities"]["add"], json!(["NET_BIND_SERVICE"]), "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );

        // One token on both sides: required by the snooper, optional for the API.
        let snoop_ref = snoop_token_ref(c).unwrap_or_else(|| panic!("{name}: the snooper has no token"));
        let api_ref = snoop_token_ref(container(api)).unwrap_or_else(|| panic!("{name}: the API takes no token"));
        assert_eq!(
            (&snoop_ref["name"], &snoop_ref["key"]),
            (&api_ref["name"], &api_ref["key"]),
            "{name}"
        );
        assert!(snoop_ref["optional"] != true, "{name}: the snooper needs its token");

        // Its configuration, from the ConfigMap it mounts, loads and names the Service.
        let config_path = c["args"][2].as_str().unwrap();
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| config_path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("{name}: {config_path} is on no volume"));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let map_name = volume["configMap"]["name"].as_str().unwrap();
        let map = find(objects, "ConfigMap")
            .into_iter()
            .find(|m| m["metadata"]["name"] == map_name)
            .unwrap_or_else(|| panic!("{name}: no ConfigMap {map_name}"));
        let file = Path::new(config_path).file_name().unwrap().to_str().unwrap();
        let path = dir.path().join(format!("{name}-{file}"));
        std::fs::write(&path, map["data"][file].as_str().unwrap()).unwrap();
        let config = registrar::config::Config::load(Some(&path))
            .unwrap_or_else(|e| panic!("{name}: {file} does not load: {e:#}"));
        let service = find(objects, "Service")
            .into_iter()
            .find(|s| s["metadata"]["name"] == "registrar")
            .unwrap();
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap();
        assert_eq!(
            config.dhcp.forward_to,
            format!(
                "http://registrar.{}.svc:{}",
                service["metadata"]["namespace"].as_str().unwrap(),
                port["port"]
            ),
            "{name}: the snooper forwards to the API's Service"
        );
        assert_eq!(
            ds["metadata"]["namespace"], api["metadata"]["namespace"],
            "{name}: beside the API, where the Secret is"
        );
    }
    for setup in ["component-dhcp-snooping", "example-github"] {
        assert!(snooping.contains(&setup), "{setup} has no snooper: {snooping:?}");
    }
}
