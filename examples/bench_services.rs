//! Benchmark: Services on nftables, kube-proxy layout vs the original's linear layout.
//!
//! Run as root: `cargo run --release --example bench_services [-- --samples 1000]`
//! (`--sweep`: also other batch sizes; `--unsplit-10k`: also the 10,000 Services in one
//! `nft -f` transaction, about two minutes). It builds its own namespaces (prefix
//! `kpbench-`) and removes them when done. `--program N [netlink|text|single] [K]
//! [--keep]` times one first sync alone; `--dump N [K]` prints the transactions.
//!
//! (a) time to program 10,000 Services with 2 endpoints each into one namespace (a first
//!     sync, median of 3), beside 10 Services and beside the linear layout (one rule per
//!     VIP), all in the same run;
//! (b) first-packet TCP connect latency (median of many connects) to one Service with 10
//!     and with 10,000 Services installed, for both layouts; the ratios show how lookup
//!     cost grows.
//!
//! Measured here (Debian 12, kernel 6.18, nft 1.0.6, 2 cores shared with other builds,
//! load average ~5, release build), one run:
//!
//! | case | figure |
//! | --- | --- |
//! | program 10 Services (kube-proxy layout) | 11 ms |
//! | program 10,000 Services x 2 endpoints, netlink bulk path (default, 42 transactions) | 9.4 s |
//! | the same, netlink batches of 100 / 1,000 | 8.6 / 7.3 s |
//! | the same, `nft -f` split in batches of 250 / 500 / 1,000 | 22 / 18 / 28 s |
//! | the same in ONE `nft -f` transaction (the path before) | 122 s (144 s in an earlier run) |
//! | 10,000 Services x 1 endpoint: no numgen map (2 transactions, later run, load ~6) | 1.3 s |
//! | program 10,000 rules (linear layout, baseline) | 0.41 s |
//! | add 1 Service with 10,000 installed (agent, cached view, `nft -f`) | 0.76 s |
//! | remove it again (apply_local: reads the kernel's table with `nft -j` first) | 13.4 s |
//! | connect latency, kube-proxy layout, 10 / 10,000 Services | 62 / 69 us (1.12x) |
//! | connect latency, linear layout, 10 / 10,000 rules | 67 / 268 us (4.03x) |
//!
//! Why a first sync cannot reach 1 s while every Service keeps its anonymous
//! `numgen random mod N vmap { ... }`: the kernel does work per new set that is linear in
//! the sets the table already has, so 10,000 sets cost O(n^2). One `nft -f` transaction
//! pays four such walks per set: `__nft_set_trans_bind` walks the whole transaction,
//! `nf_tables_set_alloc_name` `sscanf`s every set name to number `__map%d`, and
//! `nf_tables_newset` and `nft_set_lookup_global` (elements, rule) look the set up by
//! walking every set by name. The netlink path ([`kp::nfnl`]) keeps transactions short,
//! names each set concretely and sends the elements by set id only, leaving three walks:
//! `nf_tables_newset` (lookup + name check) and the rule's `lookup` expression, whose set
//! name is mandatory. `perf` of that path shows those and the `strlen`/`memcmp` of the
//! name comparisons on top; 5,000 Services take 3.7 s, 10,000 take 7.3-9.4 s (6-8.5 s of
//! it system time). Named maps (`vmap @name`, no anonymous set) in one transaction took
//! 11.7 s (7.3 s system), walking the same list: the floor is the per-set walk itself.

#[path = "../tests/common/mod.rs"]
mod common;

use common::kubeproxy::serve;
use common::{sh, Guard};

use anyhow::{bail, Context, Result};
use knetsim::components::kubeproxy::{self as kp, rules};
use knetsim::netns;
use kp::{Endpoints, Service, State};
use rules::Bulk;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Service i: ClusterIP 100.64.(i/250).(i%250+1), port 80 -> 80, endpoints .2 and .3.
fn state(n: usize, backends: [Ipv4Addr; 2]) -> State {
    let mut st = State::default();
    for i in 0..n {
        let name = format!("svc-{i}");
        st.services
            .push(Service::synthetic(&name, vip(i), None, 80, 80, None));
        st.endpoints.push(Endpoints::synthetic(&name, &backends));
    }
    st
}

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, (i / 250) as u8 + 20, (i % 250) as u8 + 1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Programs `st` (kube-proxy layout) into a fresh namespace as a first sync written the
/// `bulk` way; returns seconds and the number of transactions.
fn program_kp(g: &mut Guard, name: &str, st: &State, bulk: Bulk) -> Result<(f64, usize)> {
    let ns = g.ns(name);
    let t = Instant::now();
    let want = rules::desired(st);
    let plans = rules::plan_sync(st, &want, &rules::Current::empty(), bulk);
    kp::apply_plans(Some(&ns), &plans)?;
    let secs = t.elapsed().as_secs_f64();
    netns::delete(&ns)?;
    Ok((secs, plans.len()))
}

fn program_linear(g: &mut Guard, name: &str, n: usize, backend: Ipv4Addr) -> Result<f64> {
    let ns = g.ns(name);
    let pairs: Vec<_> = (0..n).map(|i| (vip(i), backend)).collect();
    let t = Instant::now();
    kp::apply_transaction(Some(&ns), &rules::linear_transaction(&pairs))?;
    let secs = t.elapsed().as_secs_f64();
    netns::delete(&ns)?;
    Ok(secs)
}

/// client --- node --- bridge --- b1, b2 (each serving TCP port 80).
fn topology(g: &mut Guard, p: &str) -> Result<(String, String)> {
    let client = g.ns(&format!("{p}-client"));
    let node = g.ns(&format!("{p}-node"));
    sh(&node, "sysctl -qw net.ipv4.ip_forward=1");
    sh(&node, &format!("ip link add up0 type veth peer name eth0 netns {client} && ip addr add 10.0.0.1/24 dev up0 && ip link set up0 up && ip link add br0 type bridge && ip addr add 11.10.0.1/24 dev br0 && ip link set br0 up"));
    sh(&client, "ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.0.1");
    for i in 0..2 {
        let b = g.ns(&format!("{p}-b{}", i + 1));
        sh(&node, &format!("ip link add vb{i} type veth peer name eth0 netns {b} && ip link set vb{i} master br0 && ip link set vb{i} up"));
        sh(&b, &format!("ip addr add 11.10.0.{}/24 dev eth0 && ip link set eth0 up && ip route add default via 11.10.0.1", i + 2));
        serve(g, &b, 80, "");
    }
    Ok((client, node))
}

/// connect() times in microseconds from `client` to `addr` (after 20 warm-up connects).
fn connect_latency(client: &str, addr: SocketAddr, samples: usize) -> Result<Vec<f64>> {
    netns::run_in(client, move || {
        let mut v = Vec::with_capacity(samples);
        for i in 0..samples + 20 {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr}"))?;
            let dt = t.elapsed().as_secs_f64() * 1e6;
            let _ = s.read(&mut [0u8; 1]);
            if i >= 20 {
                v.push(dt);
            }
        }
        Ok(v)
    })
}

fn main() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the benchmark builds namespaces: run it as root");
    }
    if let Some(n) = std::env::args().skip_while(|a| a != "--dump").nth(1) {
        // Prints the first-sync transaction for N services (for looking at or timing nft).
        // `--dump N [K]`: with K, the first sync split into transactions of K services,
        // each after a `# transaction I` line.
        let n: usize = n.parse()?;
        let st = state(
            n,
            [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)],
        );
        match std::env::args().skip_while(|a| a != "--dump").nth(2) {
            None => print!("{}", rules::full_transaction(&st)),
            Some(k) => {
                let plans = rules::plan_sync(
                    &st,
                    &rules::desired(&st),
                    &rules::Current::empty(),
                    Bulk::NftText(k.parse()?),
                );
                for (i, p) in plans.iter().enumerate() {
                    print!("# transaction {}\n{}", i + 1, p.text);
                }
            }
        }
        return Ok(());
    }
    if let Some(n) = std::env::args().skip_while(|a| a != "--program").nth(1) {
        // `--program N [netlink|text|single] [K] [--keep]`: one first sync of N services
        // into a fresh namespace, for timing the kernel alone (e.g. under perf or time).
        let n: usize = n.parse()?;
        let args: Vec<String> = std::env::args().skip_while(|a| a != "--program").collect();
        let k: usize = args
            .get(3)
            .map(|k| k.parse())
            .transpose()?
            .unwrap_or(rules::FIRST_SYNC_BATCH);
        let bulk = match args.get(2).map(String::as_str) {
            None | Some("netlink") => Bulk::Netlink(k),
            Some("text") => Bulk::NftText(k),
            Some("single") => Bulk::Single,
            Some(other) => bail!("unknown way {other:?}: netlink, text or single"),
        };
        let mut g = Guard::default();
        let st = state(
            n,
            [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)],
        );
        if std::env::args().any(|a| a == "--keep") {
            // Leaves namespace kpbench-program with the table, for listing or timing
            // reads (remove it with `ip netns del kpbench-program`).
            let ns = g.ns("kpbench-program");
            g.namespaces.clear();
            let t = Instant::now();
            let want = rules::desired(&st);
            let plans = rules::plan_sync(&st, &want, &rules::Current::empty(), bulk);
            kp::apply_plans(Some(&ns), &plans)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            println!("{n} services, {bulk:?}: {ms:.1} ms, kept in namespace {ns}");
            return Ok(());
        }
        let (s, t) = program_kp(&mut g, "kpbench-program", &st, bulk)?;
        println!(
            "{n} services, {bulk:?}: {:.1} ms in {t} transactions",
            s * 1e3
        );
        return Ok(());
    }
    let samples: usize = std::env::args()
        .skip_while(|a| a != "--samples")
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let mut g = Guard::default();
    let backends = [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)];
    let big = state(10_000, backends);
    let small = state(10, backends);

    println!("(a) programming time (first sync into a fresh namespace)");
    let k = rules::FIRST_SYNC_BATCH;
    let mut rows: Vec<(String, f64)> = Vec::new();
    let median3 = |g: &mut Guard, st: &State, bulk: Bulk| -> Result<(f64, usize)> {
        let mut v = Vec::new();
        let mut n = 0;
        for i in 0..3 {
            let (s, t) = program_kp(g, &format!("kpbench-prog{i}"), st, bulk)?;
            v.push(s);
            n = t;
        }
        Ok((median(v), n))
    };
    let (s, _) = median3(&mut g, &small, rules::DEFAULT_BULK)?;
    rows.push(("kube-proxy layout, 10 services (median of 3)".into(), s));
    let (s, n) = median3(&mut g, &big, Bulk::Netlink(k))?;
    rows.push((
        format!("kube-proxy layout, 10,000 services, netlink bulk, {n} transactions (median of 3)"),
        s,
    ));
    // One endpoint each: no numgen map at all (upstream's 2026 change), so no anonymous
    // set for the kernel to walk; the same Services otherwise.
    let mut single = big.clone();
    for e in &mut single.endpoints {
        e.addresses.truncate(1);
    }
    let (s, n) = median3(&mut g, &single, rules::DEFAULT_BULK)?;
    rows.push((
        format!("kube-proxy layout, 10,000 services x 1 endpoint (no map), {n} transactions (median of 3)"),
        s,
    ));
    let sweep = std::env::args().any(|a| a == "--sweep");
    let extra: &[Bulk] = if sweep {
        &[
            Bulk::Netlink(100),
            Bulk::Netlink(1000),
            Bulk::NftText(250),
            Bulk::NftText(500),
            Bulk::NftText(1000),
        ]
    } else {
        &[Bulk::NftText(250)]
    };
    for bulk in extra {
        let (s, n) = program_kp(&mut g, "kpbench-progk", &big, *bulk)?;
        let how = match bulk {
            Bulk::Netlink(b) => format!("netlink bulk of {b}"),
            Bulk::NftText(b) => format!("nft -f split by {b}"),
            Bulk::Single => "one transaction".into(),
        };
        rows.push((
            format!("kube-proxy layout, 10,000 services, {how}, {n} transactions (1 run)"),
            s,
        ));
    }
    let mid = state(2_000, backends);
    let (s, _) = program_kp(&mut g, "kpbench-prog1", &mid, Bulk::Single)?;
    rows.push((
        "kube-proxy layout, 2,000 services in ONE nft -f transaction (1 run)".into(),
        s,
    ));
    if std::env::args().any(|a| a == "--unsplit-10k") {
        let (s, _) = program_kp(&mut g, "kpbench-prog1", &big, Bulk::Single)?;
        rows.push((
            "kube-proxy layout, 10,000 services in ONE nft -f transaction (1 run)".into(),
            s,
        ));
    }
    let v: Vec<f64> = (0..3)
        .map(|i| program_linear(&mut g, &format!("kpbench-lin{i}"), 10_000, backends[0]))
        .collect::<Result<_>>()?;
    rows.push((
        "linear layout (original), 10,000 rules (baseline, median of 3)".into(),
        median(v),
    ));
    for (l, s) in &rows {
        println!("  {l:<76} {:>9.1} ms", s * 1e3);
    }
    rows.clear();

    // Incremental changes with 10,000 installed, as the agent does them (from its cached
    // view of the table) and as apply_local does them (reading the kernel's table first).
    let (client_big, node_big) = topology(&mut g, "kpbench-kpb")?;
    kp::apply_local(&node_big, &big)?;
    let mut bigger = big.clone();
    let extra = state(10_001, backends);
    bigger.services.push(extra.services[10_000].clone());
    bigger.endpoints.push(extra.endpoints[10_000].clone());
    let cached = rules::Current::from_desired(&rules::desired(&big));
    let t = Instant::now();
    let plan = rules::plan(&rules::desired(&bigger), &cached);
    kp::apply_transaction(Some(&node_big), &plan.text)?;
    rows.push((
        "add 1 service to 10,000 (agent, cached view)".into(),
        t.elapsed().as_secs_f64(),
    ));
    let t = Instant::now();
    kp::apply_local(&node_big, &big)?;
    rows.push((
        "remove it again (apply_local, reads kernel table)".into(),
        t.elapsed().as_secs_f64(),
    ));
    println!("\n(a') one change with 10,000 services installed");
    for (l, s) in &rows {
        println!("  {l:<76} {:>9.1} ms", s * 1e3);
    }

    println!(
        "\n(b) first-packet TCP connect latency, median of {samples} connects per case, \
         measured in 5 interleaved rounds (client -> node DNAT -> backend)"
    );
    let (client_small, node_small) = topology(&mut g, "kpbench-kps")?;
    kp::apply_local(&node_small, &small)?;
    let lin = |n: usize| -> Vec<(Ipv4Addr, Ipv4Addr)> {
        (0..n).map(|i| (vip(i), backends[i % 2])).collect()
    };
    let (client_ls, node_ls) = topology(&mut g, "kpbench-lns")?;
    kp::apply_transaction(Some(&node_ls), &rules::linear_transaction(&lin(10)))?;
    let (client_lb, node_lb) = topology(&mut g, "kpbench-lnb")?;
    kp::apply_transaction(Some(&node_lb), &rules::linear_transaction(&lin(10_000)))?;
    // The connected Service is number 9: the last of 10; with 10,000 the linear layout is
    // measured at its last rule (a newly added Service), the kube-proxy layout at 9,999.
    let cases = [
        ("kube-proxy layout, 10 services", client_small, 9),
        ("kube-proxy layout, 10,000 services", client_big, 9_999),
        ("linear layout, 10 rules (last one)", client_ls, 9),
        ("linear layout, 10,000 rules (last one)", client_lb, 9_999),
    ]
    .map(|(what, client, service)| (what, client, SocketAddr::from((vip(service), 80))));
    let mut samples_of: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _round in 0..5 {
        for (k, (_, client, addr)) in cases.iter().enumerate() {
            samples_of[k].extend(connect_latency(client, *addr, samples.div_ceil(5))?);
        }
    }
    let lat: Vec<f64> = samples_of.into_iter().map(median).collect();
    for ((l, _, _), us) in cases.iter().zip(&lat) {
        println!("  {l:<52} {us:>9.1} us");
    }
    println!(
        "  ratio 10,000/10: kube-proxy layout {:.2}x, linear layout {:.2}x",
        lat[1] / lat[0],
        lat[3] / lat[2]
    );
    Ok(())
}
