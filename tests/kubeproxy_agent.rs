//! `knetsim kube-proxy` against a real single-member etcd, inside namespaces: rules appear
//! from etcd, survive the agent being killed, and a restarted agent converges them in place
//! (no flush: Services keep answering and endpoint counters keep counting).

mod common;

use common::kubeproxy::*;
use common::*;
use knetsim::components::etcd;
use knetsim::components::kubeproxy::{read_counters, store, Service};
use knetsim::netns;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ETCD: &str = "http://127.0.0.1:2379";

/// Runs an async etcd operation from inside namespace `ns`.
fn etcd_do<F, Fut, R>(ns: &str, f: F) -> anyhow::Result<R>
where
    F: FnOnce(knetsim::components::etcd::EtcdClient) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
    R: Send + 'static,
{
    netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move { f(store::connect(ETCD)?).await })
    })
}

fn svc(name: &str, cip: std::net::Ipv4Addr, port: u16) -> Service {
    Service::synthetic(name, cip, Some("http"), port, 8000, None)
}

fn start_agent(g: &mut Guard, node: &str, log: &std::path::Path) -> u32 {
    let args: Vec<String> = [
        "kube-proxy",
        "--etcd-endpoints",
        ETCD,
        "--hostname-override",
        "node",
        "--debounce-ms",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let child = netns::process::spawn_daemon(Some(node), env!("CARGO_BIN_EXE_knetsim"), &args, log)
        .unwrap();
    let pid = child.id();
    g.children.push(child);
    pid
}

#[test]
fn agent_programs_from_etcd_and_survives_restart() {
    if netns::process::which("etcd").is_none() {
        eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let Some((mut g, t, [ip1, ip2])) = serving_topology("kubeproxy-agent") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kubeproxy-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    g.dirs.push(dir.clone());

    // A real single-member etcd inside the node namespace, on its loopback.
    let etcd_args: Vec<String> = [
        "--name",
        "kp",
        "--data-dir",
        dir.join("etcd").to_str().unwrap(),
        "--listen-client-urls",
        ETCD,
        "--advertise-client-urls",
        ETCD,
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:2380",
        "--initial-cluster",
        "kp=http://127.0.0.1:2380",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(etcd::timing_args())
    .collect();
    let etcd =
        netns::process::spawn_daemon(Some(&t.node), "etcd", &etcd_args, &dir.join("etcd.log"))
            .unwrap();
    g.children.push(etcd);
    wait_until("etcd to answer", Duration::from_secs(20), || {
        sh_any(
            &t.node,
            &format!("ETCDCTL_API=3 etcdctl --endpoints {ETCD} --command-timeout=1s put /probe x"),
        )
        .0
    });

    // The state a simulator would write: a Service with two endpoints, a broken key.
    let web_ip = etcd_do(&t.node, move |mut c| async move {
        let ip = store::allocate_cluster_ip(&mut c).await?;
        store::put_service(&mut c, &svc("web", ip, 80)).await?;
        let eps = endpoints("web", &[(ip1, "b1"), (ip2, "b2")]);
        store::put_endpoints(&mut c, &eps).await?;
        c.call("writing a broken Service", |mut c| async move {
            c.put("/registry/services/specs/default/broken", "{not json", None)
                .await
        })
        .await?;
        Ok(ip)
    })
    .unwrap();
    assert_eq!(web_ip.to_string(), "100.64.0.1");
    // A taken ClusterIP is refused by the store with a clear message.
    let e = etcd_do(&t.node, move |mut c| async move {
        store::put_service(&mut c, &svc("other", web_ip, 80)).await
    })
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("already taken by Service default/web"),
        "{e:#}"
    );

    let log = dir.join("kube-proxy.log");
    let pid = start_agent(&mut g, &t.node, &log);
    let web = format!("{web_ip}:80");
    wait_until("the agent to program web", Duration::from_secs(15), || {
        connect(&t.client, &web).is_ok()
    });
    for _ in 0..6 {
        assert!(connect(&t.client, &web)
            .unwrap()
            .starts_with("hello from b"));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("synced 1 services, 2 endpoints"), "{text}");
    assert!(
        text.contains("ignoring /registry/services/specs/default/broken: not a valid object"),
        "{text}"
    );

    // Kill the agent by its pid: the rules stay and keep answering.
    let child = g.children.iter_mut().find(|c| c.id() == pid).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(connect(&t.client, &web)
        .unwrap()
        .starts_with("hello from b"));
    let counted = |rows: &[knetsim::components::kubeproxy::CounterRow]| -> u64 {
        rows.iter()
            .filter(|r| r.service == "default/web/tcp/http")
            .map(|r| r.packets)
            .sum()
    };
    let before = counted(&read_counters(&t.node).unwrap());
    assert_eq!(before, 8, "1 + 6 + 1 connections so far");

    // While it is down, the state changes: a new Service.
    let api_ip = etcd_do(&t.node, move |mut c| async move {
        let ip = store::allocate_cluster_ip(&mut c).await?;
        store::put_service(&mut c, &svc("api", ip, 8080)).await?;
        let eps = endpoints("api", &[(ip2, "b2")]);
        store::put_endpoints(&mut c, &eps).await?;
        Ok(ip)
    })
    .unwrap();

    // Restart it while a client keeps connecting to web: no connection may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (client, web2, stop2, ok2, failed2) = (
        t.client.clone(),
        web.clone(),
        stop.clone(),
        ok.clone(),
        failed.clone(),
    );
    let pinger = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            match connect(&client, &web2) {
                Ok(_) => ok2.fetch_add(1, Ordering::SeqCst),
                Err(_) => failed2.fetch_add(1, Ordering::SeqCst),
            };
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::fs::write(&log, "").unwrap();
    start_agent(&mut g, &t.node, &log);
    let api = format!("{api_ip}:8080");
    wait_until(
        "the restarted agent to program api",
        Duration::from_secs(15),
        || {
            connect(&t.client, &api)
                .map(|s| s == "hello from b2")
                .unwrap_or(false)
        },
    );
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    pinger.join().unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "connections to web failed during the restart"
    );
    assert!(ok.load(Ordering::SeqCst) > 0);
    // web's endpoint chains were not rewritten: their counters went on counting.
    let after = counted(&read_counters(&t.node).unwrap());
    assert_eq!(
        after,
        before + ok.load(Ordering::SeqCst),
        "web's counters were reset by the restart"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("already exists") && text.contains("without flushing"),
        "{text}"
    );
    assert!(text.contains("synced 2 services, 3 endpoints"), "{text}");
    assert!(!ruleset(&t.node).contains("flannel"), "only our table");

    // A deleted Service goes away (its chains deleted, elements removed).
    etcd_do(&t.node, |mut c| async move {
        store::delete_service(&mut c, "default", "api")
            .await
            .map(|_| ())
    })
    .unwrap();
    let gone = || !ruleset(&t.node).contains("default/api/");
    let until = Instant::now() + Duration::from_secs(10);
    while !gone() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gone(),
        "api still programmed:\n{}\nlog:\n{}",
        ruleset(&t.node),
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(connect(&t.client, &api).is_err());
    assert!(connect(&t.client, &web).is_ok());

    // A state that cannot be programmed (a VIP written past the store's checks onto web's
    // ClusterIP) is refused with a message in the log, and the rules stay as they were.
    let before = ruleset(&t.node);
    let clash = format!(r#"{{"vip":"{web_ip}","ips":["{ip1}"]}}"#);
    etcd_do(&t.node, move |mut c| async move {
        c.call("writing a clashing VIP", |mut c| {
            let clash = clash.clone();
            async move { c.put(store::vip_key(web_ip), clash, None).await }
        })
        .await?;
        Ok(())
    })
    .unwrap();
    wait_until(
        "the agent to refuse the clash",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("not programming this state")
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "VIP {web_ip} is already taken by Service default/web"
        )),
        "{text}"
    );
    assert_eq!(ruleset(&t.node), before);
    assert!(connect(&t.client, &web).is_ok());
}

/// The table check a new node's kube-proxy makes at start, through one nf_tables netlink
/// request: no table, then the table, and the same answer `read_current` gives.
#[test]
fn table_exists_asks_nf_tables_in_the_right_namespace() {
    use knetsim::components::kubeproxy::{nfnl, read_current, rules};
    let Some((mut g, ns)) = guarded_ns("kp-table-exists") else {
        return;
    };
    let other = g.ns("kp-table-elsewhere");
    sh(&other, "nft add table ip kube-proxy");
    let ask = |ns: &str| netns::run_in(ns, || nfnl::table_exists(rules::TABLE)).unwrap();
    assert!(!ask(&ns), "another namespace's table was seen");
    assert!(!read_current(Some(&ns)).unwrap().table);
    sh(&ns, "nft add table ip kube-proxy");
    assert!(ask(&ns), "the new table was not seen");
    assert!(read_current(Some(&ns)).unwrap().table);
    assert!(ask(&other));
}
