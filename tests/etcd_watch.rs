//! The agents' list-and-watch (`EtcdClient::watch_and_list`, used by flanneld and
//! kube-proxy) against a cluster's real etcd: the listing holds what was written before,
//! the watch brings what is written after, and etcd counts the watch as current at once.
//!
//! A watch asked to start behind etcd's head is not "synced": etcd catches it up in a loop
//! that runs every 100 ms, and counts it meanwhile in its slow-watcher gauge. That is what
//! the agents met when they listed first and then watched from the revision after the
//! listing while other agents wrote. No time is asserted: the gauge says which path etcd
//! took. (etcd 3.4 turns a watch "from the head" into one from the revision it read just
//! before registering it, so under a stream of writes even that one is, rarely, caught
//! up: the gauge is asserted only where nothing else writes.)

mod common;

use common::{root_or_skip, started, tear_down};
use knetsim::components::etcd::{self, EtcdClient, Members};
use std::collections::BTreeSet;
use std::time::Duration;

/// The order `watch_and_list` uses, step by step with a write between the steps (where
/// the other order lost 100 ms): the write is in the listing, comes on the watch as well
/// (to be skipped), and etcd never counted the watch as one to catch up.
#[test]
fn a_watch_opened_before_its_listing_is_current_at_once() {
    if !root_or_skip() {
        return;
    }
    let (sim, c) = started("ewatch1", 1, 1);
    let members = Members::parse(&c.etcd_endpoints()).unwrap();
    let etcd_ip = c.etcd_nodes()[0].ip().to_string();
    let seen = etcd::with_client(&c.etcd_ns(), &members, |mut client| async move {
        let put = |k: &'static str| {
            move |mut c: etcd_client::Client| async move { c.put(k, "v", None).await }
        };
        let mut stream = client
            .call("watching /t/", |c| {
                etcd::confirmed_watch(
                    c,
                    "/t/".to_string(),
                    etcd_client::WatchOptions::new().with_prefix(),
                )
            })
            .await?;
        client.call("writing /t/between", put("/t/between")).await?;
        let listing = client.list("/t/").await?;
        let listed_at = listing.header().map_or(0, |h| h.revision());
        client.call("writing /t/after", put("/t/after")).await?;
        let slow = slow_watchers(&etcd_ip).await?;
        let (mut old, mut new) = (Vec::new(), Vec::new());
        let collect = async {
            while new.is_empty() {
                let Some(r) = stream.message().await? else {
                    anyhow::bail!("the watch ended");
                };
                for kv in r.events().iter().filter_map(|ev| ev.kv()) {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    if kv.mod_revision() > listed_at {
                        new.push(key);
                    } else {
                        old.push(key);
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        let done = tokio::time::timeout(Duration::from_secs(10), collect).await;
        let listed: Vec<String> = listing
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        Ok((listed, old, new, slow, matches!(done, Ok(Ok(())))))
    });
    tear_down(&sim, &[]);
    let (listed, old, new, slow, done) = seen.unwrap();
    assert!(done, "the watch ended or went quiet");
    assert_eq!(listed, ["/t/between"]);
    assert_eq!(
        old,
        ["/t/between"],
        "the watch saw the write before the listing"
    );
    assert_eq!(new, ["/t/after"]);
    assert_eq!(slow, 0, "etcd had the watch to catch up");
}

/// How many keys the writer beside the listing puts.
const KEYS: usize = 40;

#[test]
fn listing_and_watch_miss_nothing_while_another_agent_writes() {
    if !root_or_skip() {
        return;
    }
    let (sim, c) = started("ewatch", 1, 1);
    let members = Members::parse(&c.etcd_endpoints()).unwrap();
    let writer_members = members.clone();
    let seen = etcd::with_client(&c.etcd_ns(), &members, |mut client| async move {
        // Another agent writes while this one lists and watches, as agents do at bring-up.
        let (first, mut first_done) = tokio::sync::mpsc::channel::<()>(1);
        let writer = tokio::spawn(async move {
            let mut w = EtcdClient::new(writer_members);
            for i in 0..KEYS {
                let k = format!("/t/{i:02}");
                w.call(&format!("writing {k}"), |mut c| {
                    let k = k.clone();
                    async move { c.put(k, "v", None).await }
                })
                .await?;
                let _ = first.try_send(());
            }
            Ok::<(), anyhow::Error>(())
        });
        first_done.recv().await;
        let (listing, mut stream) = client.watch_and_list("/t/").await?;
        let listed_at = listing.header().map_or(0, |h| h.revision());
        let mut keys: BTreeSet<String> = listing
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        let listed = keys.len();
        let mut twice = Vec::new();
        writer.await??;
        let collect = async {
            while keys.len() < KEYS {
                let Some(r) = stream.message().await? else {
                    anyhow::bail!("the watch ended");
                };
                for kv in r.events().iter().filter_map(|ev| ev.kv()) {
                    // What the listing holds may come again: the agents skip it.
                    if kv.mod_revision() > listed_at {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        if !keys.insert(key.clone()) {
                            twice.push(key);
                        }
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        // Bounded, so a watch that lost changes fails instead of hanging.
        let done = tokio::time::timeout(Duration::from_secs(10), collect).await;
        let done = matches!(done, Ok(Ok(())));
        Ok((listed, keys.len(), twice, done))
    });
    tear_down(&sim, &[]);
    let (listed, total, twice, done) = seen.unwrap();
    assert!(listed >= 1, "the listing holds what came before it");
    assert!(done, "the watch ended or went quiet before every key came");
    assert_eq!(total, KEYS, "listing and watch together miss nothing");
    assert!(twice.is_empty(), "changes applied twice: {twice:?}");
}

/// etcd's gauge of watches that started behind its head and wait for its catch-up loop,
/// read from its /metrics page (plain HTTP on the client port).
async fn slow_watchers(ip: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, 2379)).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut page = String::new();
    s.read_to_string(&mut page).await?;
    page.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_slow_watcher_total "))
        .ok_or_else(|| anyhow::anyhow!("etcd's /metrics has no slow_watcher_total"))?
        .trim()
        .parse::<f64>()
        .map(|v| v as u64)
        .map_err(Into::into)
}
