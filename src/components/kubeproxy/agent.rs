//! The kube-proxy daemon: one per worker, inside the worker's namespace.
//!
//! Start: read the table the kernel already has (a restart after a kill finds its rules
//! still there and keeps them), list the state in etcd, program the difference. Then watch
//! the prefixes, wait `--debounce-ms` for a burst of changes to settle, and program the
//! difference again: always one atomic `nft -f -` transaction, never a table flush, so an
//! unchanged Service never stops answering and its endpoint counters keep counting.

use super::model::State;
use super::store::{self, Parsed};
use super::{rules, KubeProxyArgs};
use crate::components::etcd::{self, EtcdClient};
use crate::netns::route_watch::Announcements;
use crate::wait::Wake;
use anyhow::{bail, Context, Result};
use etcd_client::{EventType, GetResponse, WatchOptions, WatchStream};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the agent tries quickly to reach etcd when it starts.
const FIRST_CONTACT: Duration = Duration::from_secs(30);

/// Everything the agent reads lives under this prefix: probed, listed, then watched.
const REGISTRY: &str = "/registry/";

fn log(msg: &str) {
    println!("{} kube-proxy: {msg}", crate::ui::wall_clock());
}

/// The objects seen in etcd, by key.
#[derive(Default)]
struct Objects {
    by_key: BTreeMap<String, Parsed>,
}

impl Objects {
    fn state(&self) -> State {
        let mut st = State::default();
        for p in self.by_key.values() {
            match p {
                Parsed::Service(s) => st.services.push(s.clone()),
                Parsed::Endpoints(e) => st.endpoints.push(e.clone()),
                Parsed::Vip(v) => st.vips.push(v.clone()),
                _ => {}
            }
        }
        st
    }
}

struct Syncer {
    /// What the kernel has, as of our last successful sync (None: read it from the kernel).
    current: Option<rules::Current>,
    last_error: Option<String>,
}

impl Syncer {
    /// A new node's empty table, as one netlink batch (no nft process). When that fails,
    /// the first sync writes it with the Services.
    fn create_empty(&mut self) {
        let start = Instant::now();
        match super::create_empty_table(None) {
            Ok(()) => {
                let want = rules::desired(&State::default());
                self.current = Some(rules::Current::from_desired(&want));
                let report = super::ApplyReport {
                    stats: rules::PlanStats {
                        setup: true,
                        transactions: 1,
                        ..Default::default()
                    },
                    services: 0,
                    endpoints: 0,
                    vips: 0,
                    elapsed: start.elapsed(),
                };
                log(&report.summary());
            }
            Err(e) => log(&format!("{e:#}; the first sync writes it instead")),
        }
    }

    fn sync(&mut self, st: &State) {
        let start = Instant::now();
        if let Err(e) = st.validate() {
            let msg = format!("not programming this state, the rules stay as they are: {e:#}");
            if self.last_error.as_deref() != Some(msg.as_str()) {
                log(&msg);
                self.last_error = Some(msg);
            }
            return;
        }
        let cur = match self.current.take() {
            Some(c) => c,
            None => match super::read_current(None) {
                Ok(c) => c,
                Err(e) => {
                    log(&format!("cannot read the current table: {e:#}"));
                    return;
                }
            },
        };
        let want = rules::desired(st);
        let plans = rules::plan_sync(st, &want, &cur, rules::DEFAULT_BULK);
        match super::apply_plans(None, &plans) {
            Ok(()) => {
                self.current = Some(rules::Current::from_desired(&want));
                self.last_error = None;
                let report = super::ApplyReport {
                    stats: rules::PlanStats::total(&plans),
                    services: want.services,
                    endpoints: want.endpoints,
                    vips: want.vips,
                    elapsed: start.elapsed(),
                };
                log(&report.summary());
            }
            Err(e) => {
                // The kernel kept its old table; read it again before the next attempt.
                self.current = None;
                log(&format!("sync failed, will retry: {e:#}"));
            }
        }
    }
}

pub async fn run(args: KubeProxyArgs) -> Result<()> {
    let node = args
        .hostname_override
        .clone()
        .unwrap_or_else(|| "this node".into());
    log(&format!("starting on {node}, etcd {}", args.etcd_endpoints));
    let mut client = store::connect(&args.etcd_endpoints)?;
    let mut syncer = Syncer {
        current: None,
        last_error: None,
    };
    match super::read_current(None) {
        Ok(c) if c.table => {
            log(&format!(
                "table ip kube-proxy already exists with {} service/endpoint chains: converging it in place, without flushing",
                c.chains.len()
            ));
            syncer.current = Some(c);
        }
        Ok(_) => {
            // A new node: its empty table is made now, while etcd may still be electing,
            // so the first sync from etcd only adds Services (none, for a new cluster:
            // no nft run then, when the agents of every node are busy at once).
            log("no table ip kube-proxy yet: creating it empty now; the Services follow from etcd");
            syncer.create_empty();
        }
        Err(e) => log(&format!("cannot read nftables yet: {e:#}")),
    }
    if let Some(dev) = args.service_route_dev.clone() {
        let fallback = Duration::from_millis(args.service_route_retry_ms.max(1));
        tokio::spawn(add_service_route(dev, fallback));
    }
    let first = reach_etcd(&mut client, &args.etcd_endpoints).await;
    let debounce = Duration::from_millis(args.debounce_ms);
    let mut seen = Seen::default();
    let mut watch = first.map(|(resp, stream)| {
        seen.listed(&resp, &mut syncer);
        stream
    });
    let mut backoff = Duration::from_millis(100);
    loop {
        let watched_before = seen.watched;
        let opened = watch.take();
        if let Err(e) = session(&mut client, &mut seen, &mut syncer, debounce, opened).await {
            // A watch that ran for a while broke (its member died, say): resume at once on
            // the next member; a session that failed to start waits longer each time.
            if seen.watched > watched_before {
                backoff = Duration::from_millis(100);
            }
            log(&format!(
                "etcd: {e:#}; resuming from revision {} in {} ms",
                seen.rev + 1,
                backoff.as_millis()
            ));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Adds the service route once its device exists. The device comes with the flannel
/// agent, started beside this one: each link announcement of the namespace (the device
/// created, brought up) brings the next try at once; `fallback` only covers a missed
/// announcement or a namespace whose announcements could not be subscribed to.
async fn add_service_route(dev: String, fallback: Duration) {
    // Subscribed before the first try, so a device made just after it still wakes the next.
    let links = Announcements::links();
    if let Err(e) = links.listen_here() {
        // Unsubscribed, the watch's sleep lasts its whole timeout: the fallback alone.
        log(&format!(
            "{e:#}: the service route is tried every {} ms instead",
            fallback.as_millis()
        ));
    }
    let route = dev.clone();
    let add = move || super::ensure_service_route(None, &route);
    if until_done(add, links, fallback, log).await {
        log(&format!(
            "route 100.64.0.0/16 dev {dev} added: this worker reaches Service addresses"
        ));
    }
}

/// Tries `attempt` until it succeeds (true), again as soon as `watch` hears something and
/// after `fallback` at the latest; its first failure is said once, with "; will retry".
/// False when the watch itself broke.
async fn until_done<W: Wake + Send + 'static>(
    mut attempt: impl FnMut() -> Result<()>,
    mut watch: W,
    fallback: Duration,
    say: fn(&str),
) -> bool {
    let mut told = false;
    loop {
        match attempt() {
            Ok(()) => return true,
            Err(e) if !told => {
                say(&format!("{e:#}; will retry"));
                told = true;
            }
            Err(_) => {}
        }
        // The sleep blocks: on the blocking pool, so etcd's watch goes on meanwhile.
        watch = match tokio::task::spawn_blocking(move || {
            watch.sleep(fallback);
            watch
        })
        .await
        {
            Ok(w) => w,
            Err(e) => {
                say(&format!("the watch for retries failed: {e}; not retrying"));
                return false;
            }
        };
    }
}

/// The agent is started beside etcd's election (with its worker, not after the cluster
/// is up): quick tries until etcd first answers, so the first sync follows the leader
/// within milliseconds. Past [`FIRST_CONTACT`] the usual loop goes on trying. The first
/// answer is the watch the agent keeps, and the first listing follows it (see
/// [`EtcdClient::watch_and_list`]).
async fn reach_etcd(
    client: &mut EtcdClient,
    endpoints: &str,
) -> Option<(GetResponse, WatchStream)> {
    let reached = client
        .call_until(
            &format!("watching {REGISTRY}"),
            FIRST_CONTACT,
            |c| etcd::confirmed_watch(c, REGISTRY.to_string(), WatchOptions::new().with_prefix()),
            |r| {
                if r.attempt == 1 {
                    log(&format!("waiting for etcd at {endpoints}: {:#}", r.error))
                }
            },
        )
        .await;
    let stream = match reached {
        Ok(stream) => stream,
        Err(r) => {
            log(&format!(
                "etcd did not answer within {} s ({} attempts): {:#}; still trying",
                r.waited.as_secs(),
                r.attempt,
                r.error
            ));
            return None;
        }
    };
    match client.list(REGISTRY).await {
        Ok(resp) => Some((resp, stream)),
        Err(e) => {
            log(&format!(
                "etcd answered, then listing {REGISTRY} failed: {e:#}; still trying"
            ));
            None
        }
    }
}

/// What the agent has read from etcd, kept across connections so a broken watch resumes
/// from the next revision on another member instead of listing everything again.
#[derive(Default)]
struct Seen {
    objs: Objects,
    /// The revision everything in `objs` is current at (0: not listed yet).
    rev: i64,
    /// Watch responses received so far (a watch that delivered something was healthy).
    watched: u64,
    /// Since when `objs` holds changes not programmed yet (they survive a broken watch).
    dirty_since: Option<Instant>,
}

impl Seen {
    /// Takes a listing of Services, Endpoints and VIPs (one request: one revision for all
    /// three; a new node's agent asked four times before, hundreds of agents at once) as
    /// what is known, keeping the parsed objects by key so watch events can replace them
    /// one by one, and programs it.
    fn listed(&mut self, resp: &GetResponse, syncer: &mut Syncer) {
        let mut objs = Objects::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match store::parse(&key, kv.value()) {
                Parsed::Other => {}
                Parsed::Invalid(m) => log(&format!("ignoring {m}")),
                p => {
                    objs.by_key.insert(key, p);
                }
            }
        }
        self.objs = objs;
        self.rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        syncer.sync(&self.objs.state());
    }
}

/// One watch: `opened` when the first contact opened it; else list first when nothing
/// was listed yet (or the watch fell behind compaction), with the watch opened just before
/// the listing; else watch from the revision after the last one seen, until it breaks.
async fn session(
    client: &mut EtcdClient,
    seen: &mut Seen,
    syncer: &mut Syncer,
    debounce: Duration,
    opened: Option<WatchStream>,
) -> Result<()> {
    let mut stream = if let Some(stream) = opened {
        stream
    } else if seen.rev == 0 {
        let (resp, stream) = client
            .watch_and_list(REGISTRY)
            .await
            .with_context(|| format!("listing and watching {REGISTRY} in etcd"))?;
        seen.listed(&resp, syncer);
        stream
    } else {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(seen.rev + 1);
        client
            .call(&format!("watching {REGISTRY}"), |mut c| {
                let opts = opts.clone();
                async move { c.watch(REGISTRY, Some(opts)).await }
            })
            .await?
    };
    let from = seen.rev + 1;
    log(&format!(
        "watching {REGISTRY} from revision {from} on {}",
        client.current().describe()
    ));
    // When the last watch message came: a burst of changes is programmed once it has
    // been quiet for `debounce`.
    let mut last_message = Instant::now();
    loop {
        let wait = match seen.dirty_since {
            Some(_) => debounce.saturating_sub(last_message.elapsed()),
            None => Duration::from_secs(5),
        };
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(msg) => {
                last_message = Instant::now();
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => bail!("the watch on {} ended", client.current().describe()),
                    Err(e) => bail!("the watch on {} broke: {e}", client.current().describe()),
                };
                seen.watched += 1;
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        // Revisions before it are gone: only a new list is complete.
                        seen.rev = 0;
                        bail!(
                            "the watch fell behind compaction (revision {}); listing again",
                            resp.compact_revision()
                        );
                    }
                    bail!("the watch was cancelled ({})", resp.cancel_reason());
                }
                // Changes the listing holds already (a watch opened before it) are skipped;
                // all of one revision come in one response.
                let listed_up_to = seen.rev;
                for ev in resp.events() {
                    let Some(kv) = ev.kv().filter(|kv| kv.mod_revision() > listed_up_to) else {
                        continue;
                    };
                    seen.rev = seen.rev.max(kv.mod_revision());
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let objs = &mut seen.objs;
                    match ev.event_type() {
                        EventType::Put => match store::parse(&key, kv.value()) {
                            Parsed::Other => continue,
                            Parsed::Invalid(m) => {
                                log(&format!("ignoring {m}"));
                                objs.by_key.remove(&key);
                            }
                            p => {
                                objs.by_key.insert(key, p);
                            }
                        },
                        EventType::Delete => {
                            if objs.by_key.remove(&key).is_none() {
                                continue;
                            }
                        }
                    }
                    seen.dirty_since.get_or_insert_with(Instant::now);
                }
                // A steady stream of changes still syncs at least every 10 debounces.
                if seen
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= debounce * 10)
                {
                    syncer.sync(&seen.objs.state());
                    seen.dirty_since = None;
                }
            }
            Err(_) => {
                let settled = seen.dirty_since.is_some() && last_message.elapsed() >= debounce;
                if settled || syncer.current.is_none() {
                    syncer.sync(&seen.objs.state());
                    seen.dirty_since = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn say(m: &str) {
        SAID.lock().unwrap().push(m.to_string());
    }

    #[test]
    fn without_announcements_the_fallback_timer_retries_and_the_failure_is_said_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut tries = 0;
        // Never listening, the watch hears nothing: only the fallback brings the next try.
        let done = rt.block_on(until_done(
            || {
                tries += 1;
                if tries < 4 {
                    anyhow::bail!("adding route 100.64.0.0/16 dev flannel.100 (does 'flannel.100' exist yet?)")
                }
                Ok(())
            },
            Announcements::links(),
            Duration::from_millis(1),
            say,
        ));
        assert!(done);
        assert_eq!(tries, 4);
        assert_eq!(
            *SAID.lock().unwrap(),
            ["adding route 100.64.0.0/16 dev flannel.100 (does 'flannel.100' exist yet?); will retry"]
        );
    }
}
