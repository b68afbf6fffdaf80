//! `knetsim doctor`: what the simulator needs from this machine, checked one by one, with
//! the package that provides whatever is missing.

use super::exit;
use crate::netns::{self, netlink, process};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

struct Check {
    what: &'static str,
    ok: bool,
    required: bool,
    detail: String,
}

const BINARIES: &[(&str, &str, bool, &str)] = &[
    ("etcd", "etcd-server", true, "the cluster store"),
    ("etcdctl", "etcd-client", true, "reading leases in lessons"),
    ("nft", "nftables", true, "kube-proxy's rules"),
    ("ip", "iproute2", true, "learners' view of links and routes"),
    (
        "/usr/lib/cni/bridge",
        "containernetworking-plugins",
        true,
        "CNI bridge plugin",
    ),
    (
        "/usr/lib/cni/host-local",
        "containernetworking-plugins",
        true,
        "CNI IPAM plugin",
    ),
    (
        "/usr/lib/cni/loopback",
        "containernetworking-plugins",
        true,
        "CNI loopback plugin",
    ),
    (
        "ping",
        "iputils-ping",
        true,
        "connectivity checks in lessons",
    ),
    ("tcpdump", "tcpdump", false, "captures in lesson 01"),
    ("tshark", "tshark", false, "VXLAN decode in lesson 01"),
    ("nginx", "nginx-light", false, "ingress lessons"),
    ("iperf3", "iperf3", false, "throughput benchmarks"),
];

fn binary_checks() -> Vec<Check> {
    BINARIES
        .iter()
        .map(|(bin, pkg, required, why)| {
            let ok = process::require_binary(bin, pkg).is_ok();
            Check {
                what: bin,
                ok,
                required: *required,
                detail: if ok {
                    why.to_string()
                } else {
                    format!("missing: apt-get install {pkg} ({why})")
                },
            }
        })
        .collect()
}

/// Creates a throwaway namespace and tries each kernel feature inside it.
fn kernel_checks() -> Vec<Check> {
    let ns = format!("knetsim-doctor-{}", std::process::id());
    let mut out = Vec::new();
    if let Err(e) = netns::create(&ns) {
        out.push(Check {
            what: "network namespaces",
            ok: false,
            required: true,
            detail: format!("{e:#} (run as root)"),
        });
        return out;
    }
    out.push(Check {
        what: "network namespaces",
        ok: true,
        required: true,
        detail: "ok".into(),
    });
    let r = netlink::with(&ns, |nl| async move {
        let bridge = nl.add_bridge("br0").await.map_err(|e| format!("{e:#}"));
        let veth = nl.add_veth("va", "vb").await.map_err(|e| format!("{e:#}"));
        let vxlan = nl
            .handle
            .link()
            .add(
                rtnetlink::LinkVxlan::new("vx0", 100)
                    .port(8472)
                    .learning(false)
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("{e}"));
        Ok((bridge, veth, vxlan))
    });
    let (bridge, veth, vxlan) = r.unwrap_or_else(|e| {
        let m = format!("{e:#}");
        (Err(m.clone()), Err(m.clone()), Err(m))
    });
    for (what, res) in [("bridge", bridge), ("veth", veth), ("vxlan", vxlan)] {
        out.push(Check {
            what,
            ok: res.is_ok(),
            required: true,
            detail: res.err().unwrap_or_else(|| "ok".into()),
        });
    }
    // A feature is there when a command that needs it works in the throwaway namespace.
    let try_in_ns = |script: &str| {
        process::run_shell(
            Some(&ns),
            script,
            &[],
            std::time::Duration::from_secs(5),
            None,
        )
    };
    let nft = try_in_ns("nft 'add table ip t; add chain ip t c { type nat hook prerouting priority dstnat; }; add rule ip t c numgen random mod 2 vmap { 0 : accept, 1 : accept }'");
    let (ok, detail) = match nft {
        Ok(o) if o.success() => (true, "ok".to_string()),
        Ok(o) => (false, o.text.trim().to_string()),
        Err(e) => (false, format!("{e:#}")),
    };
    out.push(Check {
        what: "nftables nat + numgen",
        ok,
        required: true,
        detail,
    });
    let netem = try_in_ns("tc qdisc add dev lo root netem delay 1ms");
    let ok = netem.as_ref().is_ok_and(|o| o.success());
    out.push(Check {
        what: "netem (delay/loss)",
        ok,
        required: false,
        detail: if ok {
            "ok".into()
        } else {
            "not in this kernel: lessons that shape links are skipped".into()
        },
    });
    let _ = netns::delete(&ns);
    out
}

pub fn run() -> i32 {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{} knetsim doctor needs root (it tries kernel features in a throwaway namespace): sudo knetsim doctor", crate::ui::red("error:"));
        return exit::ENVIRONMENT;
    }
    let mut checks = binary_checks();
    checks.extend(kernel_checks());
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["check", "status", "detail"]);
    for c in &checks {
        let status = match (c.ok, c.required) {
            (true, _) => crate::ui::green("ok"),
            (false, true) => crate::ui::red("MISSING"),
            (false, false) => crate::ui::yellow("optional"),
        };
        table.add_row(vec![c.what.to_string(), status, c.detail.clone()]);
    }
    println!("{table}");
    let missing: Vec<&str> = checks
        .iter()
        .filter(|c| c.required && !c.ok)
        .map(|c| c.what)
        .collect();
    if missing.is_empty() {
        println!("{} this machine can run knetsim", crate::ui::green("✓"));
        exit::OK
    } else {
        println!(
            "{} missing: {} (see the detail column; `sudo scripts/run` installs the packages)",
            crate::ui::red("✗"),
            missing.join(", ")
        );
        exit::ENVIRONMENT
    }
}
