//! The nf_tables netlink batches (src/components/nft/batch.rs) write exactly the tables
//! `nft -f` writes from the same text: each case applies the text with nft in one fresh
//! namespace and the batch in another and compares both listings (JSON without handles,
//! and the text a learner reads). Needs root; each test makes and removes its namespaces.

mod common;

use common::*;
use knetsim::components::flannel::masq;
use knetsim::components::flannel::subnet::Ipv4Net;
use knetsim::components::kubeproxy::rules::{self, skeleton};
use knetsim::components::kubeproxy::{self as kubeproxy};
use knetsim::components::nft::{self, batch};
use knetsim::netns;

/// `nft -j list table ip NAME` without the handles (they count every object the namespace
/// ever had), and `nft list table ip NAME`.
fn listings(ns: &str, table: &str) -> (serde_json::Value, String) {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value =
        serde_json::from_str(&sh(ns, &format!("nft -j list table ip {table}"))).unwrap();
    strip(&mut json);
    (json, sh(ns, &format!("nft list table ip {table}")))
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

/// Fresh namespaces of these names, removed when the guard drops; None (the test is
/// skipped, saying why) without root.
fn namespaces<const N: usize>(names: [&str; N]) -> Option<(Guard, [String; N])> {
    if !root_or_skip() {
        return None;
    }
    let mut g = Guard::default();
    let made = names.map(|n| g.ns(n));
    Some((g, made))
}

fn assert_same(text_ns: &str, batch_ns: &str, table: &str, case: &str) {
    let (want_json, want_text) = listings(text_ns, table);
    let (got_json, got_text) = listings(batch_ns, table);
    assert_eq!(got_text, want_text, "{case}: nft list differs");
    assert_eq!(got_json, want_json, "{case}: nft -j list differs");
}

#[test]
fn flannel_table_lists_exactly_as_nft_writes_it() {
    let Some((_g, [text_ns, batch_ns])) = namespaces(["nftnl-fl-text", "nftnl-fl-batch"]) else {
        return;
    };
    // Byte-aligned and other prefixes, with and without --ip-masq and fully-random; each
    // case is applied over the one before, as a restarted agent does.
    let cases = [
        ("11.0.0.0/8", "11.12.16.0/20", true, true),
        ("10.244.0.0/16", "10.244.3.0/24", true, false),
        ("11.0.0.0/8", "11.12.16.0/20", false, true),
        ("172.16.0.0/12", "172.17.128.0/17", true, true),
        ("11.0.0.0/8", "11.12.16.0/20", true, true),
    ];
    for (network, subnet, ip_masq, fully) in cases {
        let case = format!("{network} {subnet} ip-masq {ip_masq} fully-random {fully}");
        let (n, s) = (net(network), net(subnet));
        nft::apply(
            Some(&text_ns),
            &masq::ruleset(&n, &s, ip_masq, fully),
            "the flannel rules",
        )
        .unwrap();
        batch::apply(
            Some(&batch_ns),
            masq::batch(&n, &s, ip_masq, fully).unwrap(),
        )
        .unwrap();
        assert_same(&text_ns, &batch_ns, masq::TABLE, &case);
        let (_, listed) = listings(&batch_ns, masq::TABLE);
        // A restart without --ip-masq removed the postrtg chain of the run before.
        assert_eq!(
            listed.contains("chain postrtg"),
            ip_masq,
            "{case}\n{listed}"
        );
        assert_eq!(
            listed.contains("fully-random"),
            ip_masq && fully,
            "{case}\n{listed}"
        );
    }
    // Applied twice, the table is the same as applied once (no doubled rules).
    let (n, s) = (net("11.0.0.0/8"), net("11.12.16.0/20"));
    let before = listings(&batch_ns, masq::TABLE);
    batch::apply(Some(&batch_ns), masq::batch(&n, &s, true, true).unwrap()).unwrap();
    assert_eq!(listings(&batch_ns, masq::TABLE), before);
}

#[test]
fn kube_proxy_empty_table_lists_exactly_as_nft_writes_it() {
    let Some((_g, [text_ns, batch_ns])) = namespaces(["nftnl-kp-text", "nftnl-kp-batch"]) else {
        return;
    };
    kubeproxy::apply_transaction(Some(&text_ns), &skeleton::skeleton_text()).unwrap();
    kubeproxy::create_empty_table(Some(&batch_ns)).unwrap();
    assert_same(
        &text_ns,
        &batch_ns,
        rules::TABLE,
        "kube-proxy's empty table",
    );
    // kube-proxy reads it back as a complete table with no Service in it.
    let cur = kubeproxy::read_current(Some(&batch_ns)).unwrap();
    assert!(
        cur.table && cur.skeleton && cur.is_unprogrammed(),
        "{cur:?}"
    );
    // Written again over itself (the text flushes its chains first), nothing doubles.
    kubeproxy::create_empty_table(Some(&batch_ns)).unwrap();
    assert_same(&text_ns, &batch_ns, rules::TABLE, "written twice");
}

#[test]
fn a_refused_batch_names_its_message_and_changes_nothing() {
    let Some((_g, [ns])) = namespaces(["nftnl-refused"]) else {
        return;
    };
    let mut b = batch::Batch::new();
    b.add_table("nftnl-first", 0, None);
    b.add_rule("nftnl-first", "no-such-chain", &[], None, None);
    let e = format!(
        "{:#}",
        batch::apply(Some(&ns), b.finish().unwrap()).unwrap_err()
    );
    assert!(
        e.contains("the kernel refused adding a rule to chain no-such-chain of table ip nftnl-first (message 2 of 2")
            && e.contains("nothing of it was applied")
            && e.contains("does not exist"),
        "{e}"
    );
    // The table of the first message was not created either.
    let (ok, out) = sh_any(&ns, "nft list tables");
    assert!(ok && !out.contains("nftnl-first"), "{out}");
}

#[test]
fn tables_another_program_owns_are_refused_with_the_reason() {
    let Some((_g, [ns])) = namespaces(["nftnl-owned"]) else {
        return;
    };
    // Tables with flag owner (NFT_TABLE_F_OWNER) live as long as their socket; nobody
    // else may change or delete them.
    let owner = netns::run_in(&ns, || {
        let s = batch::Session::open()?;
        let mut b = batch::Batch::new();
        b.add_table(masq::TABLE, 0x2, None);
        b.add_table(rules::TABLE, 0x2, None);
        s.apply(&b.finish()?)?;
        Ok(s)
    })
    .unwrap();
    let (n, s) = (net("11.0.0.0/8"), net("11.12.16.0/20"));
    let e = netns::run_in(&ns, move || masq::program(&n, &s, true)).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(
            "setting up --ip-masq (tried with and without fully-random): the kernel refused"
        ) && e.contains("the kernel refused adding table ip flannel-ipv4")
            && e.contains("another program owns the table"),
        "{e}"
    );
    // Without --ip-masq the same refusal is only a warning: the agent goes on.
    netns::run_in(&ns, move || masq::program(&n, &s, false)).unwrap();
    // kube-proxy's empty table: the agent logs this and leaves the table to its first sync.
    let e = format!(
        "{:#}",
        kubeproxy::create_empty_table(Some(&ns)).unwrap_err()
    );
    assert!(
        e.starts_with(
            "creating the empty table ip kube-proxy: the kernel refused adding table ip kube-proxy"
        ) && e.contains("another program owns the table"),
        "{e}"
    );
    owner.close();
    let (ok, out) = sh_any(&ns, "nft list tables");
    assert!(
        ok && !out.contains(masq::TABLE) && !out.contains(rules::TABLE),
        "{out}"
    );
}

/// A dropped session's socket is closed on the closer thread (its close can wait out a
/// grace period of the kernel's, which held every flannel agent's subnet.env back), and
/// still closed: a table with flag owner made through it goes away. `close()` closes at
/// once.
#[test]
fn a_dropped_session_is_closed_on_the_closer_thread() {
    let Some((_g, [ns])) = namespaces(["nftnl-closer"]) else {
        return;
    };
    let owner_table = |name: &'static str| {
        netns::run_in(&ns, move || {
            let s = batch::Session::open()?;
            let mut b = batch::Batch::new();
            b.add_table(name, 0x2, None); // NFT_TABLE_F_OWNER
            s.apply(&b.finish()?)?;
            Ok(s)
        })
        .unwrap()
    };
    let tables = || sh(&ns, "nft list tables");
    owner_table("closed-now").close();
    assert!(!tables().contains("closed-now"), "{}", tables());

    drop(owner_table("dropped"));
    // A new thread names itself once it runs: asked until it has.
    let threads = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .collect()
    };
    wait_for(
        "a closer thread in this process",
        std::time::Duration::from_secs(10),
        || threads().iter().any(|t| t == "fd-closer").then_some(()),
    );
    wait_for(
        "the dropped session's owner table to go",
        std::time::Duration::from_secs(10),
        || (!tables().contains("dropped")).then_some(()),
    );
}

/// nft's path is looked up once per process: a child of this test binary, started with a
/// PATH that has no nft, asks for a transaction and prints the error.
#[test]
fn a_missing_nft_is_named_with_its_package() {
    if std::env::var_os("NFTNL_CHILD").is_some() {
        let e = nft::apply(None, "list tables\n", "a test transaction").unwrap_err();
        println!("ERROR: {e:#}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_missing_nft_is_named_with_its_package",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NFTNL_CHILD", "1")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "ERROR: starting nft: not found on PATH (install it with `apt-get install nftables`)"
        ),
        "{text}"
    );
}
