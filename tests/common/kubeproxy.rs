//! The kube-proxy tests' bed: a small topology of namespaces (client --- node[bridge] ---
//! backends) and TCP servers and clients on threads inside namespaces.

use super::{sh, Guard};
use knetsim::components::kubeproxy::Endpoints;
use knetsim::netns;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// client (10.0.0.2) --veth-- node (10.0.0.1; bridge br0 11.10.0.1/24) --veth-- backends
/// (11.10.0.2, 11.10.0.3, ...). The node forwards and has `100.64.0.0/16 dev br0`. Bridge
/// ports are in hairpin mode, as the CNI bridge plugin sets them with `hairpinMode: true`
/// (kube-flannel's default): a pod reaching a Service that picks the pod itself needs it.
pub struct Topo {
    pub client: String,
    pub node: String,
    pub backends: Vec<(String, std::net::Ipv4Addr)>,
}

pub fn topology(g: &mut Guard, prefix: &str, backends: usize) -> Topo {
    let client = g.ns(&format!("{prefix}-client"));
    let node = g.ns(&format!("{prefix}-node"));
    sh(&node, "sysctl -qw net.ipv4.ip_forward=1");
    sh(
        &node,
        &format!(
            "ip link add up0 type veth peer name eth0 netns {client} && ip addr add 10.0.0.1/24 dev up0 && ip link set up0 up \
             && ip link add br0 type bridge && ip addr add 11.10.0.1/24 dev br0 && ip link set br0 up"
        ),
    );
    sh(&client, "ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.0.1");
    let mut bs = Vec::new();
    for i in 0..backends {
        let b = g.ns(&format!("{prefix}-b{}", i + 1));
        let ip: std::net::Ipv4Addr = format!("11.10.0.{}", i + 2).parse().unwrap();
        sh(
            &node,
            &format!("ip link add vb{i} type veth peer name eth0 netns {b} && ip link set vb{i} master br0 && ip link set vb{i} up && bridge link set dev vb{i} hairpin on"),
        );
        sh(&b, &format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 11.10.0.1"));
        bs.push((b, ip));
    }
    knetsim::components::kubeproxy::ensure_service_route(Some(&node), "br0").unwrap();
    Topo {
        client,
        node,
        backends: bs,
    }
}

/// For a test that needs root (None, the skip said, without it): a guard and a
/// [`topology`] with two backends, each answering "hello from bN" on port 8000, and their
/// addresses.
pub fn serving_topology(prefix: &str) -> Option<(Guard, Topo, [std::net::Ipv4Addr; 2])> {
    if !super::root_or_skip() {
        return None;
    }
    let mut g = Guard::default();
    let t = topology(&mut g, prefix, 2);
    for (k, (ns, _)) in t.backends.iter().enumerate() {
        serve(&g, ns, 8000, &format!("hello from b{}", k + 1));
    }
    let ips = [t.backends[0].1, t.backends[1].1];
    Some((g, t, ips))
}

/// Endpoints of Service `name` in namespace `default`: (address, pod) on node `node`.
pub fn endpoints(name: &str, ips: &[(std::net::Ipv4Addr, &str)]) -> Endpoints {
    Endpoints {
        service: name.into(),
        namespace: "default".into(),
        addresses: ips
            .iter()
            .map(
                |(ip, pod)| knetsim::components::kubeproxy::EndpointAddress {
                    ip: *ip,
                    pod: pod.to_string(),
                    node: "node".into(),
                },
            )
            .collect(),
    }
}

/// A TCP server on a thread inside `ns`, answering every connection with `reply`.
pub fn serve(g: &Guard, ns: &str, port: u16, reply: &str) {
    let file = netns::open(ns).unwrap();
    let stop = g.stop.clone();
    let reply = reply.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Connects from inside `ns` and returns what the server said, or the connect error.
pub fn connect(ns: &str, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    netns::run_in(ns, move || {
        Ok((|| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })())
    })
    .unwrap()
}

pub fn ruleset(ns: &str) -> String {
    sh(ns, "nft list ruleset")
}
