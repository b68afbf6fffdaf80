//! Services through the simulator: bad input is refused with a clear message and leaves
//! every worker's ruleset exactly as it was; the endpoints controller follows pods.

mod common;

use common::{tear_down, two_workers};
use knetsim::sim::{PortSpec, ServiceSpec};
use std::collections::BTreeMap;

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn web_spec(port: i64) -> ServiceSpec {
    ServiceSpec {
        selector: labels("web"),
        ports: vec![PortSpec {
            port,
            target: Some(8000),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn bad_service_input_is_refused_and_nothing_is_half_applied() {
    let (sim, c, w1, w2) = two_workers("svc1");
    w1.create_container("c1", BTreeMap::new()).unwrap();
    w2.create_container("c2", labels("web")).unwrap();
    c.kp_vip_add("100.64.10.1", &["c2".to_string()]).unwrap();
    let before = w1.exec("nft list ruleset").unwrap();

    let cases: Vec<(&str, anyhow::Result<()>)> = vec![
        (
            "outside the service range",
            c.kp_vip_add("10.9.9.9", &["c2".to_string()]),
        ),
        (
            "already in use",
            c.kp_vip_add("100.64.10.1", &["c2".to_string()]),
        ),
        (
            "no container 'c9'",
            c.kp_vip_add("100.64.10.2", &["c9".to_string()]),
        ),
        (
            "not an IPv4 address",
            c.kp_vip_add("banana", &["c2".to_string()]),
        ),
        ("invalid port 0", c.service("web", &web_spec(0)).map(|_| ())),
        (
            "invalid port 70000",
            c.service("web", &web_spec(70000)).map(|_| ()),
        ),
        (
            "outside the service range",
            c.service(
                "web",
                &ServiceSpec {
                    cluster_ip: Some("11.0.0.9".into()),
                    ..web_spec(80)
                },
            )
            .map(|_| ()),
        ),
        (
            "invalid Service name",
            c.service("Web_1", &web_spec(80)).map(|_| ()),
        ),
        ("there is no VIP", c.kp_vip_del("100.64.10.77")),
    ];
    for (want, res) in cases {
        let msg = format!("{:#}", res.expect_err(want));
        assert!(msg.contains(want), "expected '{want}' in: {msg}");
    }
    assert_eq!(
        before,
        w1.exec("nft list ruleset").unwrap(),
        "a rejected change altered the ruleset"
    );
    tear_down(&sim, &[]);
}

#[test]
fn endpoints_follow_pods_and_a_joining_worker_gets_existing_services() {
    let (sim, c, w1, w2) = two_workers("svc2");
    let ip = c.service("web", &web_spec(80)).unwrap();
    let rejecting = w1
        .exec("nft list map ip kube-proxy no-endpoint-services")
        .unwrap();
    assert!(
        rejecting.contains(&format!("{ip} . tcp . 80")),
        "a Service without endpoints rejects: {rejecting}"
    );
    let pod = w2.create_container("c2", labels("web")).unwrap();
    let eps = w1
        .exec("etcdctl get /registry/services/endpoints/default/web --print-value-only")
        .unwrap();
    assert!(eps.contains(&pod.ip), "the new pod is an endpoint: {eps}");
    let table = w1.exec("nft list table ip kube-proxy").unwrap();
    assert!(
        table.contains(&format!("dnat to {}:8000", pod.ip)),
        "{table}"
    );
    let w3 = c.add_worker().unwrap();
    let table = w3.exec("nft list table ip kube-proxy").unwrap();
    assert!(
        table.contains(&format!("dnat to {}:8000", pod.ip)),
        "a joining worker programs existing Services: {table}"
    );
    w2.delete_container("c2").unwrap();
    let table = w1.exec("nft list table ip kube-proxy").unwrap();
    assert!(
        !table.contains(&pod.ip),
        "the deleted pod's endpoint chain is gone: {table}"
    );
    tear_down(&sim, &[]);
}
