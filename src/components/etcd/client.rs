//! The one etcd client of the simulator and of its agents (flanneld, kube-proxy).
//!
//! etcd-client's own multi-endpoint channel balances every request over all members and
//! fails the request when the member it picked refuses, so a single dead member breaks
//! calls although the cluster still has quorum. This client talks to one member at a time:
//! it starts with the member that last answered, gives a member a short connect timeout
//! and a bounded time to answer, and on a connection error, a timeout or "no leader" moves
//! on to the next member. Watches are opened the same way; their owners resume them from
//! the last revision they saw when a stream breaks, and the next `watch` call lands on a
//! live member.
//!
//! Requests carry etcd's `hasleader` requirement, so a member cut off from its quorum
//! answers "etcdserver: no leader" at once instead of letting the request time out. When
//! every member has failed, the members' Status (served locally, without consensus) tells
//! which are down: without quorum a call fails at once, naming the members that are down.

use anyhow::{anyhow, bail, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, WatchOptions, WatchStream};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// gRPC status codes (they are the same in every gRPC implementation) after which another
/// member may well answer.
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// One member a client can talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The member's name (`C0e1`) when the caller knows it; the agents know only URLs.
    pub name: Option<String>,
    /// `http://10.1.0.1:2379`.
    pub url: String,
}

impl Endpoint {
    /// `10.1.0.2:2379`.
    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://").trim_end_matches('/')
    }

    /// `C0e2 (10.1.0.2:2379)`, or the address alone when the name is unknown.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.address()),
            None => self.address().to_string(),
        }
    }
}

/// The members of one etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Whose etcd it is (`C0`), for messages.
    pub cluster: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

impl Members {
    /// Members from comma-separated client URLs (`--etcd-endpoints`); `10.1.0.1:2379`
    /// means `http://10.1.0.1:2379`.
    pub fn parse(urls: &str) -> Result<Members> {
        let mut endpoints = Vec::new();
        for u in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let rest = u.strip_prefix("http://").unwrap_or(u);
            let host_ok = |h: &str| {
                !h.is_empty()
                    && (h
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                        || (h.starts_with('[') && h.ends_with(']')))
            };
            let ok = rest
                .trim_end_matches('/')
                .rsplit_once(':')
                .is_some_and(|(host, port)| {
                    host_ok(host) && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
            if !ok {
                bail!(
                    "'{u}' is not an etcd client URL: give comma-separated URLs such as http://10.1.0.1:2379,http://10.1.0.2:2379"
                );
            }
            endpoints.push(Endpoint {
                name: None,
                url: format!("http://{}", rest.trim_end_matches('/')),
            });
        }
        if endpoints.is_empty() {
            bail!("no etcd endpoint given: pass --etcd-endpoints http://IP:2379");
        }
        Ok(Members {
            cluster: None,
            endpoints,
        })
    }

    /// The members of cluster `cluster` (`C0`) as (name, client URL).
    pub fn named(cluster: &str, members: impl IntoIterator<Item = (String, String)>) -> Members {
        Members {
            cluster: Some(cluster.to_string()),
            endpoints: members
                .into_iter()
                .map(|(name, url)| Endpoint {
                    name: Some(name),
                    url,
                })
                .collect(),
        }
    }

    /// Comma-separated client URLs, as `--etcd-endpoints` takes them.
    pub fn urls(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// "etcd of C0", or "etcd" when the cluster is not known.
    pub fn whose(&self) -> String {
        match &self.cluster {
            Some(c) => format!("etcd of {c}"),
            None => "etcd".into(),
        }
    }

    /// The message when too few members are up (`up[i]`: member i answered its Status),
    /// or None while a majority is up.
    pub fn quorum_lost(&self, up: &[bool]) -> Option<String> {
        let n = self.endpoints.len();
        let alive = up.iter().filter(|u| **u).count();
        // A majority of the members is a quorum.
        if alive > n / 2 {
            return None;
        }
        let down: Vec<String> = self
            .endpoints
            .iter()
            .zip(up)
            .filter(|(_, u)| !**u)
            .map(|(e, _)| e.describe())
            .collect();
        let down_text = match down.split_last() {
            Some((last, [])) => format!("{last} is"),
            Some((last, rest)) => format!("{} and {last} are", rest.join(", ")),
            None => "no member is".into(),
        };
        if alive == 0 {
            return Some(format!(
                "{} does not answer: {down_text} down, no member is up",
                self.whose()
            ));
        }
        let can_lose = (n - 1) / 2;
        let advice = match can_lose {
            0 => format!("a {n}-member cluster cannot lose any member — use etcd: 3"),
            1 => format!("a {n}-member cluster can lose only 1 member"),
            k => format!("a {n}-member cluster can lose at most {k} members"),
        };
        Some(format!(
            "{} has lost quorum: {down_text} down, {alive} of {n} members up; {advice}",
            self.whose()
        ))
    }
}

/// How long the client waits, per member and per call.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// For a connection to one member, before trying the next one.
    pub connect: Duration,
    /// For one member to answer one request.
    pub request: Duration,
    /// For one call to succeed on some member while the cluster still has quorum (a leader
    /// election after the leader died takes a moment).
    pub budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect: Duration::from_millis(500),
            request: Duration::from_secs(3),
            budget: Duration::from_secs(10),
        }
    }
}

/// How long one try of [`EtcdClient::call_until`] waits on one member before it begins
/// again on a new connection.
const EARLY_TRY: Duration = Duration::from_secs(1);

/// The member that last answered, per member list, so that a new client (the simulator
/// makes one per call) does not start with a member known to be down.
static LAST_GOOD: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

fn last_good(urls: &str) -> usize {
    LAST_GOOD
        .lock()
        .unwrap()
        .iter()
        .find(|(u, _)| u == urls)
        .map_or(0, |(_, i)| *i)
}

fn remember_good(urls: &str, i: usize) {
    let mut all = LAST_GOOD.lock().unwrap();
    match all.iter_mut().find(|(u, _)| u == urls) {
        Some(e) => e.1 = i,
        None => all.push((urls.to_string(), i)),
    }
}

/// Whether another member may answer what this one did not.
pub fn fails_over(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code() as i32,
            GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED | GRPC_UNKNOWN | GRPC_CANCELLED
        ),
        _ => false,
    }
}

/// The short form of an etcd-client error: the gRPC message alone when there is one
/// ("etcdserver: no leader", "tcp connect error: Connection refused").
fn brief(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => s.message().to_string(),
        e => e.to_string(),
    }
}

fn connect_options(timing: &Timing, require_leader: bool) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(timing.connect)
        // Only while a stream (a watch) is open: etcd closes connections that ping idle.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(false)
        .with_require_leader(require_leader)
}

/// What each member's Status says, or why it did not answer.
#[derive(Debug, Clone)]
pub struct MemberHealth {
    pub endpoint: Endpoint,
    /// (this member's id, the leader it knows of, 0 when none), or the error.
    pub status: std::result::Result<(u64, u64), String>,
}

impl MemberHealth {
    pub fn is_up(&self) -> bool {
        self.status.is_ok()
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.status, Ok((id, leader)) if id != 0 && id == leader)
    }
}

/// Asks every member for its Status at once, each bounded by about a second.
pub async fn probe(members: &Members, timing: &Timing) -> Vec<MemberHealth> {
    let bound = timing.connect * 2;
    let asks = members.endpoints.iter().map(|ep| async move {
        let status = async {
            let mut c = Client::connect([ep.url.as_str()], Some(connect_options(timing, false)))
                .await
                .map_err(|e| brief(&e))?;
            match tokio::time::timeout(bound, c.status()).await {
                Ok(Ok(s)) => Ok((s.header().map_or(0, |h| h.member_id()), s.leader())),
                Ok(Err(e)) => Err(brief(&e)),
                Err(_) => Err(format!("no answer within {} ms", bound.as_millis())),
            }
        }
        .await;
        MemberHealth {
            endpoint: ep.clone(),
            status,
        }
    });
    futures::future::join_all(asks).await
}

enum Failure {
    Etcd(etcd_client::Error),
    Timeout,
}

/// A client of one etcd cluster that fails over between its members.
pub struct EtcdClient {
    members: Members,
    urls: String,
    timing: Timing,
    clients: Vec<Option<Client>>,
    current: usize,
}

impl EtcdClient {
    pub fn new(members: Members) -> EtcdClient {
        let urls = members.urls();
        let n = members.endpoints.len();
        let current = last_good(&urls) % n.max(1);
        EtcdClient {
            clients: vec![None; n],
            members,
            urls,
            timing: Timing::default(),
            current,
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> EtcdClient {
        self.timing = timing;
        self
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The member the next call tries first (the last one that answered).
    pub fn current(&self) -> &Endpoint {
        &self.members.endpoints[self.current]
    }

    async fn client(&mut self, i: usize) -> std::result::Result<Client, etcd_client::Error> {
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        // Nothing is dialled here: the connection is made by the first request.
        let url = self.members.endpoints[i].url.as_str();
        let c = Client::connect([url], Some(connect_options(&self.timing, true))).await?;
        self.clients[i] = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` against one member after another until one answers. `what` names the
    /// request in messages ("writing /registry/...").
    ///
    /// Errors another member cannot fix (a bad request, a compacted revision) are returned
    /// as they are. When every member failed, their Status decides: without quorum the call
    /// fails at once, naming the members that are down; with quorum it tries again (a
    /// leader election) until the time budget is spent.
    pub async fn call<T, F, Fut>(&mut self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let n = self.members.endpoints.len();
        loop {
            let mut failures = Vec::new();
            for step in 0..n {
                let i = (self.current + step) % n;
                let res = match self.client(i).await {
                    Ok(c) => {
                        let members = &self.members;
                        let timing = &self.timing;
                        // A member that just lost its peers may hold a request until it
                        // notices; the members' Status tells sooner whether to wait at all.
                        let quorum_gone = async {
                            tokio::time::sleep(timing.connect).await;
                            let up: Vec<bool> = probe(members, timing)
                                .await
                                .iter()
                                .map(MemberHealth::is_up)
                                .collect();
                            members.quorum_lost(&up)
                        };
                        tokio::select! {
                            r = f(c) => r.map_err(Failure::Etcd),
                            _ = tokio::time::sleep(timing.request) => Err(Failure::Timeout),
                            Some(msg) = quorum_gone => bail!("{msg}"),
                        }
                    }
                    Err(e) => Err(Failure::Etcd(e)),
                };
                let ep = &self.members.endpoints[i];
                match res {
                    Ok(v) => {
                        if i != self.current {
                            self.current = i;
                            remember_good(&self.urls, i);
                        }
                        return Ok(v);
                    }
                    Err(Failure::Etcd(e)) if !fails_over(&e) => {
                        return Err(anyhow!("{}: {}: {e}", self.members.whose(), ep.describe()));
                    }
                    Err(f) => {
                        // A fresh connection next time: this one may be to a dead process.
                        self.clients[i] = None;
                        let why = match f {
                            Failure::Etcd(e) => brief(&e),
                            Failure::Timeout => {
                                format!("no answer within {} s", self.timing.request.as_secs_f64())
                            }
                        };
                        failures.push(format!("{}: {why}", ep.describe()));
                    }
                }
            }
            let health = probe(&self.members, &self.timing).await;
            let up: Vec<bool> = health.iter().map(MemberHealth::is_up).collect();
            if let Some(msg) = self.members.quorum_lost(&up) {
                bail!("{msg}");
            }
            if started.elapsed() >= self.timing.budget {
                bail!(
                    "{} did not answer {what} within {} s although {} of {n} members are up ({})",
                    self.members.whose(),
                    self.timing.budget.as_secs(),
                    up.iter().filter(|u| **u).count(),
                    failures.join("; ")
                );
            }
            // Start the next round with a member that is up, if any.
            if let Some(i) = up.iter().position(|u| *u) {
                self.current = i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lists `prefix` and watches it for what follows, with no change lost between the two
    /// and none delivered late. The watch is opened first, from etcd's head, and the
    /// listing is made once etcd has confirmed it. The other order (list, then watch from
    /// the revision after the listing) starts the watch behind etcd's head whenever
    /// anything was written in between, and etcd catches up such a watch only every
    /// 100 ms: three agents writing their leases at once met that in one bring-up in four.
    /// Events the listing already holds (at or below the revision in its header) may come
    /// on the stream too: the caller skips them.
    pub async fn watch_and_list(&mut self, prefix: &str) -> Result<(GetResponse, WatchStream)> {
        let stream = self
            .call(&format!("watching {prefix}"), |c| {
                confirmed_watch(c, prefix.to_string(), WatchOptions::new().with_prefix())
            })
            .await?;
        Ok((self.list(prefix).await?, stream))
    }

    /// Every key under `prefix`, current at the revision in the response's header.
    pub async fn list(&mut self, prefix: &str) -> Result<GetResponse> {
        self.call(&format!("listing {prefix}"), |mut c| {
            let p = prefix.to_string();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await
    }

    /// [`EtcdClient::call`] for an agent started while its etcd may still be electing a
    /// leader. A member that is up but has no leader yet holds the connection and the
    /// request until it has one, then answers within a millisecond of the election: such a
    /// try is waited on (up to [`EARLY_TRY`], then begun again on a new connection). A
    /// member that refuses (not listening yet) or fails is left for the next one at once,
    /// in the usual order, so the first member answers when it is up; after a round of
    /// refusals the pause before the next grows from 10 ms to 100 ms. `on_retry` hears of
    /// each failed try (to log it); after `wait` the call gives up.
    pub async fn call_until<T, F, Fut>(
        &mut self,
        what: &str,
        wait: Duration,
        mut f: F,
        mut on_retry: impl FnMut(&Retry),
    ) -> std::result::Result<T, Retry>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let n = self.members.endpoints.len();
        let mut pause = Duration::from_millis(10);
        let mut attempt = 0;
        let mut last = anyhow!("{} has no members to ask", self.members.whose());
        loop {
            for step in 0..n {
                let i = (self.current + step) % n;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(Retry {
                        attempt,
                        waited: started.elapsed(),
                        error: anyhow!("{what}: {last:#}"),
                    });
                }
                let limit = EARLY_TRY.min(left);
                let options = connect_options(
                    &Timing {
                        connect: limit,
                        ..self.timing
                    },
                    true,
                );
                let url = self.members.endpoints[i].url.clone();
                let asked = async {
                    // Nothing is dialled here: the request below makes the connection.
                    let c = Client::connect([url.as_str()], Some(options)).await?;
                    f(c.clone()).await.map(|v| (c, v))
                };
                let error = match tokio::time::timeout(limit, asked).await {
                    Ok(Ok((client, v))) => {
                        self.clients[i] = Some(client);
                        if i != self.current {
                            self.current = i;
                            remember_good(&self.urls, i);
                        }
                        return Ok(v);
                    }
                    Ok(Err(e)) => brief(&e),
                    Err(_) => format!("no answer within {} ms", limit.as_millis()),
                };
                attempt += 1;
                last = anyhow!("{}: {error}", self.members.endpoints[i].describe());
                let retry = Retry {
                    attempt,
                    waited: started.elapsed(),
                    error: anyhow!("{last:#}"),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(Retry {
                        error: anyhow!("{what}: {last:#}"),
                        ..retry
                    });
                }
                on_retry(&retry);
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + pause).min(deadline)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// Opens a watch on `key` (with `options`: a prefix, say) from etcd's head and waits until
/// etcd has confirmed it (see
/// [`EtcdClient::watch_and_list`]); made to be given to [`EtcdClient::call`] or
/// [`EtcdClient::call_until`].
pub async fn confirmed_watch(
    mut c: Client,
    key: String,
    options: WatchOptions,
) -> std::result::Result<WatchStream, etcd_client::Error> {
    let mut s = c.watch(key, Some(options)).await?;
    // etcd answers a new watch with its confirmation (or a refusal) first.
    match s.message().await? {
        Some(r) if r.created() && !r.canceled() => Ok(s),
        Some(r) => Err(etcd_client::Error::WatchError(format!(
            "etcd refused the watch: {}",
            r.cancel_reason()
        ))),
        None => Err(etcd_client::Error::WatchError(
            "the watch ended before etcd confirmed it".into(),
        )),
    }
}

/// A failed try of [`EtcdClient::call_until`]: which one, how long after the first, why.
#[derive(Debug)]
pub struct Retry {
    pub attempt: u32,
    pub waited: Duration,
    pub error: anyhow::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c0(n: usize) -> Members {
        Members::named(
            "C0",
            (1..=n).map(|k| (format!("C0e{k}"), format!("http://10.1.0.{k}:2379"))),
        )
    }

    #[test]
    fn endpoints_are_parsed_and_bad_ones_named() {
        let m = Members::parse("http://10.1.0.1:2379, 10.1.0.2:2379/,").unwrap();
        assert_eq!(m.urls(), "http://10.1.0.1:2379,http://10.1.0.2:2379");
        assert_eq!(m.endpoints[1].describe(), "10.1.0.2:2379");
        assert_eq!(m.whose(), "etcd");
        for bad in [
            "https//x",
            "http://10.1.0.1",
            "10.1.0.1:0",
            "ftp://a:1",
            ":2379",
            "http://exa mple:2379",
        ] {
            let e = Members::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("'{bad}' is not an etcd client URL")),
                "{e}"
            );
        }
        let e = Members::parse(" , ").unwrap_err().to_string();
        assert!(e.contains("no etcd endpoint given"), "{e}");
    }

    #[test]
    fn quorum_message_names_the_members_that_are_down() {
        assert_eq!(c0(3).quorum_lost(&[true, false, true]), None);
        assert_eq!(c0(2).quorum_lost(&[true, true]), None);
        assert_eq!(
            c0(2).quorum_lost(&[true, false]).unwrap(),
            "etcd of C0 has lost quorum: C0e2 (10.1.0.2:2379) is down, 1 of 2 members up; \
             a 2-member cluster cannot lose any member — use etcd: 3"
        );
        assert_eq!(
            c0(3).quorum_lost(&[false, true, false]).unwrap(),
            "etcd of C0 has lost quorum: C0e1 (10.1.0.1:2379) and C0e3 (10.1.0.3:2379) are down, \
             1 of 3 members up; a 3-member cluster can lose only 1 member"
        );
        let m = c0(5)
            .quorum_lost(&[false, false, false, true, true])
            .unwrap();
        assert!(
            m.contains("C0e1 (10.1.0.1:2379), C0e2 (10.1.0.2:2379) and C0e3 (10.1.0.3:2379) are down, 2 of 5 members up; a 5-member cluster can lose at most 2 members"),
            "{m}"
        );
        let agent = Members::parse("http://10.1.0.1:2379").unwrap();
        assert_eq!(
            agent.quorum_lost(&[false]).unwrap(),
            "etcd does not answer: 10.1.0.1:2379 is down, no member is up"
        );
        assert_eq!(agent.quorum_lost(&[true]), None);
    }

    /// A port on loopback that refuses connections (bound, then closed).
    fn refusing_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn every_member_refusing_is_reported_at_once_naming_them() {
        let m = Members::named(
            "C9",
            [
                ("C9e1".to_string(), refusing_url()),
                ("C9e2".to_string(), refusing_url()),
            ],
        );
        let mut c = EtcdClient::new(m.clone());
        // No quorum ends the call after the first round, not after the time budget.
        let e = c
            .call("a read", |mut c| async move { c.get("k", None).await })
            .await
            .unwrap_err()
            .to_string();
        let a = m.endpoints[0].describe();
        let b = m.endpoints[1].describe();
        assert!(
            e.contains(&format!(
                "etcd of C9 does not answer: {a} and {b} are down, no member is up"
            )),
            "{e}"
        );
    }
}
