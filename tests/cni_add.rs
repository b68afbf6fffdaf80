//! CNI ADD of several pods of one worker with the real plugins, no simulator around them:
//! the addresses follow the order the pods were given in (while the next pods'
//! namespaces, loopbacks and waiting bridge plugins are made ahead of the bridge ADDs),
//! and a pod whose loopback or bridge ADD fails is DELeted again, so the worker keeps no
//! veth and no address of it.

mod common;

use common::{root_or_skip, sh, sh_any, Guard};
use knetsim::components::cni::{cni_path, Attachment, Pod, WorkerCni, PLUGIN_NICE};
use knetsim::netns::{self, process};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

fn subnet_env(subnet: &str) -> String {
    format!("FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET={subnet}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
}

/// A worker namespace `<test>-w` with its subnet.env and CNI directories, its plugins
/// taken from `bin_dir`.
fn worker(g: &mut Guard, test: &str, subnet: &str, bin_dir: PathBuf) -> WorkerCni {
    let dir = g.dir(test);
    let subnet_file = dir.join("subnet.env");
    std::fs::write(&subnet_file, subnet_env(subnet)).unwrap();
    WorkerCni {
        worker_ns: g.ns(&format!("{test}-w")),
        subnet_file,
        data_dir: dir.join("flannel"),
        ipam_dir: dir.join("networks"),
        bin_dir,
    }
}

/// As root: a guard and a worker `<test>-w` whose plugins are the real ones, except
/// `broken` (see [`bin_dir_with_broken`]); otherwise None, the skip said.
fn setup(test: &str, subnet: &str, broken: Option<&str>) -> Option<(Guard, WorkerCni)> {
    if !root_or_skip() {
        return None;
    }
    let mut g = Guard::default();
    let bin = match broken {
        Some(plugin) => bin_dir_with_broken(&mut g, test, plugin),
        None => PathBuf::from(cni_path()),
    };
    let cni = worker(&mut g, test, subnet, bin);
    Some((g, cni))
}

/// Pods `<test>-<name>`, their namespaces not made yet (the guard removes them).
fn pods(g: &mut Guard, test: &str, names: &[&str]) -> Vec<Pod> {
    names
        .iter()
        .map(|n| {
            let ns = format!("{test}-{n}");
            let _ = netns::delete(&ns);
            g.namespaces.push(ns.clone());
            Pod {
                id: ns.clone(),
                netns: netns::path(&ns),
            }
        })
        .collect()
}

fn ns_of(pod: &Pod) -> &str {
    pod.netns.file_name().unwrap().to_str().unwrap()
}

/// What the simulator's `prepare` does: the pod's namespace made just before its plugins.
fn make_ns(pod: &Pod) -> ControlFlow<(), anyhow::Result<()>> {
    ControlFlow::Continue(netns::create(ns_of(pod)))
}

/// A plugin directory with the real plugins, except those of `replaced`, which become
/// the shell scripts given.
fn bin_dir_with(g: &mut Guard, test: &str, replaced: &[(&str, String)]) -> PathBuf {
    let bin = g.dir(&format!("{test}-bin"));
    for p in ["bridge", "host-local", "loopback"] {
        match replaced.iter().find(|(r, _)| *r == p) {
            None => {
                std::os::unix::fs::symlink(Path::new(&cni_path()).join(p), bin.join(p)).unwrap()
            }
            Some((_, script)) => {
                std::fs::write(bin.join(p), script).unwrap();
                std::fs::set_permissions(
                    bin.join(p),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
            }
        }
    }
    bin
}

/// A plugin directory with the real bridge and host-local and `broken` replaced by a
/// script that fails the way a plugin does (a CNI error on stdout, exit 1).
fn bin_dir_with_broken(g: &mut Guard, test: &str, broken: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\necho '{{\"cniVersion\":\"0.3.1\",\"code\":100,\"msg\":\"{broken} broken on purpose\"}}'\nexit 1\n"
    );
    bin_dir_with(g, test, &[(broken, script)])
}

/// Addresses host-local holds for the worker's network, sorted.
fn held_addresses(cni: &WorkerCni) -> Vec<String> {
    let mut held: Vec<String> = std::fs::read_dir(cni.ipam_dir.join("cbr0"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    held.sort();
    held
}

/// Ports of the worker's cni0 bridge (one veth per attached pod).
fn bridge_ports(cni: &WorkerCni) -> String {
    // Only the links: `ip` names each veth's peer namespace by looking through /run/netns,
    // and prints "Peer netns reference is invalid" when another test deletes one meanwhile.
    sh(&cni.worker_ns, "ip -o link show master cni0")
        .lines()
        .filter(|l| l.contains(" master cni0 "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn ip(r: &anyhow::Result<Attachment>) -> &str {
    &r.as_ref().expect("attached").ip
}

#[test]
fn addresses_follow_the_order_given_and_both_plugins_take_effect() {
    let test = "cniorder";
    let Some((mut g, cni)) = setup(test, "11.12.16.1/20", None) else {
        return;
    };
    // Not in name order, one that cannot be prepared, and a stop before the last.
    let pods = pods(&mut g, test, &["z", "bad", "a", "b", "late"]);
    // The subnet is written only once the first pods' namespaces are made: their config
    // is read after `ready`, as at bring-up, where the agent is still getting its lease.
    let subnet = std::fs::read_to_string(&cni.subnet_file).unwrap();
    std::fs::remove_file(&cni.subnet_file).unwrap();
    let results = cni.add_all(
        &pods,
        |i| match i {
            1 => ControlFlow::Continue(Err(anyhow::anyhow!("no namespace for this one"))),
            4 => ControlFlow::Break(()),
            _ => make_ns(&pods[i]),
        },
        || {
            assert!(
                netns::exists(ns_of(&pods[0])) && netns::exists(ns_of(&pods[2])),
                "two pods are begun before the config is read (the failed one does not count)"
            );
            assert!(!netns::exists(ns_of(&pods[3])), "later pods wait");
            std::fs::write(&cni.subnet_file, &subnet)?;
            Ok(())
        },
    );
    assert_eq!(results.len(), 4, "the stop ends the batch");
    assert_eq!(ip(&results[0]), "11.12.16.2");
    assert_eq!(ip(&results[2]), "11.12.16.3");
    assert_eq!(ip(&results[3]), "11.12.16.4");
    let bad = format!("{:#}", results[1].as_ref().unwrap_err());
    assert!(bad.contains("no namespace for this one"), "{bad}");
    assert!(!netns::exists(ns_of(&pods[4])), "the pod after the stop");
    for (pod, addr) in [
        (&pods[0], "11.12.16.2/20"),
        (&pods[2], "11.12.16.3/20"),
        (&pods[3], "11.12.16.4/20"),
    ] {
        let addrs = sh(ns_of(pod), "ip -br addr");
        assert!(addrs.contains(addr), "eth0 in {}: {addrs}", ns_of(pod));
        let lo = sh(ns_of(pod), "ip -br link show lo");
        assert!(
            lo.contains("UNKNOWN") || lo.contains(" UP"),
            "lo is up: {lo}"
        );
    }
    assert_eq!(
        held_addresses(&cni),
        ["11.12.16.2", "11.12.16.3", "11.12.16.4"]
    );
    let ports = bridge_ports(&cni);
    assert_eq!(ports.lines().count(), 3, "the ports of cni0:\n{ports}");

    // A single ADD after them takes the next address; its DEL gives it back.
    let one = &pods[4];
    netns::create(ns_of(one)).unwrap();
    assert_eq!(cni.add(one).unwrap().ip, "11.12.16.5");
    cni.del(one).unwrap();
    assert_eq!(
        held_addresses(&cni),
        ["11.12.16.2", "11.12.16.3", "11.12.16.4"]
    );
}

/// Adds one pod through wrappers of the bridge plugin and the host-local it runs, each of
/// which says `<plugin> <what it prints>` once it has its config (a bridge plugin started
/// ahead waits for it) and then runs the real one; returns the lines, sorted.
fn what_the_plugins_say(test: &str, subnet: &str, shell: &str) -> Vec<String> {
    let mut g = Guard::default();
    let said = g.dir(test).join("said");
    let wrapper = |plugin: &str| {
        let real = Path::new(&cni_path()).join(plugin);
        format!(
            "#!/bin/sh\nconfig=$(cat)\necho \"{plugin} {shell}\" >>{}\nprintf '%s' \"$config\" | {} \"$@\"\n",
            said.display(),
            real.display()
        )
    };
    let replaced = [
        ("bridge", wrapper("bridge")),
        ("host-local", wrapper("host-local")),
    ];
    let bin = bin_dir_with(&mut g, test, &replaced);
    let cni = worker(&mut g, test, subnet, bin);
    let pods = pods(&mut g, test, &["p1"]);
    netns::create(ns_of(&pods[0])).unwrap();
    let first = subnet.replace(".1/20", ".2");
    assert_eq!(cni.add(&pods[0]).unwrap().ip, first);
    let mut lines: Vec<String> = std::fs::read_to_string(&said)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    cni.del(&pods[0]).unwrap();
    lines
}

#[test]
fn the_plugins_run_ahead_of_the_agents() {
    if !root_or_skip() {
        return;
    }
    if !process::can_raise_priority() {
        println!("SKIPPED: raising a priority needs CAP_SYS_NICE, which this process lacks");
        return;
    }
    assert_eq!(
        what_the_plugins_say("cninice", "11.12.32.1/20", "$(nice)"),
        [
            format!("bridge {PLUGIN_NICE}"),
            format!("host-local {PLUGIN_NICE}")
        ]
    );
    const { assert!(PLUGIN_NICE < 0, "ahead of the simulator's priority") };
}

#[test]
fn the_plugins_run_their_go_runtime_on_one_processor() {
    if !root_or_skip() {
        return;
    }
    // host-local gets it from the bridge plugin, which passes its environment on.
    assert_eq!(
        what_the_plugins_say("cnigmp", "11.12.48.1/20", "GOMAXPROCS=${GOMAXPROCS:-unset}"),
        ["bridge GOMAXPROCS=1", "host-local GOMAXPROCS=1"]
    );
}

#[test]
fn a_failing_loopback_rolls_its_pod_back() {
    let Some((_g, cni, pods, results)) =
        add_two("cnilofail", "11.12.16.1/20", Some("loopback"), || Ok(()))
    else {
        return;
    };
    for r in &results {
        let e = format!("{:#}", r.as_ref().unwrap_err());
        assert!(
            e.contains("CNI ADD with plugin 'loopback' failed: loopback broken on purpose"),
            "{e}"
        );
    }
    // The bridge ADDs ran beside the loopbacks (cni0 exists) and were DELeted again.
    assert!(
        sh_any(&cni.worker_ns, "ip link show cni0").0,
        "cni0 was made"
    );
    assert_eq!(bridge_ports(&cni), "", "no veth is left on cni0");
    assert!(held_addresses(&cni).is_empty(), "no address is held");
    for pod in &pods {
        assert!(!sh_any(ns_of(pod), "ip link show eth0").0, "eth0 is gone");
        assert!(
            !cni.data_dir.join(&pod.id).exists(),
            "the kept config is gone"
        );
    }
}

/// What [`add_two`] leaves: the guard, the worker, its two pods and their results.
type Added = (Guard, WorkerCni, Vec<Pod>, Vec<anyhow::Result<Attachment>>);

/// [`setup`] and pods `p1`, `p2` attached with `add_all`, their namespaces made just
/// before their plugins and `ready` waited for before the config is read.
fn add_two(
    test: &str,
    subnet: &str,
    broken: Option<&str>,
    ready: impl FnOnce() -> anyhow::Result<()>,
) -> Option<Added> {
    let (mut g, cni) = setup(test, subnet, broken)?;
    let pods = pods(&mut g, test, &["p1", "p2"]);
    let results = cni.add_all(&pods, |i| make_ns(&pods[i]), ready);
    Some((g, cni, pods, results))
}

#[test]
fn a_failing_bridge_add_rolls_its_pod_back() {
    // A /30 has one address for a pod beside the gateway: the second bridge ADD fails
    // in host-local, after the bridge plugin made the pod's veth.
    let Some((_g, cni, pods, results)) = add_two("cnibrfail", "11.12.16.1/30", None, || Ok(()))
    else {
        return;
    };
    assert_eq!(ip(&results[0]), "11.12.16.2");
    let e = format!("{:#}", results[1].as_ref().unwrap_err());
    assert!(e.contains("CNI ADD with plugin 'bridge' failed"), "{e}");
    assert_eq!(held_addresses(&cni), ["11.12.16.2"]);
    assert_eq!(bridge_ports(&cni).lines().count(), 1, "only p1's veth");
    assert!(!sh_any(ns_of(&pods[1]), "ip link show eth0").0);
    assert!(!cni.data_dir.join(&pods[1].id).exists());
}

#[test]
fn a_worker_that_never_gets_ready_attaches_nothing() {
    let test = "cninoready";
    let Some((mut g, cni)) = setup(test, "11.12.16.1/20", None) else {
        return;
    };
    // Three pods: two are begun before the wait, the third would be begun only later.
    let pods = pods(&mut g, test, &["p1", "p2", "p3"]);
    let results = cni.add_all(
        &pods,
        |i| make_ns(&pods[i]),
        || anyhow::bail!("the flannel agent on the worker wrote no subnet.env"),
    );
    assert_eq!(results.len(), 3, "every pod gets its answer");
    for r in &results {
        let e = format!("{:#}", r.as_ref().unwrap_err());
        assert!(e.contains("wrote no subnet.env"), "{e}");
    }
    // The first two were begun before the wait (their namespaces are the caller's to
    // remove); their bridge plugins, never given a config, touched nothing. Without a
    // config the third is never begun.
    for pod in &pods[..2] {
        assert!(netns::exists(ns_of(pod)), "{} was begun", ns_of(pod));
        assert!(!sh_any(ns_of(pod), "ip link show eth0").0, "no eth0");
    }
    assert!(
        !netns::exists(ns_of(&pods[2])),
        "the third pod was never begun"
    );
    for pod in &pods {
        assert!(!cni.data_dir.join(&pod.id).exists(), "no kept config");
    }
    assert!(held_addresses(&cni).is_empty(), "no address is held");
    assert!(!sh_any(&cni.worker_ns, "ip link show cni0").0, "no cni0");
}
