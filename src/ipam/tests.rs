use super::*;

fn config(yaml: &str) -> IpamConfig {
    yaml_serde::from_str(yaml).unwrap()
}

const TWO_POOLS: &str = r#"
discovery:
  name: discovery
  cidr: 10.0.9.0/24
  ranges: ["10.0.9.100-10.0.9.103"]
  gateway: 10.0.9.1
pools:
  - name: rack1
    cidr: 10.0.10.0/24
    ranges: ["10.0.10.10-10.0.10.20"]
    exclude: ["10.0.10.12", "10.0.10.15-10.0.10.16"]
    gateway: 10.0.10.10
    nameservers: [10.0.0.53]
    match: {location: rack1}
  - name: default
    cidr: 10.0.11.0/30
    gateway: 10.0.11.1
"#;

#[test]
fn candidates_skip_excluded_gateway_network_and_broadcast() {
    let pools = Pools::from_config(&config(TWO_POOLS)).unwrap();
    let rack1 = pools.named("rack1").unwrap();
    let got: Vec<String> = rack1.candidates().map(|ip| ip.to_string()).collect();
    assert_eq!(
        got,
        [
            "10.0.10.11",
            "10.0.10.13",
            "10.0.10.14",
            "10.0.10.17",
            "10.0.10.18",
            "10.0.10.19",
            "10.0.10.20"
        ]
    );
    // A /30 without ranges: the two host addresses, less the gateway.
    let default = pools.named("default").unwrap();
    assert_eq!(
        default.candidates().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        ["10.0.11.2"]
    );
    let a = rack1.address("10.0.10.11".parse().unwrap());
    assert_eq!(
        (a.netmask.as_str(), a.prefix, a.gateway.as_deref()),
        ("255.255.255.0", 24, Some("10.0.10.10"))
    );
}

#[test]
fn next_fit_starts_after_the_last_and_wraps_around() {
    let pools = Pools::from_config(&config(TWO_POOLS)).unwrap();
    let rack1 = pools.named("rack1").unwrap();
    let all: Vec<_> = rack1.candidates().collect();
    for (i, after) in all.iter().enumerate() {
        let got: Vec<_> = rack1.candidates_after(Some(*after)).collect();
        let mut want = all[i + 1..].to_vec();
        want.extend_from_slice(&all[..=i]);
        assert_eq!(got, want, "after {after}");
    }
    assert_eq!(rack1.candidates_after(None).collect::<Vec<_>>(), all);
    // From an address outside the ranges (the pool changed since).
    let got: Vec<_> = rack1.candidates_after(Some("10.0.10.14".parse().unwrap())).collect();
    assert_eq!(got.len(), all.len());
}

#[test]
fn a_machine_gets_the_first_pool_that_fits() {
    let pools = Pools::from_config(&config(TWO_POOLS)).unwrap();
    let never = |_: &str| false;
    let at = |location| Placement {
        location,
        ..Placement::default()
    };
    assert_eq!(pools.for_machine(&at(Some("rack1")), &never).unwrap().name, "rack1");
    assert_eq!(pools.for_machine(&at(Some("rack2")), &never).unwrap().name, "default");
    assert_eq!(pools.for_machine(&at(None), &never).unwrap().name, "default");
    assert_eq!(pools.discovery.as_ref().unwrap().name, "discovery");
}

#[test]
fn pools_are_chosen_by_option_82_lldp_rack_or_a_condition() {
    let pools = Pools::from_config(&config(
        "pools:
  - {name: port, cidr: 10.1.0.0/24, match: {relay: 10.1.0.1, circuit_id: Ethernet1/12}}
  - {name: switch, cidr: 10.2.0.0/24, match: {remote_id: leaf-7}}
  - {name: lldp, cidr: 10.3.0.0/24, match: {switch: leaf-9}}
  - {name: rack, cidr: 10.4.0.0/24, match: {rack: r12}}
  - {name: gpu, cidr: 10.5.0.0/24, match: {when: 'facts.gpus | length > 0'}}
  - {name: default, cidr: 10.9.0.0/24}",
    ))
    .unwrap();
    let chosen = |at: Placement, gpu: bool| pools.for_machine(&at, &|_| gpu).unwrap().name.clone();
    let relay = Some("10.1.0.1".parse().unwrap());
    let port = Placement {
        relay,
        circuit_id: Some("Ethernet1/12"),
        ..Placement::default()
    };
    assert_eq!(chosen(port, false), "port");
    // Every field given must fit: the relay alone is not enough.
    let other_port = Placement {
        relay,
        circuit_id: Some("Ethernet1/13"),
        ..Placement::default()
    };
    assert_eq!(chosen(other_port, false), "default");
    let leaf7 = Placement {
        remote_id: Some("leaf-7"),
        ..Placement::default()
    };
    assert_eq!(chosen(leaf7, false), "switch");
    let cabled = Placement {
        switches: vec!["leaf-1", "leaf-9"],
        ..Placement::default()
    };
    assert_eq!(chosen(cabled, false), "lldp");
    let racked = Placement {
        rack: Some("r12"),
        ..Placement::default()
    };
    assert_eq!(chosen(racked, false), "rack");
    assert_eq!(chosen(Placement::default(), true), "gpu");
    assert_eq!(chosen(Placement::default(), false), "default");
    assert_eq!(
        pools.conditions().collect::<Vec<_>>(),
        [("ipam.pools[4].match.when".to_string(), "facts.gpus | length > 0")]
    );
}

#[test]
fn bad_pools_are_refused_naming_the_key() {
    for (yaml, says) in [
        (
            "pools: [{name: a, cidr: 10.0.0.0/24, gateway: 10.0.1.1}]",
            "ipam.pools[0].gateway: 10.0.1.1 is outside the pool's cidr 10.0.0.0/24",
        ),
        (
            "pools: [{name: a, cidr: 10.0.0.0/24, ranges: [10.0.0.50-10.0.1.10]}]",
            "ipam.pools[0].ranges[0]: 10.0.1.10 is outside",
        ),
        (
            "pools: [{name: a, cidr: 10.0.0.0/24, ranges: [10.0.0.9-10.0.0.2]}]",
            "runs backwards",
        ),
        (
            "discovery: {name: d, cidr: 10.0.0.0/24, ranges: [10.0.0.100-10.0.0.150]}\npools: [{name: a, cidr: 10.0.0.0/24, ranges: [10.0.0.140-10.0.0.200]}]",
            "pools \"d\" and \"a\" overlap (both may hand out 10.0.0.140)",
        ),
        (
            "pools: [{name: a, cidr: 10.0.0.0/24}, {name: a, cidr: 10.0.1.0/24}]",
            "two pools are named \"a\"",
        ),
        ("pools: [{name: a, cidr: 10.0.0.0/31}]", "leaves no addresses"),
    ] {
        let err = Pools::from_config(&config(yaml)).unwrap_err();
        assert!(err.contains(says), "{yaml}: {err}");
    }
}
