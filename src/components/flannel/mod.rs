//! `knetsim flanneld`: a flannel-compatible node agent (etcd v3 subnet manager, vxlan and
//! host-gw backends). It runs inside a worker's network namespace and does what flanneld does:
//!
//! 1. reads `<prefix>/config` from etcd ([`config`]),
//! 2. sets up its backend ([`backend`]): the VXLAN device `flannel.<VNI>` ([`vxlan`]), or
//!    nothing for host-gw ([`hostgw`]),
//! 3. acquires a subnet lease `<prefix>/subnets/<net>-<len>` ([`lease`], [`subnet`]),
//! 4. programs forward (and with `--ip-masq` masquerade) rules with nftables ([`masq`]),
//! 5. writes subnet.env for the flannel CNI plugin (flannel is ready: pods may come),
//! 6. watches the other nodes' leases and programs for each the neighbour, FDB and route
//!    entries (vxlan) or one route via the node (host-gw), renewing its own lease an hour
//!    before it expires.
//!
//! On SIGTERM it exits and leaves the device, the entries and the lease in place, as
//! flanneld does, so a restart finds and reuses them.

pub mod backend;
pub mod config;
pub mod hostgw;
pub mod lease;
mod logbuf;
pub mod masq;
mod remotes;
pub mod subnet;
pub mod vxlan;

use crate::netns::netlink::Netlink;
use anyhow::{anyhow, Context, Result};
use backend::{Dataplane, Remote};
use clap::Args;
use etcd_client::EventType;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use subnet::{Ipv4Net, LeaseAttrs};

/// Logs one timestamped line to stdout ([`logbuf`]).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::components::flannel::log_line(format_args!($($arg)*))
    };
}
pub(crate) use log;
pub use logbuf::{log_line, LogBatch};

/// Flags named like flanneld's own.
#[derive(Debug, Clone, Args)]
pub struct FlanneldArgs {
    /// Comma-separated etcd client URLs.
    #[arg(long = "etcd-endpoints", default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// Interface name or IP address used for inter-host communication.
    #[arg(long)]
    pub iface: Option<String>,
    /// Where the subnet file is written.
    #[arg(long = "subnet-file", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: String,
    /// etcd prefix of the flannel configuration and leases.
    #[arg(long = "etcd-prefix", default_value = "/coreos.com/network")]
    pub etcd_prefix: String,
    /// Set up IP masquerade for traffic leaving the flannel network.
    #[arg(long = "ip-masq")]
    pub ip_masq: bool,
    /// Minutes before the lease expires at which it is renewed (flanneld's default: 60).
    #[arg(long = "subnet-lease-renew-margin", default_value_t = 60)]
    pub subnet_lease_renew_margin: u64,
    /// TTL in seconds of the subnet lease (flanneld: always 24 h). A short TTL shows a lease
    /// expiring in a lesson; renewal then happens at half the TTL when the margin is longer
    /// (knetsim addition).
    #[arg(long = "subnet-lease-ttl", default_value_t = 24 * 3600)]
    pub subnet_lease_ttl: u64,
    /// Seconds to keep trying while etcd does not answer before giving up (knetsim addition).
    #[arg(long = "etcd-wait", default_value_t = 30)]
    pub etcd_wait: u64,
}

pub fn run(args: FlanneldArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the flanneld runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        // The agent is a task of its own rather than this future: a watch response wakes it
        // from the etcd connection's task in the same turn of the runtime, with no extra
        // look at the sockets in between (one system call fewer per watch response).
        let mut agent = tokio::spawn(async move { agent(&args).await });
        let signal = tokio::select! {
            r = &mut agent => Err(r.unwrap_or_else(|e| Err(anyhow!("the agent task failed: {e}")))),
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        };
        let res = match signal {
            Err(ended) => ended,
            Ok(name) => {
                // Ended first, so that the lines of a batch it was in are written before these.
                agent.abort();
                let _ = agent.await;
                log!("received {name}, exiting");
                Ok(())
            }
        };
        // An error is printed by the caller (on stderr, into the same log file).
        if res.is_ok() {
            log!("exiting cleanly: the backend's device and routes and the lease stay in place for the next start");
        }
        res
    })
}

/// Writes `text` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let (dir, tmp) = crate::netns::state::temp_beside(path)
        .with_context(|| format!("--subnet-file {}", path.display()))?;
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// When to renew a lease of `ttl`: `margin` before it expires, as flanneld does, or at half
/// the TTL when the margin does not fit into it.
pub fn renew_margin(margin: Duration, ttl: Duration) -> Duration {
    if margin >= ttl {
        ttl / 2
    } else {
        margin
    }
}

/// flanneld's flag checks.
pub fn check_args(args: &FlanneldArgs) -> Result<()> {
    if args.subnet_lease_renew_margin == 0 || args.subnet_lease_renew_margin >= 24 * 60 {
        return Err(anyhow!(
            "invalid --subnet-lease-renew-margin {}: out of acceptable range, give minutes between 1 and 1439",
            args.subnet_lease_renew_margin
        ));
    }
    if args.subnet_lease_ttl == 0 {
        return Err(anyhow!(
            "invalid --subnet-lease-ttl 0: give a number of seconds (flannel uses 86400)"
        ));
    }
    Ok(())
}

async fn agent(args: &FlanneldArgs) -> Result<()> {
    check_args(args)?;
    log!(
        "starting: etcd {}, prefix {}, iface {}, subnet file {}, ip-masq {}",
        args.etcd_endpoints,
        args.etcd_prefix,
        args.iface.as_deref().unwrap_or("(default route)"),
        args.subnet_file,
        args.ip_masq
    );
    let endpoints: Vec<String> = args
        .etcd_endpoints
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(anyhow!(
            "--etcd-endpoints is empty: give at least one URL such as http://10.1.0.1:2379"
        ));
    }
    let nl = Netlink::connect().await?;

    let ext = vxlan::find_iface(&nl, args.iface.as_deref()).await?;
    log!(
        "using interface {} with address {} (MTU {})",
        ext.name,
        ext.ip,
        ext.mtu
    );

    let (mut reg, cfg_text) = lease::Registry::connect(
        &endpoints,
        &args.etcd_prefix,
        Duration::from_secs(args.etcd_wait),
    )
    .await?;
    reg.ttl = Duration::from_secs(args.subnet_lease_ttl);
    let cfg = config::parse(&cfg_text, &reg.config_key())?;
    let vxlan = cfg
        .vxlan()
        .map(|v| format!(" VNI {} Port {}", v.vni, v.port))
        .unwrap_or_default();
    log!(
        "network config: Network {} SubnetLen {} SubnetMin {} SubnetMax {} backend {}{vxlan}",
        cfg.network,
        cfg.subnet_len,
        cfg.subnet_min,
        cfg.subnet_max,
        cfg.backend.kind(),
    );

    let (dp, attrs) = Dataplane::setup(&nl, &cfg, &ext).await?;

    let subnet_file = Path::new(&args.subnet_file);
    let previous = std::fs::read_to_string(subnet_file)
        .ok()
        .and_then(|t| subnet::previous_subnet(&t));
    if let Some(p) = previous {
        log!("previous subnet from {}: {p}", subnet_file.display());
    }
    let mut own = reg.acquire(&cfg, &attrs, previous).await?;
    log!("lease value: {}", attrs.to_json());

    dp.configure(&nl, &own.subnet, &cfg.network).await?;

    // Rules first, subnet.env after, as flanneld's main does with its nftables traffic
    // manager (one synchronous transaction each): a pod can be attached once subnet.env is
    // there, and its traffic must find the masquerade rule. It also keeps this commit out
    // of the pods' way: the kernel registers each new veth under the same namespace's
    // nf_tables commit lock, and the bridge plugins waited on this commit for about 8 ms
    // each (off-CPU stacks of a default bring-up). One nf_tables batch, made in place: a
    // thread of its own cost each of hundreds of agents started at once more than the batch.
    // Its socket stays open while the agent runs: closing it takes the same lock (see
    // masq::program).
    let _rules_socket = masq::program(&cfg.network, &own.subnet, args.ip_masq)?;

    // flannel's network MTU: the external interface's minus the backend's overhead
    let mtu = ext.mtu.saturating_sub(cfg.backend.overhead());
    write_atomic(
        subnet_file,
        &subnet::render_subnet_env(&cfg.network, &own.subnet, mtu, args.ip_masq),
    )?;
    log!(
        "wrote {}: FLANNEL_SUBNET={}/{} FLANNEL_MTU={}",
        subnet_file.display(),
        own.subnet.nth(1),
        own.subnet.prefix_len,
        mtu
    );

    let margin = renew_margin(
        Duration::from_secs(args.subnet_lease_renew_margin * 60),
        reg.ttl,
    );
    watch_loop(&mut reg, &nl, &dp, &mut own, &attrs, margin).await
}

async fn watch_loop(
    reg: &mut lease::Registry,
    nl: &Netlink,
    dp: &Dataplane,
    own: &mut lease::OwnLease,
    attrs: &LeaseAttrs,
    margin: Duration,
) -> Result<()> {
    let mut known: HashMap<Ipv4Net, Remote> = HashMap::new();
    let renew_at = |exp: Instant| exp.checked_sub(margin).unwrap_or_else(Instant::now);
    let mut next_renew = renew_at(own.expires);
    let mut resync = true;
    let mut first_sync = true;
    let mut next_rev = 0i64;
    let mut backoff = Duration::from_millis(100);
    loop {
        // The first time (and after falling behind compaction) the leases are listed
        // again, with a watch opened just before the listing: reusing the listing made
        // while acquiring would start the watch behind etcd's head.
        let opened = if resync {
            reg.watch_leases()
                .await
                .map(|(l, rev, s)| (Some((l, rev)), s))
        } else {
            reg.watch(next_rev).await.map(|s| (None, s))
        };
        let mut stream = match opened {
            Ok((listing, stream)) => {
                if let Some((leases, rev)) = listing {
                    let _batch = LogBatch::begin();
                    log!("{} subnet lease(s) in etcd at revision {rev}", leases.len());
                    let stale = if first_sync {
                        first_sync = false;
                        remotes::find_stale(nl, dp, &own.subnet, &leases).await
                    } else {
                        Vec::new()
                    };
                    let want = remotes::wanted_by_list(dp, &own.subnet, &known, &leases);
                    remotes::apply(nl, dp, &mut known, stale, want).await;
                    next_rev = rev + 1;
                    resync = false;
                }
                stream
            }
            Err(e) => {
                if resync {
                    log!("error listing subnet leases (retrying): {e:#}");
                } else {
                    log!(
                        "error starting the watch on {} (retrying): {e:#}",
                        subnet::subnets_prefix(&reg.prefix)
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        log!(
            "watching {} from revision {next_rev} on {}",
            subnet::subnets_prefix(&reg.prefix),
            reg.member()
        );
        // One timer for the whole watch, moved when the lease is renewed: one made anew in
        // each turn of the loop was registered and removed again for every watch response.
        let renew = tokio::time::sleep_until(next_renew.into());
        tokio::pin!(renew);
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let _batch = LogBatch::begin();
                    // Responses that have already arrived join this one: one batch of work
                    // (one datagram of netlink requests, one write of the log) for them all.
                    let mut resps = Vec::new();
                    let mut ended = false;
                    let mut next = Some(msg);
                    while let Some(msg) = next.take() {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            Ok(None) => { log!("etcd watch on {} closed, resuming from revision {next_rev}", reg.member()); ended = true; break; }
                            Err(e) => { log!("etcd watch on {} broke ({e}), resuming from revision {next_rev}", reg.member()); ended = true; break; }
                        };
                        backoff = Duration::from_millis(100);
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                log!("watch fell behind etcd compaction (revision {}), re-listing", resp.compact_revision());
                                resync = true;
                            } else {
                                log!("etcd canceled the watch ({}), reconnecting", resp.cancel_reason());
                            }
                            ended = true;
                            break;
                        }
                        // Changes the listing holds already (a watch opened before it) are
                        // skipped; all of one revision come in one response.
                        let seen = next_rev;
                        for kv in resp.events().iter().filter_map(|ev| ev.kv()) {
                            next_rev = next_rev.max(kv.mod_revision() + 1);
                        }
                        resps.push((seen, resp));
                        next = futures::FutureExt::now_or_never(stream.message());
                    }
                    let mut changes = Vec::new();
                    for (seen, ev) in resps.iter().flat_map(|(seen, r)| r.events().iter().map(move |ev| (*seen, ev))) {
                        let Some(kv) = ev.kv().filter(|kv| kv.mod_revision() >= seen) else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let Some(sn) = subnet::parse_lease_key(&reg.prefix, &key) else { continue };
                        changes.push(match ev.event_type() {
                            EventType::Put => remotes::Change::Put(sn, key, kv.value()),
                            EventType::Delete => remotes::Change::Delete(sn, key),
                        });
                    }
                    let (want, revoked) = remotes::wanted_by_events(dp, &own.subnet, &changes);
                    remotes::apply(nl, dp, &mut known, Vec::new(), want).await;
                    if let Some(e) = revoked {
                        return Err(e);
                    }
                    if ended {
                        break;
                    }
                }
                _ = &mut renew => {
                    match reg.update(&own.subnet, attrs).await {
                        Ok(exp) => {
                            own.expires = exp;
                            next_renew = renew_at(exp);
                            log!("lease {} renewed, next renewal in {}s", own.subnet, next_renew.saturating_duration_since(Instant::now()).as_secs());
                        }
                        Err(e) => {
                            log!("error renewing lease (trying again in 1 min): {e:#}");
                            next_renew = Instant::now() + Duration::from_secs(60);
                        }
                    }
                    renew.as_mut().reset(next_renew.into());
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renew_margin_fits_into_the_ttl() {
        let h = Duration::from_secs(3600);
        assert_eq!(renew_margin(h, Duration::from_secs(86400)), h);
        assert_eq!(
            renew_margin(h, Duration::from_secs(10)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn write_atomic_creates_parent_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("flannel-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("a/b/subnet.env");
        write_atomic(&path, "FLANNEL_MTU=1450\n").unwrap();
        write_atomic(&path, "FLANNEL_MTU=1400\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_MTU=1400\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.join("a/b"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // a parent that is a file is a clear error
        let e = write_atomic(&path.join("x"), "y").unwrap_err();
        assert!(format!("{e:#}").contains("creating directory"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
