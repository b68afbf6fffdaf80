//! `knetsim flanneld` against a real etcd, in namespaces this test creates (needs root).
//!
//! World per test: `flt-<t>-sw` holds bridge `br0` (the underlay switch); `flt-<t>-e` runs a
//! single-member etcd at 10.1.0.1; workers `flt-<t>-wN` have `eth0` 10.0.0.(N+2)/8 on the
//! bridge and run one agent each.

mod common;

use common::root_or_skip;

use common::{run, sh, wait_for, wait_until};
use knetsim::components::etcd;
use knetsim::netns;
use knetsim::netns::process::{run_shell, spawn_daemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

const ETCD_IP: &str = "10.1.0.1";
const PREFIX: &str = "/coreos.com/network";
const CONFIG: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;

struct World {
    name: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl World {
    fn new(test: &str) -> World {
        let name = format!("flt-{test}");
        // tmpfs when there is one: etcd's fsyncs on a busy disk can stall it for seconds
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = World {
            name,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let sw = w.ns("sw");
        w.add_ns(&sw);
        sh(
            &sw,
            "ip link add br0 type bridge && ip link set br0 up && ip link set lo up",
        );
        w
    }

    /// A world with etcd running and the network config ([`CONFIG`]) in it.
    fn configured(test: &str) -> World {
        let mut w = World::new(test);
        w.start_etcd();
        w.etcd(&format!("put {PREFIX}/config '{CONFIG}'"));
        w
    }

    fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    fn add_ns(&mut self, ns: &str) {
        netns::delete(ns).unwrap();
        netns::create(ns).unwrap();
        self.namespaces.push(ns.to_string());
    }

    /// A host namespace with eth0 = `ip`/8 plugged into the switch.
    fn host(&mut self, short: &str, ip: &str) -> String {
        let ns = self.ns(short);
        self.add_ns(&ns);
        let sw = self.ns("sw");
        sh(
            &sw,
            &format!("ip link add {short} type veth peer name eth0 netns {ns} && ip link set {short} master br0 up"),
        );
        sh(
            &ns,
            &format!("ip link set lo up && ip addr add {ip}/8 dev eth0 && ip link set eth0 up"),
        );
        ns
    }

    fn spawn(&mut self, label: &str, ns: &str, program: &str, args: &[String]) -> u32 {
        let log = self.dir.join(format!("{label}.log"));
        let child = spawn_daemon(Some(ns), program, args, &log).unwrap();
        let pid = child.id();
        self.children.push((label.to_string(), child));
        pid
    }

    fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    fn start_etcd(&mut self) -> String {
        self.host("e", ETCD_IP);
        self.spawn_etcd()
    }

    /// (Re)starts etcd in its namespace on the same data directory.
    fn spawn_etcd(&mut self) -> String {
        let ns = self.ns("e");
        let data = self.dir.join("etcd-data");
        let c = format!("http://{ETCD_IP}:2379");
        let p = format!("http://{ETCD_IP}:2380");
        let args: Vec<String> = [
            "--name",
            "e1",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &c,
            "--advertise-client-urls",
            &c,
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
            "--initial-cluster",
            &format!("e1={p}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(etcd::timing_args())
        .collect();
        self.spawn("etcd", &ns, "etcd", &args);
        wait_for("etcd to answer", Duration::from_secs(60), || {
            run(Some(&ns), &etcdctl("endpoint health"))
                .success()
                .then_some(())
        });
        ns
    }

    fn etcd(&self, cmd: &str) -> String {
        sh(&self.ns("e"), &etcdctl(cmd))
    }

    fn subnet_file(&self, worker: &str) -> PathBuf {
        self.dir.join(worker).join("subnet.env")
    }

    fn start_agent(&mut self, worker: &str, ip: &str, extra: &[&str]) -> u32 {
        self.start_agent_with(worker, ip, &format!("http://{ETCD_IP}:2379"), extra)
    }

    fn start_agent_with(&mut self, worker: &str, ip: &str, endpoints: &str, extra: &[&str]) -> u32 {
        let ns = self.ns(worker);
        let mut args: Vec<String> = vec![
            "flanneld".into(),
            "--etcd-endpoints".into(),
            endpoints.into(),
            "--iface".into(),
            ip.into(),
            "--subnet-file".into(),
            self.subnet_file(worker).to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(worker, &ns, env!("CARGO_BIN_EXE_knetsim"), &args)
    }

    /// Ends one child (by its pid) with `sig` and returns its exit code, if any.
    fn stop(&mut self, label: &str, sig: Signal) -> Option<i32> {
        let i = self.children.iter().position(|(l, _)| l == label)?;
        let (_, mut child) = self.children.remove(i);
        let _ = kill(Pid::from_raw(child.id() as i32), sig);
        child.wait().ok().and_then(|s| s.code())
    }

    /// Waits until child `label` exits on its own; returns its exit code.
    fn wait_exit(&mut self, label: &str) -> Option<i32> {
        let i = self.children.iter().position(|(l, _)| l == label)?;
        let status = wait_for(&format!("{label} to exit"), Duration::from_secs(60), || {
            self.children[i].1.try_wait().ok().flatten()
        });
        self.children.remove(i);
        status.code()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = netns::delete(ns);
        }
        if std::env::var_os("FLT_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs one flannel agent in `ns` against the test's etcd (`eth0`, subnet file `sf`, then
/// `extra` flags) until it exits, as a test of an error that ends it does.
fn agent_to_exit(ns: &str, sf: &std::path::Path, extra: &str) -> netns::process::Output {
    run(
        Some(ns),
        &format!(
            "{} flanneld --etcd-endpoints http://{ETCD_IP}:2379 --iface eth0 {extra} --subnet-file {}",
            env!("CARGO_BIN_EXE_knetsim"),
            sf.display()
        ),
    )
}

fn etcdctl(cmd: &str) -> String {
    format!("ETCDCTL_API=3 etcdctl --endpoints http://{ETCD_IP}:2379 --dial-timeout 2s --command-timeout 20s {cmd}")
}

/// (key, value) pairs under the subnets prefix.
fn leases(w: &World) -> Vec<(String, String)> {
    let out = w.etcd(&format!("get --prefix {PREFIX}/subnets/"));
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

fn lease_of(w: &World, public_ip: &str) -> Option<(String, String)> {
    leases(w)
        .into_iter()
        .find(|(_, v)| v.contains(&format!("\"PublicIP\":\"{public_ip}\"")))
}

/// "11.12.16.0" and 20 from a key like /coreos.com/network/subnets/11.12.16.0-20.
fn subnet_of_key(key: &str) -> (String, u8) {
    let last = key.rsplit('/').next().unwrap();
    let (ip, len) = last.split_once('-').unwrap();
    (ip.to_string(), len.parse().unwrap())
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = sh(ns, &format!("ip -o link show {dev}"));
    let i = out.find("link/ether ").expect("an ether address");
    out[i + 11..i + 28].to_string()
}

fn entries_for(ns: &str, subnet: &str, len: u8, mac: &str, public_ip: &str) -> (bool, bool, bool) {
    let neigh = sh(ns, "ip neigh show dev flannel.100");
    let fdb = sh(ns, "bridge fdb show dev flannel.100");
    let routes = sh(ns, "ip route show dev flannel.100");
    (
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{subnet} lladdr {mac}")) && l.contains("PERMANENT")),
        fdb.lines().any(|l| {
            l.starts_with(&format!("{mac} dst {public_ip}")) && l.contains("self permanent")
        }),
        routes.lines().any(|l| {
            l.starts_with(&format!("{subnet}/{len} via {subnet}")) && l.contains("onlink")
        }),
    )
}

#[test]
fn agents_lease_program_overlay_and_survive_restarts() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::configured("main");
    let workers = [("w1", "10.0.0.3"), ("w2", "10.0.0.4")];
    for (n, ip) in workers {
        w.host(n, ip);
    }
    // w2 has a leftover flannel.100 with the wrong port: the agent recreates it
    sh(
        &w.ns("w2"),
        "ip link add flannel.100 type vxlan id 100 dstport 4789 dev eth0 local 10.0.0.4",
    );
    let w1_agent = w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    w.start_agent("w2", "10.0.0.4", &[]);

    // 1. a lease per worker, in flannel's exact JSON, carrying the device's MAC
    let mut subnets = Vec::new();
    for (n, ip) in workers {
        let ns = w.ns(n);
        let (key, value) = wait_for(&format!("lease of {n}"), Duration::from_secs(120), || {
            lease_of(&w, ip)
        });
        let mac = mac_of(&ns, "flannel.100");
        assert_eq!(
            value,
            format!(
                r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":100,"VtepMAC":"{mac}"}}}}"#
            )
        );
        let (sn, len) = subnet_of_key(&key);
        assert_eq!(len, 20);
        let o: Vec<u8> = sn.split('.').map(|x| x.parse().unwrap()).collect();
        assert_eq!(o[0], 11);
        assert!(
            (10..=99).contains(&o[1]) && o[2].is_multiple_of(16) && o[3] == 0,
            "{sn} outside SubnetMin..SubnetMax"
        );
        // the key carries an etcd lease with a TTL of about 24 h
        let lease_id = sh(&w.ns("e"), &etcdctl(&format!("get {key} -w json")));
        let id = lease_id
            .split("\"lease\":")
            .nth(1)
            .unwrap()
            .split([',', '}'])
            .next()
            .unwrap()
            .trim()
            .to_string();
        let ttl = w.etcd(&format!(
            "lease timetolive {:x}",
            id.parse::<i64>().unwrap()
        ));
        let granted: u64 = ttl
            .split("granted with TTL(")
            .nth(1)
            .unwrap()
            .split('s')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(granted, 86400, "{ttl}");
        // subnet.env
        let env = wait_for("subnet.env", Duration::from_secs(60), || {
            std::fs::read_to_string(w.subnet_file(n)).ok()
        });
        let masq = n == "w1";
        let gw = format!("{}.{}.{}.1", o[0], o[1], o[2]);
        assert_eq!(
            env,
            format!("FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET={gw}/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={masq}\n")
        );
        // the device
        let d = sh(&ns, "ip -d link show flannel.100");
        assert!(d.contains("mtu 1450"), "{d}");
        assert!(d.contains("vxlan id 100"), "{d}");
        assert!(
            d.contains(&format!("local {ip}")) && d.contains("dev eth0"),
            "{d}"
        );
        assert!(
            d.contains("dstport 8472") && d.contains("nolearning"),
            "{d}"
        );
        assert!(d.contains("state UNKNOWN") || d.contains(",UP"), "{d}");
        let a = sh(&ns, "ip -4 -o addr show dev flannel.100");
        assert!(a.contains(&format!("inet {sn}/32")), "{a}");
        subnets.push((sn, mac));
    }

    assert!(
        w.log("w2")
            .contains("incompatible configuration (port 4789 vs 8472)"),
        "{}",
        w.log("w2")
    );

    // 2. each worker has the other's neighbour, fdb and route entries
    for (i, (n, _)) in workers.iter().enumerate() {
        let other = 1 - i;
        let (sn, mac) = &subnets[other];
        let pip = workers[other].1;
        let ns = w.ns(n);
        wait_for(
            &format!("entries for {sn} on {n}"),
            Duration::from_secs(60),
            || (entries_for(&ns, sn, 20, mac, pip) == (true, true, true)).then_some(()),
        );
        // and nothing for its own subnet
        let own = &subnets[i].0;
        let r = sh(&ns, "ip route show dev flannel.100");
        assert!(!r.contains(&format!("{own}/20")), "{r}");
    }

    // 3. the overlay carries traffic: ping w2's flannel.100 address from w1, over VXLAN
    let ping = run(
        Some(&w.ns("w1")),
        &format!("ping -c 3 -i 0.2 -W 2 {}", subnets[1].0),
    );
    assert!(
        ping.success() && ping.text.contains(" 0% packet loss"),
        "{}",
        ping.text
    );

    // 4. nftables: forward accept everywhere, masquerade only with --ip-masq
    let t1 = sh(&w.ns("w1"), "nft list table ip flannel-ipv4");
    assert!(
        t1.contains("ip saddr 11.0.0.0/8 accept") && t1.contains("ip daddr 11.0.0.0/8 accept"),
        "{t1}"
    );
    assert!(
        t1.contains(&format!(
            "ip saddr {}/20 ip daddr 11.0.0.0/8 return",
            subnets[0].0
        )),
        "{t1}"
    );
    assert!(
        t1.contains("ip saddr 11.0.0.0/8 ip daddr != 224.0.0.0/4 masquerade"),
        "{t1}"
    );
    let t2 = sh(&w.ns("w2"), "nft list table ip flannel-ipv4");
    assert!(
        t2.contains("ip saddr 11.0.0.0/8 accept") && !t2.contains("masquerade"),
        "{t2}"
    );
    // The agent keeps the nf_tables socket it programmed through: closing one takes the
    // namespace's commit lock, which the pods' new veths need (see masq::program).
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{w1_agent}/fd"))
        .unwrap()
        .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let netlink = sh(&w.ns("w1"), "cat /proc/net/netlink");
    let netfilter = |row: &&str| {
        let f: Vec<&str> = row.split_whitespace().collect();
        f.len() >= 10 && f[1] == "12" && sockets.iter().any(|s| s == f[9])
    };
    assert!(
        netlink.lines().any(|r| netfilter(&r)),
        "no nf_tables socket of the agent (inodes {sockets:?}) among:\n{netlink}"
    );

    // 5. SIGTERM leaves device, routes and lease; a restart keeps subnet and MAC
    let code = w.stop("w1", Signal::SIGTERM);
    assert_eq!(code, Some(0), "{}", w.log("w1"));
    // lines are held per batch of work: none is lost on SIGTERM, and the batches came first
    let log = w.log("w1");
    let programmed = log.find("added route ").expect("w1 logged its routes");
    let term = log
        .find("received SIGTERM, exiting")
        .expect("SIGTERM logged");
    assert!(programmed < term, "{log}");
    assert!(
        log.trim_end()
            .ends_with("the lease stay in place for the next start"),
        "{log}"
    );
    let (key_before, _) = lease_of(&w, "10.0.0.3").expect("the lease stays after SIGTERM");
    assert!(
        sh(&w.ns("w1"), "ip route show dev flannel.100").contains(&format!("{}/20", subnets[1].0))
    );
    w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    wait_for("w1 to reuse its lease", Duration::from_secs(60), || {
        w.log("w1").contains("reusing").then_some(())
    });
    let (key_after, value_after) = lease_of(&w, "10.0.0.3").unwrap();
    assert_eq!(key_after, key_before);
    assert!(
        value_after.contains(&subnets[0].1),
        "same VtepMAC: {value_after}"
    );
    assert_eq!(mac_of(&w.ns("w1"), "flannel.100"), subnets[0].1);
    assert_eq!(leases(&w).len(), 2);

    // 5b. the lease gone but subnet.env kept: the previous subnet is taken again
    w.stop("w1", Signal::SIGTERM);
    w.etcd(&format!("del {key_before}"));
    w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    let (key_prev, _) = wait_for("w1 lease again", Duration::from_secs(60), || {
        lease_of(&w, "10.0.0.3")
    });
    assert_eq!(key_prev, key_before);
    assert!(
        w.log("w1").contains("previously leased subnet"),
        "{}",
        w.log("w1")
    );

    // 5c. a lease that vanishes while an agent is down: its entries go at the next start
    w.stop("w2", Signal::SIGTERM);
    w.stop("w1", Signal::SIGTERM);
    w.etcd(&format!("del {key_before}"));
    assert_eq!(
        entries_for(&w.ns("w2"), &subnets[0].0, 20, &subnets[0].1, "10.0.0.3"),
        (true, true, true)
    );
    w.start_agent("w2", "10.0.0.4", &[]);
    wait_for(
        "w2 to drop w1's stale entries",
        Duration::from_secs(60),
        || {
            (entries_for(&w.ns("w2"), &subnets[0].0, 20, &subnets[0].1, "10.0.0.3")
                == (false, false, false))
                .then_some(())
        },
    );
    // the log is written at the end of each batch of work, just after the entries went
    let stale_line = format!(
        "removing stale subnet: {}/20 PublicIP: 10.0.0.3 VtepMAC: {}",
        subnets[0].0, subnets[0].1
    );
    wait_for(
        "w2 to log the stale subnet",
        Duration::from_secs(10),
        || w.log("w2").contains(&stale_line).then_some(()),
    );
    w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    let (k1, _) = wait_for("w1 lease again", Duration::from_secs(60), || {
        lease_of(&w, "10.0.0.3")
    });
    assert_eq!(k1, key_before, "the subnet from subnet.env again");
    wait_for("w1 back on w2", Duration::from_secs(60), || {
        (entries_for(&w.ns("w2"), &subnets[0].0, 20, &subnets[0].1, "10.0.0.3")
            == (true, true, true))
            .then_some(())
    });

    // 6. a worker joining later shows up on the others
    w.host("w3", "10.0.0.5");
    w.start_agent("w3", "10.0.0.5", &[]);
    let (k3, _) = wait_for("lease of w3", Duration::from_secs(120), || {
        lease_of(&w, "10.0.0.5")
    });
    let (sn3, _) = subnet_of_key(&k3);
    let mac3 = wait_for("w3 device", Duration::from_secs(60), || {
        let o = run(Some(&w.ns("w3")), "ip -o link show flannel.100");
        o.success().then(|| mac_of(&w.ns("w3"), "flannel.100"))
    });
    for n in ["w1", "w2"] {
        let ns = w.ns(n);
        wait_for(
            &format!("entries for w3 on {n}"),
            Duration::from_secs(60),
            || (entries_for(&ns, &sn3, 20, &mac3, "10.0.0.5") == (true, true, true)).then_some(()),
        );
    }
    // and w3 learned the others
    wait_for("w3 to know w2", Duration::from_secs(60), || {
        (entries_for(&w.ns("w3"), &subnets[1].0, 20, &subnets[1].1, "10.0.0.4")
            == (true, true, true))
            .then_some(())
    });

    // 7. deleting w3's lease removes its entries on the others; w3 exits as flanneld does
    w.etcd(&format!("del {k3}"));
    for n in ["w1", "w2"] {
        let ns = w.ns(n);
        wait_for(
            &format!("entries for w3 gone on {n}"),
            Duration::from_secs(60),
            || {
                (entries_for(&ns, &sn3, 20, &mac3, "10.0.0.5") == (false, false, false))
                    .then_some(())
            },
        );
    }
    let code = w.wait_exit("w3");
    assert_eq!(code, Some(1));
    assert!(w.log("w3").contains("has been revoked"), "{}", w.log("w3"));
    // the others keep each other
    assert_eq!(
        entries_for(&w.ns("w2"), &subnets[0].0, 20, &subnets[0].1, "10.0.0.3"),
        (true, true, true)
    );
}

#[test]
fn missing_config_key_is_a_clear_error() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::new("nocfg");
    w.start_etcd();
    let ns = w.host("w1", "10.0.0.3");
    let bin = env!("CARGO_BIN_EXE_knetsim");
    let sf = w.subnet_file("w1");
    let o = run_shell(
        Some(&ns),
        &format!(
            "{bin} flanneld --etcd-endpoints http://{ETCD_IP}:2379 --iface eth0 --etcd-wait 2 --subnet-file {}",
            sf.display()
        ),
        &[],
        Duration::from_secs(120),
        None,
    )
    .unwrap();
    assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
    // it waited for the key, as flanneld does, before giving up
    assert!(
        o.text.contains("could not fetch the network config"),
        "{}",
        o.text
    );
    assert!(
        o.text.contains("/coreos.com/network/config is missing"),
        "{}",
        o.text
    );
    assert!(
        o.text.contains("etcdctl put /coreos.com/network/config"),
        "{}",
        o.text
    );
    assert!(!sf.exists());

    // --ip-masq refused by the kernel (another program owns a table of flannel's name, as
    // a table with flag owner lives as long as its socket): a clear error after the lease
    // (the lease stays, as on any exit)
    w.etcd(&format!("put {PREFIX}/config '{CONFIG}'"));
    let owner = netns::run_in(&ns, || {
        use knetsim::components::nft::batch::{Batch, Session};
        let s = Session::open()?;
        let mut b = Batch::new();
        b.add_table("flannel-ipv4", 0x2, None); // NFT_TABLE_F_OWNER
        s.apply(&b.finish()?)?;
        Ok(s)
    })
    .unwrap();
    let o = agent_to_exit(&ns, &sf, "--ip-masq");
    owner.close();
    assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
    assert!(
        o.text.contains(
            "setting up --ip-masq (tried with and without fully-random): the kernel refused"
        ) && o.text.contains("another program owns the table"),
        "{}",
        o.text
    );

    // a config that is not JSON is named too
    w.etcd(&format!("put {PREFIX}/config 'Network=11.0.0.0/8'"));
    let o = agent_to_exit(&ns, &sf, "");
    assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
    assert!(o.text.contains("not valid JSON"), "{}", o.text);

    // An agent started before the key is written waits for it and goes on once it is.
    w.etcd(&format!("del {PREFIX}/config"));
    let _ = std::fs::remove_file(&sf);
    w.start_agent("w1", "10.0.0.3", &[]);
    wait_for(
        "the agent to wait for the config key",
        Duration::from_secs(60),
        || {
            w.log("w1")
                .contains("could not fetch the network config")
                .then_some(())
        },
    );
    assert!(!sf.exists());
    w.etcd(&format!("put {PREFIX}/config '{CONFIG}'"));
    wait_for("subnet.env", Duration::from_secs(60), || {
        sf.exists().then_some(())
    });
    assert!(w.log("w1").contains("connected to etcd"), "{}", w.log("w1"));
}

/// The number of etcd leases granted and not revoked or expired.
fn granted_leases(w: &World) -> usize {
    let out = w.etcd("lease list");
    out.lines()
        .find_map(|l| l.strip_prefix("found ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in `etcdctl lease list`: {out}"))
}

#[test]
fn a_full_network_is_a_clear_error_and_keeps_no_lease_granted() {
    if !root_or_skip() {
        return;
    }
    // Room for one /20 only: w1 takes it, w2 finds none.
    let mut w = World::new("full");
    w.start_etcd();
    let one = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.10.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;
    w.etcd(&format!("put {PREFIX}/config '{one}'"));
    w.host("w1", "10.0.0.3");
    let ns = w.host("w2", "10.0.0.4");
    w.start_agent("w1", "10.0.0.3", &[]);
    wait_for("w1's lease", Duration::from_secs(60), || {
        lease_of(&w, "10.0.0.3")
    });
    assert_eq!(granted_leases(&w), 1, "w1's lease holds one etcd lease");
    let sf = w.subnet_file("w2");
    let o = agent_to_exit(&ns, &sf, "");
    assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
    assert!(
        o.text
            .contains("out of subnets: every /20 between 11.10.0.0 and 11.10.0.0 is leased"),
        "{}",
        o.text
    );
    assert!(!sf.exists());
    // w2 found no subnet, so it holds no etcd lease either (a grant asked for before the
    // choice would have to be revoked).
    assert_eq!(granted_leases(&w), 1, "{}", w.etcd("lease list"));
    assert_eq!(leases(&w).len(), 1);
}

#[test]
fn unreachable_etcd_and_unknown_iface_are_clear_errors() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::new("noetcd");
    let ns = w.host("w1", "10.0.0.3");
    let bin = env!("CARGO_BIN_EXE_knetsim");
    let sf = w.subnet_file("w1");
    // nothing listens at 10.0.0.3:2379: the agent waits (bounded), logging, then gives up
    let o = run_shell(
        Some(&ns),
        &format!("{bin} flanneld --etcd-endpoints http://10.0.0.3:2379 --iface 10.0.0.3 --etcd-wait 3 --subnet-file {}", sf.display()),
        &[],
        Duration::from_secs(120),
        None,
    )
    .unwrap();
    assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
    assert!(
        o.text.contains("waiting for etcd at http://10.0.0.3:2379"),
        "{}",
        o.text
    );
    assert!(
        o.text
            .contains("etcd is unreachable at http://10.0.0.3:2379"),
        "{}",
        o.text
    );
    assert!(o.text.contains("--etcd-endpoints"), "{}", o.text);

    // Each bad start: the agent exits 1 at once (no etcd wait) with `want` in its output.
    let refused = |args: &str, want: &str| -> String {
        let o = run(
            Some(&ns),
            &format!(
                "{bin} flanneld --etcd-endpoints {args} --subnet-file {}",
                sf.display()
            ),
        );
        assert_eq!(o.ended, netns::process::Ended::Exited(1), "{}", o.text);
        assert!(o.text.contains(want), "{}", o.text);
        o.text
    };
    // --iface naming an address or a link that is not there
    for (iface, want) in [
        (
            "10.9.9.9",
            "no interface in this network namespace has address 10.9.9.9",
        ),
        ("nope0", "--iface nope0: no such interface"),
    ] {
        let text = refused(&format!("http://10.0.0.3:2379 --iface {iface}"), want);
        assert!(text.contains("eth0"), "lists the links there: {text}");
    }
    // endpoints that are not URLs fail at once (no waiting), empty ones too
    for (ep, want) in [
        (
            "http://exa mple:2379",
            "--etcd-endpoints http://exa mple:2379: 'http://exa mple:2379' is not an etcd client URL",
        ),
        (",", "--etcd-endpoints is empty"),
    ] {
        let text = refused(&format!("'{ep}' --iface eth0"), want);
        assert!(!text.contains("waiting for etcd"), "{text}");
    }
    // no --iface and no default route; an interface without an IPv4 address
    refused(
        "http://10.0.0.3:2379",
        "no --iface given and there is no default route",
    );
    sh(&ns, "ip link add eth9 type veth peer name eth10");
    refused(
        "http://10.0.0.3:2379 --iface eth9",
        "--iface eth9: the interface has no IPv4 address",
    );
    // with a default route, the agent picks that route's interface (then waits for etcd)
    sh(&ns, "ip route add default via 10.0.0.1 dev eth0");
    let o = run(
        Some(&ns),
        &format!(
            "{bin} flanneld --etcd-endpoints http://10.0.0.3:2379 --etcd-wait 1 --subnet-file {}",
            sf.display()
        ),
    );
    assert!(
        o.text
            .contains("using interface eth0 with address 10.0.0.3"),
        "{}",
        o.text
    );
    refused(
        "http://10.0.0.3:2379 --iface eth0 --subnet-lease-ttl 0",
        "invalid --subnet-lease-ttl 0",
    );

    // flanneld's flag check
    refused(
        "http://10.0.0.3:2379 --iface eth0 --subnet-lease-renew-margin 1440",
        "invalid --subnet-lease-renew-margin 1440",
    );

    // no device was created by the failed starts
    assert!(!sh(&ns, "ip -o link").contains("flannel."));
}

/// A pod namespace behind worker `worker`: veth `vp-<pod>` on the worker with the subnet's
/// .1, the pod gets `ip` and a default route via .1 (what the bridge CNI plugin arranges).
fn add_pod(w: &mut World, worker: &str, pod: &str, gw: &str, ip: &str) -> String {
    let wns = w.ns(worker);
    let pns = w.ns(pod);
    w.add_ns(&pns);
    sh(
        &wns,
        &format!(
            "ip link add vp-{pod} type veth peer name eth0 netns {pns} && ip addr add {gw}/20 dev vp-{pod} && ip link set vp-{pod} up && sysctl -qw net.ipv4.ip_forward=1"
        ),
    );
    sh(
        &pns,
        &format!("ip link set lo up && ip addr add {ip}/20 dev eth0 && ip link set eth0 up && ip route add default via {gw}"),
    );
    pns
}

#[test]
fn ip_masq_hides_pods_from_the_outside_but_not_from_pods() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::configured("masq");
    w.host("w1", "10.0.0.3");
    w.host("w2", "10.0.0.4");
    // an outside host with no route to the pod network
    w.host("x", "10.0.0.9");
    w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    w.start_agent("w2", "10.0.0.4", &[]);
    let mut pods = Vec::new();
    for (n, ip, pod) in [("w1", "10.0.0.3", "p1"), ("w2", "10.0.0.4", "p2")] {
        let (key, _) = wait_for(&format!("lease of {n}"), Duration::from_secs(120), || {
            lease_of(&w, ip)
        });
        let (sn, _) = subnet_of_key(&key);
        let base = sn.rsplit_once('.').unwrap().0.to_string();
        let pns = add_pod(&mut w, n, pod, &format!("{base}.1"), &format!("{base}.2"));
        pods.push((pns, format!("{base}.2"), sn));
    }
    // wait until each worker has the other's route
    for (i, n) in ["w1", "w2"].iter().enumerate() {
        let other = &pods[1 - i].2;
        let ns = w.ns(n);
        wait_for(&format!("route on {n}"), Duration::from_secs(60), || {
            sh(&ns, "ip route show dev flannel.100")
                .contains(&format!("{other}/20"))
                .then_some(())
        });
    }
    // count, on w2, packets arriving from p1's own address (i.e. not masqueraded)
    sh(
        &w.ns("w2"),
        &format!("nft add table ip flt-count && nft add chain ip flt-count in '{{ type filter hook prerouting priority -300 ; }}' && nft add rule ip flt-count in ip saddr {} counter", pods[0].1),
    );

    // p1 (on the --ip-masq worker) reaches the outside host: its source was masqueraded
    let o = run(Some(&pods[0].0), "ping -c 2 -i 0.2 -W 2 10.0.0.9");
    assert!(
        o.success() && o.text.contains(" 0% packet loss"),
        "{}",
        o.text
    );
    // p2 (worker without --ip-masq) cannot: the outside host has no route back to 11/8
    let o = run(Some(&pods[1].0), "ping -c 2 -i 0.2 -W 1 10.0.0.9");
    assert!(
        !o.success() && o.text.contains("100% packet loss"),
        "{}",
        o.text
    );

    // pod to pod keeps the pod's address, also through the --ip-masq worker
    let o = run(
        Some(&pods[0].0),
        &format!("ping -c 2 -i 0.2 -W 2 {}", pods[1].1),
    );
    assert!(
        o.success() && o.text.contains(" 0% packet loss"),
        "{}",
        o.text
    );
    let c = sh(&w.ns("w2"), "nft list chain ip flt-count in");
    let packets: u64 = c
        .split("counter packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        packets >= 2,
        "w2 saw pod-to-pod packets with the pod's own source: {c}"
    );
}

#[test]
fn lease_is_renewed_and_expires_when_the_agent_dies() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::configured("ttl");
    w.host("w1", "10.0.0.3");
    w.host("w2", "10.0.0.4");
    // a 4 s lease: renewed every 2 s (half the TTL, as the 60 min margin does not fit)
    w.start_agent("w1", "10.0.0.3", &["--subnet-lease-ttl", "4"]);
    w.start_agent("w2", "10.0.0.4", &[]);
    let (k1, _) = wait_for("lease of w1", Duration::from_secs(120), || {
        lease_of(&w, "10.0.0.3")
    });
    let (sn1, _) = subnet_of_key(&k1);
    let mac1 = wait_for("w1 device", Duration::from_secs(60), || {
        let o = run(Some(&w.ns("w1")), "ip -o link show flannel.100");
        o.success().then(|| mac_of(&w.ns("w1"), "flannel.100"))
    });
    let w2 = w.ns("w2");
    wait_for("w1's entries on w2", Duration::from_secs(60), || {
        (entries_for(&w2, &sn1, 20, &mac1, "10.0.0.3") == (true, true, true)).then_some(())
    });
    // three renewals: the key outlives several TTLs
    wait_for("three renewals", Duration::from_secs(120), || {
        (w.log("w1")
            .matches(&format!("lease {sn1}/20 renewed"))
            .count()
            >= 3)
            .then_some(())
    });
    assert_eq!(lease_of(&w, "10.0.0.3").map(|l| l.0), Some(k1.clone()));
    // the agent crashes (SIGKILL, nothing runs on exit): the lease expires by itself and
    // the other worker removes the entries
    w.stop("w1", Signal::SIGKILL);
    wait_for("w1's lease to expire", Duration::from_secs(60), || {
        lease_of(&w, "10.0.0.3").is_none().then_some(())
    });
    wait_for("w1's entries gone on w2", Duration::from_secs(60), || {
        (entries_for(&w2, &sn1, 20, &mac1, "10.0.0.3") == (false, false, false)).then_some(())
    });
    // the device and routes of the crashed node stay, as with flanneld
    assert!(run(Some(&w.ns("w1")), "ip link show flannel.100").success());
}

#[test]
fn watch_survives_an_etcd_restart_and_reads_real_flannel_leases() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::configured("erst");
    w.host("w1", "10.0.0.3");
    // as in a cluster with two etcd members of which one (10.1.0.2) is down
    w.start_agent_with(
        "w1",
        "10.0.0.3",
        &format!("http://10.1.0.2:2379,http://{ETCD_IP}:2379"),
        &[],
    );
    wait_for("lease of w1", Duration::from_secs(120), || {
        lease_of(&w, "10.0.0.3")
    });
    let ns = w.ns("w1");
    wait_for("w1 watching", Duration::from_secs(60), || {
        w.log("w1").contains("watching").then_some(())
    });

    // etcd goes away for a moment, then comes back with its data
    w.stop("etcd", Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    w.spawn_etcd();

    // a lease as a real flanneld of another host writes it (its own field order)
    let key = format!("{PREFIX}/subnets/11.50.16.0-20");
    w.etcd(&format!(
        r#"put {key} '{{"PublicIP":"10.0.0.77","BackendType":"vxlan","BackendData":{{"VtepMAC":"0e:11:22:33:44:55","VNI":100}}}}'"#
    ));
    wait_for(
        "the new lease on w1 after the etcd restart",
        Duration::from_secs(120),
        || {
            (entries_for(&ns, "11.50.16.0", 20, "0e:11:22:33:44:55", "10.0.0.77")
                == (true, true, true))
                .then_some(())
        },
    );
    // a lease of another backend is not programmed (and does not stop the agent)
    w.etcd(&format!(
        r#"put {PREFIX}/subnets/11.51.0.0-20 '{{"PublicIP":"10.0.0.78","BackendType":"host-gw"}}'"#
    ));
    w.etcd(&format!("del {key}"));
    wait_for("the lease's entries gone", Duration::from_secs(60), || {
        (entries_for(&ns, "11.50.16.0", 20, "0e:11:22:33:44:55", "10.0.0.77")
            == (false, false, false))
            .then_some(())
    });
    assert!(!sh(&ns, "ip route show dev flannel.100").contains("11.51.0.0"));
    wait_for(
        "w1 to log the ignored lease",
        Duration::from_secs(10),
        || {
            w.log("w1")
                .contains("ignoring subnet 11.51.0.0/20")
                .then_some(())
        },
    );
    // a lease whose FDB entry the kernel refuses (a multicast VtepMAC): its neighbour and
    // route, sent in the same batch, are removed again
    w.etcd(&format!(
        r#"put {PREFIX}/subnets/11.52.0.0-20 '{{"PublicIP":"10.0.0.79","BackendType":"vxlan","BackendData":{{"VtepMAC":"01:00:5e:00:00:01","VNI":100}}}}'"#
    ));
    wait_for("the refused lease logged", Duration::from_secs(60), || {
        w.log("w1")
            .contains("error programming 11.52.0.0/20: adding fdb entry 01:00:5e:00:00:01")
            .then_some(())
    });
    assert_eq!(
        entries_for(&ns, "11.52.0.0", 20, "01:00:5e:00:00:01", "10.0.0.79"),
        (false, false, false),
        "{}",
        w.log("w1")
    );
    let agent = w.children.iter_mut().find(|(l, _)| l == "w1").unwrap();
    assert!(
        agent.1.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
}

/// flanneld's rules come before subnet.env, as upstream's nftables traffic manager does it:
/// subnet.env tells the CNI plugin pods may be attached, and their traffic must find the
/// masquerade rule. Here the rules cannot be made (another process owns a table of that
/// name, so nf_tables refuses everyone else): the agent fails and writes no subnet.env,
/// where writing it first left a worker that takes pods without masquerading them.
#[test]
fn no_subnet_env_without_the_rules() {
    if !root_or_skip() {
        return;
    }
    let mut w = World::configured("order");
    let ns = w.host("w1", "10.0.0.3");
    // `nft -i` keeps its netlink socket, and so its table, until its stdin closes.
    let mut owner = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "-i"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = owner.stdin.as_mut().unwrap();
        stdin
            .write_all(b"add table ip flannel-ipv4 { flags owner; }\n")
            .unwrap();
        stdin.flush().unwrap();
    }
    wait_until("the owned table", Duration::from_secs(10), || {
        sh(&ns, "nft list tables").contains("flannel-ipv4")
    });
    w.start_agent("w1", "10.0.0.3", &["--ip-masq"]);
    let code = w.wait_exit("w1");
    drop(owner.stdin.take());
    let _ = owner.wait();
    let log = w.log("w1");
    assert_ne!(code, Some(0), "the agent went on without its rules:\n{log}");
    assert!(log.contains("flannel-ipv4"), "{log}");
    assert!(
        !w.subnet_file("w1").exists(),
        "subnet.env was written although the rules were not:\n{log}"
    );
}
