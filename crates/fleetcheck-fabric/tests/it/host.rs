use std::process::Command;
use std::time::Duration;

use fleetcheck_fabric::{Backend, ExecRequest};

use crate::support::{backend, ip, require_root, spec};

/// The host namespace's addresses, routes, rules and links as JSON, minus lifetimes that tick.
fn host_network() -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for args in [
        &["-j", "addr"][..],
        &["-j", "route", "show", "table", "all"],
        &["-j", "rule"],
        &["-j", "link"],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        assert!(out.status.success());
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        strip(&mut v);
        all.push(v);
    }
    all
}

fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !k.contains("life_time") && k != "stats64" && k != "stats");
            map.values_mut().for_each(strip);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

#[test]
fn host_network_namespace_is_untouched() {
    if !require_root("host_network_namespace_is_untouched") {
        return;
    }
    let before = host_network();
    let backend = backend();
    let net = backend
        .create(&spec(3, |_| {
            vec!["ip route add 10.99.0.0/16 dev eth0".into()]
        }))
        .unwrap();
    net.boot(&["m1", "m2", "m3"])
        .into_iter()
        .for_each(|r| r.unwrap());
    assert!(net.ping("m1", ip(3), Duration::from_secs(2)).unwrap());
    net.exec(
        "m2",
        &ExecRequest::shell("ip addr add 10.99.0.2/16 dev eth0"),
    )
    .unwrap();
    let during = host_network();
    net.teardown().unwrap();
    drop(backend);
    let after = host_network();
    assert_eq!(before, during, "host network changed while a network ran");
    assert_eq!(before, after, "host network changed after a run");
}
