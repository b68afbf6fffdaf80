//! flannel's etcd v3 subnet registry: read the config, list leases, acquire a lease with an
//! etcd lease (TTL 24 h) in a transaction `if version(key) == 0 then put(key, value,
//! lease)`, renew it by putting the key again with a fresh etcd lease, and watch the
//! subnets prefix.

use super::config::NetConfig;
use super::log;
use super::subnet::{self, Choice, Ipv4Net, Lease, LeaseAttrs, Range};
use crate::components::etcd::{self, EtcdClient, Members};
use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{
    Compare, CompareOp, EventType, GetResponse, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use std::time::{Duration, Instant};

/// flannel's lease time to live.
pub const SUBNET_TTL: Duration = Duration::from_secs(24 * 3600);
/// flannel's number of tries when another node wins the race for a subnet.
pub const RACE_RETRIES: usize = 10;

pub struct Registry {
    etcd: EtcdClient,
    pub prefix: String,
    /// TTL of the etcd lease behind each subnet lease (flannel: 24 h).
    pub ttl: Duration,
}

/// How a wait for a missing key ended.
enum Written {
    /// It was written: its value.
    Value(String),
    /// Something else happened to it (deleted again, the watch broke): read it again.
    Changed,
    TimedOut,
}

/// A lease we hold.
#[derive(Debug, Clone)]
pub struct OwnLease {
    pub subnet: Ipv4Net,
    pub expires: Instant,
}

impl Registry {
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `10.1.0.2:2379`: the member the next call goes to first.
    pub fn member(&self) -> String {
        self.etcd.current().describe()
    }

    /// Connects and reads the network config. While etcd does not answer (still electing
    /// a leader, or not started yet) or the config key is missing, it waits as flanneld
    /// does ("could not fetch the network config", then tries again) until `wait` has
    /// passed: tries come quickly at first, and the first answer is a watch on the key,
    /// opened before the key is read (see [`EtcdClient::watch_and_list`]), so an agent
    /// started beside etcd gets a config written after its read from that watch, within
    /// milliseconds. Returns the registry and the config text.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        wait: Duration,
    ) -> Result<(Self, String)> {
        let eps = endpoints.join(",");
        let members = Members::parse(&eps).map_err(|e| anyhow!("--etcd-endpoints {eps}: {e:#}"))?;
        let mut etcd = EtcdClient::new(members);
        let prefix = prefix.trim_end_matches('/').to_string();
        let key = format!("{prefix}/config");
        let started = Instant::now();
        let mut logged: Option<Instant> = None;
        let mut missing_logged = false;
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let watch = etcd
                .call_until(
                    &format!("watching {key}"),
                    left,
                    |c| etcd::confirmed_watch(c, key.clone(), WatchOptions::new()),
                    |r| {
                        // Tries come every few ms at first: log one a second.
                        if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            log!(
                                "waiting for etcd at {eps} (attempt {}, {}s of {}s): {:#}",
                                r.attempt,
                                r.waited.as_secs(),
                                wait.as_secs(),
                                r.error
                            );
                            logged = Some(Instant::now());
                        }
                    },
                )
                .await;
            let mut stream = watch.map_err(|r| {
                anyhow!(
                    "etcd is unreachable at {eps} after {}s ({} attempts): {:#}. \
                     Check that etcd is running and that --etcd-endpoints is right and reachable from this network namespace",
                    started.elapsed().as_secs(),
                    r.attempt,
                    r.error
                )
            })?;
            let written = match Self::read_key(&mut etcd, &key).await {
                Ok(Some(text)) => Written::Value(text),
                // The watch goes on; a failed read is tried again with a new one.
                Err(_) => Written::Changed,
                Ok(None) => {
                    let left = wait.saturating_sub(started.elapsed());
                    if !missing_logged {
                        log!(
                            "could not fetch the network config: etcd key {key} is missing; waiting up to {}s for it to be written",
                            left.as_secs()
                        );
                        missing_logged = true;
                    }
                    Self::key_written(&mut stream, left).await
                }
            };
            match written {
                Written::Value(text) => {
                    log!(
                        "connected to etcd at {eps} (answered by {})",
                        etcd.current().describe()
                    );
                    let registry = Self {
                        etcd,
                        prefix,
                        ttl: SUBNET_TTL,
                    };
                    return Ok((registry, text));
                }
                Written::Changed => {}
                Written::TimedOut => bail!(
                    "etcd key {key} is missing: flannel reads its network configuration from it. \
                     Set it first, e.g. `etcdctl put {key} '{{\"Network\":\"11.0.0.0/8\",\"SubnetLen\":20,\"Backend\":{{\"Type\":\"vxlan\",\"VNI\":100}}}}'` \
                     (with ETCDCTL_API=3), or pass the right --etcd-prefix"
                ),
            }
        }
    }

    /// Waits on a watch of the config key until the key is written (its value, from the
    /// watch: no second read), changes otherwise (deleted, the watch broke: read again),
    /// or `left` has passed.
    async fn key_written(stream: &mut WatchStream, left: Duration) -> Written {
        let until = tokio::time::Instant::now() + left;
        loop {
            match tokio::time::timeout_at(until, stream.message()).await {
                Err(_) => return Written::TimedOut,
                Ok(Ok(Some(resp))) if resp.events().is_empty() && !resp.canceled() => {}
                Ok(Ok(Some(resp))) => {
                    let put = resp.events().iter().rev().find_map(|ev| {
                        (ev.event_type() == EventType::Put)
                            .then(|| ev.kv())
                            .flatten()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    });
                    return put.map_or(Written::Changed, Written::Value);
                }
                Ok(_) => return Written::Changed,
            }
        }
    }

    /// `key`'s value now, or none when it is missing.
    async fn read_key(etcd: &mut EtcdClient, key: &str) -> Result<Option<String>> {
        let resp = etcd
            .call(&format!("reading {key}"), |mut c| {
                let k = key.to_string();
                async move { c.get(k, None).await }
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Every lease under `<prefix>/subnets/` and the revision of that snapshot.
    pub async fn leases(&mut self) -> Result<(Vec<Lease>, i64)> {
        let resp = self
            .etcd
            .list(&subnet::subnets_prefix(&self.prefix))
            .await?;
        Ok(self.parse_leases(&resp))
    }

    /// [`Registry::leases`] with a watch for every change after them (see
    /// [`EtcdClient::watch_and_list`]; events at or below the listing's revision may come
    /// on it as well).
    pub async fn watch_leases(&mut self) -> Result<(Vec<Lease>, i64, WatchStream)> {
        let p = subnet::subnets_prefix(&self.prefix);
        let (resp, stream) = self.etcd.watch_and_list(&p).await?;
        let (leases, rev) = self.parse_leases(&resp);
        Ok((leases, rev, stream))
    }

    fn parse_leases(&self, resp: &GetResponse) -> (Vec<Lease>, i64) {
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(sn) = subnet::parse_lease_key(&self.prefix, &key) else {
                log!("ignoring key {key}: not a subnet lease");
                continue;
            };
            match LeaseAttrs::from_json(kv.value()) {
                Ok(attrs) => out.push(Lease { subnet: sn, attrs }),
                Err(e) => log!("ignoring bad subnet lease {key}: {e:#}"),
            }
        }
        (out, rev)
    }

    /// An etcd lease of `self.ttl`: its id and granted TTL in seconds.
    async fn grant(&mut self) -> Result<(i64, i64)> {
        let ttl = self.ttl.as_secs() as i64;
        let g = self
            .etcd
            .call("granting a lease", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok((g.id(), g.ttl()))
    }

    /// Revokes an etcd lease we no longer need; failing leaves it to expire.
    async fn revoke(&mut self, id: i64) {
        let res = self
            .etcd
            .call("revoking a lease", |mut c| async move {
                c.lease_revoke(id).await
            })
            .await;
        if let Err(e) = res {
            log!("could not revoke etcd lease {id:x} (it expires on its own): {e:#}");
        }
    }

    /// Creates the lease key only if nobody holds it. Ok(None) when someone was faster.
    pub async fn create(&mut self, sn: &Ipv4Net, attrs: &LeaseAttrs) -> Result<Option<Instant>> {
        let key = subnet::lease_key(&self.prefix, sn);
        let (id, ttl) = self.grant().await?;
        let txn = Txn::new()
            .when(vec![Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                attrs.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let res = self
            .etcd
            .call(&format!("creating {key}"), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let ok = match res {
            Ok(r) => r.succeeded(),
            Err(e) => {
                self.revoke(id).await;
                return Err(e);
            }
        };
        if !ok {
            self.revoke(id).await;
            return Ok(None);
        }
        Ok(Some(Instant::now() + Duration::from_secs(ttl as u64)))
    }

    /// Puts the lease key again with a fresh etcd lease (reuse and renewal).
    pub async fn update(&mut self, sn: &Ipv4Net, attrs: &LeaseAttrs) -> Result<Instant> {
        let key = subnet::lease_key(&self.prefix, sn);
        let (id, ttl) = self.grant().await?;
        let value = attrs.to_json();
        let res = self
            .etcd
            .call(&format!("writing {key}"), |mut c| {
                let (k, v) = (key.clone(), value.clone());
                async move { c.put(k, v, Some(PutOptions::new().with_lease(id))).await }
            })
            .await;
        if let Err(e) = res {
            self.revoke(id).await;
            return Err(e);
        }
        Ok(Instant::now() + Duration::from_secs(ttl as u64))
    }

    pub async fn delete(&mut self, sn: &Ipv4Net) -> Result<()> {
        let key = subnet::lease_key(&self.prefix, sn);
        self.etcd
            .call(&format!("deleting {key}"), |mut c| {
                let k = key.clone();
                async move { c.delete(k, None).await }
            })
            .await?;
        Ok(())
    }

    /// A prefix watch on `<prefix>/subnets/` starting at revision `from`, on the first
    /// member that accepts it.
    pub async fn watch(&mut self, from: i64) -> Result<WatchStream> {
        let p = subnet::subnets_prefix(&self.prefix);
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        self.etcd
            .call(&format!("watching {p}"), |mut c| {
                let (p, opts) = (p.clone(), opts.clone());
                async move { c.watch(p, Some(opts)).await }
            })
            .await
    }

    /// flannel's AcquireLease: up to 10 tries of (list, choose, create).
    pub async fn acquire(
        &mut self,
        cfg: &NetConfig,
        attrs: &LeaseAttrs,
        previous: Option<Ipv4Net>,
    ) -> Result<OwnLease> {
        let range = Range::from_config(cfg);
        for _ in 0..RACE_RETRIES {
            let (leases, _) = self.leases().await?;
            let choice = subnet::choose(&range, &leases, attrs.public_ip, previous, |n| {
                rand::random_range(0..n)
            })?;
            match choice {
                Choice::Reuse(sn) => {
                    log!(
                        "found lease {sn} for current IP {}, reusing",
                        attrs.public_ip
                    );
                    let expires = self.update(&sn, attrs).await?;
                    return Ok(OwnLease {
                        subnet: sn,
                        expires,
                    });
                }
                Choice::DeleteIncompatible(sn) => {
                    log!(
                        "found lease {sn} for current IP {} but it does not fit the network config, deleting it",
                        attrs.public_ip
                    );
                    self.delete(&sn).await?;
                    continue;
                }
                Choice::Create {
                    subnet: sn,
                    previous,
                } => {
                    if previous {
                        log!("found previously leased subnet {sn} (from the subnet file), reusing");
                    } else {
                        log!("picking subnet in range {} ... {}", range.min, range.max);
                    }
                    match self.create(&sn, attrs).await? {
                        Some(expires) => {
                            log!(
                                "acquired lease {sn} for {} (etcd key {})",
                                attrs.public_ip,
                                subnet::lease_key(&self.prefix, &sn)
                            );
                            return Ok(OwnLease {
                                subnet: sn,
                                expires,
                            });
                        }
                        None => {
                            log!("subnet {sn} was taken by another node meanwhile, trying again");
                            continue;
                        }
                    }
                }
            }
        }
        Err(anyhow!(
            "max retries ({RACE_RETRIES}) reached trying to acquire a subnet: other nodes kept taking the chosen ones"
        ))
        .context("acquiring a subnet lease")
    }
}
