//! flannel's network config per cluster, end to end through the script API: another
//! network, subnet length, VNI and port show up everywhere flannel puts them, and the
//! host-gw backend routes pods across workers with no VXLAN device and no encapsulation.

mod common;

use common::{assert_nothing_left, sim, HostSnapshot};
use knetsim::script::{Outcome, ScriptSession};

/// kube-proxy's route to the Service range on worker `w`, once it has added it.
const SERVICE_ROUTE: &str = r#"
fn service_route(w) {
    for i in 0..50 {
        let r = w.exec("ip route show 100.64.0.0/16");
        if r != "" { return r; }
        sleep(0.1);
    }
    ""
}
"#;

/// Runs `src` on a fresh simulation `instance`; every `expect` must hold, and nothing of
/// the instance is left afterwards.
fn run_lesson(instance: &str, src: &str, expects: usize) {
    let before = HostSnapshot::take();
    {
        let mut s = ScriptSession::new(sim(instance), false);
        let o = s.run_source(
            &format!("{instance}.rhai"),
            &format!("{SERVICE_ROUTE}{src}"),
        );
        let counts = s.expect_counts();
        let err = s.last_error().map(str::to_string);
        s.sim().teardown().expect("teardown");
        assert_eq!(o, Outcome::Ok, "{err:?}");
        assert_eq!(counts, (expects, 0), "every expect ran and held");
    }
    assert_nothing_left(instance, &[]);
    assert_eq!(before, HostSnapshot::take(), "the root namespace changed");
}

const KNOBS: &str = r#"
let C0 = cluster("0", #{ workers: 2, etcd: 1, flannel: #{ network: "172.20.0.0/16", subnet_len: 24, vni: 42, port: 4789 } });
start();
let w1 = C0.get("w1");
let w2 = C0.get("w2");
expect(C0.flannel.device == "flannel.42" && C0.flannel.subnet_min == "172.20.1.0", "the cluster reports its config");
let a = w1.create_container("c1");
let b = w2.create_container("c2");
expect(a.ip.starts_with("172.20.") && b.ip.starts_with("172.20."), "pod IPs come from the new network");
let ping = w1.exec_container("c1", `ping -c 2 -W 2 ${b.ip}`);
expect(ping.contains(" 0% packet loss"), "pods on two workers reach each other");
let dev = w1.exec("ip -d link show flannel.42");
expect(dev.contains("vxlan id 42") && dev.contains("dstport 4789") && dev.contains("mtu 1450"), "ip -d link: flannel.42, VNI 42, UDP 4789");
expect(!w2.exec("ip -br link").contains("flannel.100"), "no device of the default VNI");
let config = w1.exec("etcdctl get /coreos.com/network/config --print-value-only");
expect(config.contains(`"Network":"172.20.0.0/16","SubnetLen":24`) && config.contains(`"VNI":42,"Port":4789`), "etcd holds the config");
let leases = w1.exec("etcdctl get --prefix /coreos.com/network/subnets --keys-only").split("\n").filter(|l| l.contains("/subnets/172.20.") && l.ends_with(".0-24"));
expect(leases.len() == 2, "two /24 leases in 172.20.0.0/16");
let env = w1.exec("cat " + w1.dir + "/subnet.env");
expect(env.contains("FLANNEL_NETWORK=172.20.0.0/16") && env.contains("FLANNEL_SUBNET=172.20.") && env.contains(".1/24") && env.contains("FLANNEL_MTU=1450"), "subnet.env");
expect(w1.exec("nft list table ip flannel-ipv4").contains("172.20.0.0/16"), "the masquerade rules name the new network");
expect(w1.exec("ip route show dev flannel.42").contains(" via ") , "routes to the other worker's subnet over flannel.42");
let svc = service_route(w1);
expect(svc.contains("dev flannel.42"), "kube-proxy's Service route uses the cluster's device");
let enc = w1.trace("c1", b.ip, #{ proto: "icmp" }).filter(|h| h.what == "encapsulate");
expect(enc.len() == 1 && enc[0].detail.contains("→ 4789") && enc[0].detail.contains("VNI 42"), "the trace walk sees UDP 4789 and VNI 42 on the wire");
"#;

#[test]
fn another_network_subnet_length_vni_and_port_show_everywhere() {
    run_lesson("fl-knobs", KNOBS, 12);
}

const HOST_GW: &str = r#"
let C0 = cluster("0", #{ workers: 2, etcd: 1, flannel: "FILE" });
start();
let w1 = C0.get("w1");
let w2 = C0.get("w2");
expect(C0.flannel.backend == "host-gw" && C0.flannel.device == "eth0", "the cluster reports host-gw");
for w in [w1, w2] {
    expect(w.exec("ip -d link show type vxlan") == "", `${w.name} has no VXLAN device`);
}
let b = w2.create_container("c2");
w1.create_container("c1");
let route = w1.exec("ip route show");
expect(route.contains(` via ${w2.ip} dev eth0`), "w1 routes w2's pod subnet via w2's underlay address");
let env = w1.exec("cat " + w1.dir + "/subnet.env");
expect(env.contains("FLANNEL_MTU=1500"), "no encapsulation, so the pods keep the underlay's MTU");
let lease = w1.exec("etcdctl get --prefix /coreos.com/network/subnets --print-value-only");
expect(lease.contains(`"BackendType":"host-gw"`) && !lease.contains("VtepMAC"), "host-gw leases carry only the node's address");
let pcap = w1.dir + "/hostgw.pcap";
w1.exec_async(`tcpdump -i eth0 -nn -U -Z root -c 2 -w ${pcap} icmp`);
sleep(0.7);
let ping = w1.exec_container("c1", `ping -c 2 -W 2 ${b.ip}`);
expect(ping.contains(" 0% packet loss"), "pods on two workers reach each other over host-gw");
sleep(0.3);
let wire = w1.exec(`tcpdump -nn -r ${pcap} 2>/dev/null`);
print(wire);
expect(wire.contains(`> ${b.ip}: ICMP echo request`), "the underlay carries the pods' own IP packets");
let svc = service_route(w1);
expect(svc.contains("dev eth0"), "kube-proxy's Service route follows the backend");
let hops = w1.trace("c1", b.ip, #{ proto: "icmp" });
expect(hops[-1].what == "answer" && hops.filter(|h| h.what == "encapsulate").len() == 0, "the trace walk follows the plain route: c2 answers, nothing is encapsulated");
let w3 = C0.add_worker();
w3.create_container("c3");
let joined = w3.exec_container("c3", `ping -c 1 -W 2 ${b.ip}`);
expect(joined.contains(" 0% packet loss") && w1.exec("ip route show").contains(` via ${w3.ip} dev eth0`), "a joining worker routes and is routed to");
// A route whose lease vanished while the agent was stopped goes when it starts again.
w1.stop_agent("flanneld");
w1.exec(`ip route add 11.77.0.0/20 via ${w2.ip} dev eth0`);
w1.start_agent("flanneld");
let stale = true;
for i in 0..50 { if !w1.exec("ip route show").contains("11.77.0.0/20") { stale = false; break } sleep(0.1); }
expect(!stale && w1.exec("ip route show").contains(` via ${w2.ip} dev eth0`), "a restarted host-gw agent removes the stale route and keeps the live one");
"#;

/// host-gw, from a file in flannel's own format (the original's conf/ file with another
/// backend).
#[test]
fn host_gw_routes_pods_across_workers_without_vxlan() {
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let file = Removed(std::env::temp_dir().join(format!("fl-hostgw-{}.json", std::process::id())));
    std::fs::write(
        &file.0,
        r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"host-gw"}}"#,
    )
    .unwrap();
    run_lesson(
        "fl-hostgw",
        &HOST_GW.replace("FILE", &file.0.display().to_string()),
        12,
    );
}
