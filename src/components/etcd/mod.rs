//! etcd: the real etcd server (Debian's etcd-server), one member per namespace, the one
//! client every etcd user of the simulator and its agents goes through ([`client`]: one
//! member at a time, failing over to the next), and the few calls the simulator makes
//! itself (health, the flannel network config). The simulator's calls run on a thread
//! inside a namespace that can reach the members, since the members listen only on
//! underlay addresses inside the simulation.

pub mod client;

pub use client::{confirmed_watch, EtcdClient, MemberHealth, Members, Timing};

use anyhow::{Context, Result};
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

pub const ETCD_BIN: &str = "etcd";
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// One member of an etcd cluster.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.ip)
    }
}

/// `--initial-cluster` value: `C0e1=http://10.1.0.1:2380,...`.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The command-line arguments of one member. Timing is tightened (100 ms election
/// timeout, 20 ms heartbeat) so a cluster elects a leader in well under a second on one
/// machine; `--enable-v2` keeps the original's `etcdctl cluster-health` working.
///
/// The heartbeat is also raft's tick, and 20 ms is the longest etcd accepts beside a
/// 100 ms election timeout (it wants five heartbeats in one). The election waits a
/// random 5 to 9 ticks, 100 to 180 ms, as 10 to 19 ticks of 10 ms did; but every member
/// ticks, and the leader sends a heartbeat, half as often: the default scenario's four
/// members, idle, used 21% of a core with a 10 ms heartbeat and 15 to 16% with 20 ms,
/// CPU the agents and pods need in the moments after the election.
pub fn member_args(member: &Member, all: &[Member], data_dir: &Path, token: &str) -> Vec<String> {
    let ip = member.ip;
    [
        "--name".into(),
        member.name.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-peer-urls".into(),
        member.peer_url(),
        "--initial-advertise-peer-urls".into(),
        member.peer_url(),
        "--listen-client-urls".into(),
        format!("{},http://127.0.0.1:{CLIENT_PORT}", member.client_url()),
        "--advertise-client-urls".into(),
        format!("http://{ip}:{CLIENT_PORT}"),
        "--initial-cluster".into(),
        initial_cluster(all),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        token.into(),
        "--enable-v2".into(),
    ]
    .into_iter()
    .chain(timing_args())
    .collect()
}

/// The raft timing flags of [`member_args`] (20 ms heartbeat, 100 ms election timeout),
/// for the tests that start an etcd of their own to run it as the simulator does.
pub fn timing_args() -> [String; 2] {
    [
        "--heartbeat-interval=20".into(),
        "--election-timeout=100".into(),
    ]
}

/// The CPU nice value a member starts at, kept until its cluster has elected a leader.
/// Everything after the election waits on it, and a cluster can elect only once its
/// members are up; meanwhile the simulator wires the workers and starts their agents,
/// pods and plugins on the same cores. At the simulator's priority a member started last
/// printed its first line up to 0.12 s after it was started, against 0.03 to 0.06 s
/// when the members start alone. In alternate sittings (30 or 45 runs each) of the
/// default scenario, start() with its pods took a median of 274 ms at 0, 234 ms at -5
/// and 220 ms at -10 (-20 as -10). Kept ahead after the election as well, the members
/// took the cores from the CNI plugins in the part after it (42 ms instead of 34), so
/// they are ordinary processes again from then on.
pub const ELECTION_NICE: i32 = -10;

/// The environment of one member: `GOMAXPROCS=1`, so the Go runtime runs etcd's
/// goroutines on one thread at a time (etcd logs "setting maximum number of CPUs to 1",
/// as it does in a container limited to one CPU). A member of the simulation serves a
/// handful of agents; on a machine of two cores shared by every member, agent and CNI
/// plugin, a second Go processor mostly woke threads on the other core for work one
/// could do. In alternate runs of the default scenario (heartbeat 20 ms in both) the
/// four idle members used 10 to 12% of a core instead of 15%, the election took a median
/// of 0.262 s instead of 0.273 s, and start() with its pods added 33 ms to it instead of
/// 36 ms.
pub fn member_env() -> Vec<(String, String)> {
    vec![("GOMAXPROCS".into(), "1".into())]
}

/// Runs `f` with a fail-over client of `members`, from inside namespace `ns`.
pub fn with_client<F, Fut, R>(ns: &str, members: &Members, f: F) -> Result<R>
where
    F: FnOnce(EtcdClient) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
    R: Send + 'static,
{
    let members = members.clone();
    crate::netns::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f(EtcdClient::new(members)))
    })
}

/// Every member's Status, asked from inside namespace `ns` (who is up, who leads).
pub fn health(ns: &str, members: &Members) -> Result<Vec<MemberHealth>> {
    with_client(ns, members, |c| async move {
        Ok(client::probe(c.members(), &Timing::default()).await)
    })
}

/// One linearizable read, one round over the members (no retry budget): it succeeds only
/// once the cluster has a leader. Readiness waits call it again and again (see
/// [`crate::wait`]), so it must come back quickly either way.
pub fn health_read(ns: &str, endpoints: &str) -> Result<()> {
    let members = Members::parse(endpoints)?;
    let timing = Timing {
        budget: Duration::ZERO,
        ..Timing::default()
    };
    with_client(ns, &members, move |c| async move {
        c.with_timing(timing)
            .call("a health read", |mut c| async move {
                c.get("health", None).await
            })
            .await?;
        Ok(())
    })
}

pub fn put(ns: &str, endpoints: &str, key: &str, value: &str) -> Result<()> {
    let (k, v) = (key.to_string(), value.to_string());
    with_client(ns, &Members::parse(endpoints)?, move |mut c| async move {
        c.call(&format!("writing {k}"), |mut c| {
            let (k, v) = (k.clone(), v.clone());
            async move { c.put(k, v, None).await }
        })
        .await
        .with_context(|| format!("writing {k} to etcd"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(args: &[String], flag: &str) -> u64 {
        let prefix = format!("{flag}=");
        args.iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{flag} is not set"))
            .parse()
            .unwrap()
    }

    #[test]
    fn member_timing_is_what_etcd_accepts_and_elects_within_a_fifth_of_a_second() {
        let m = Member {
            name: "C0e1".into(),
            ip: Ipv4Addr::new(10, 1, 0, 1),
        };
        let args = member_args(&m, std::slice::from_ref(&m), Path::new("/d"), "t");
        let (heartbeat, election) = (
            millis(&args, "--heartbeat-interval"),
            millis(&args, "--election-timeout"),
        );
        // etcd refuses to start unless the election timeout holds five heartbeats.
        assert!(election >= 5 * heartbeat, "{heartbeat} ms / {election} ms");
        // raft waits a random 1x to 2x the election timeout (in whole ticks) to campaign.
        assert!(2 * election <= 200, "{election} ms");
        assert!(member_env().contains(&("GOMAXPROCS".into(), "1".into())));
    }
}
