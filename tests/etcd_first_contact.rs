//! An agent's first contact with etcd (`EtcdClient::call_until`, used by flanneld and
//! kube-proxy when they start beside the election).
//!
//! Until it has a leader, etcd has its client port open but serves nothing: the kernel
//! completes the TCP handshake, and the request waits in the socket until etcd serves,
//! then is answered at once. Here a member that does the same is a proxy in front of the
//! cluster's real etcd that accepts nothing for a while, then forwards everything; the
//! member before it in the list refuses. The agent must move on from the refusing member
//! and wait on the connection the proxy holds (not give it up and dial again, which left
//! agents up to 100 ms late after the election). No time is asserted: the proxy counts
//! the connections it was given.

mod common;

use common::{root_or_skip, started, tear_down};
use knetsim::components::etcd::{self, EtcdClient, Members};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the proxy lets connections wait before it serves them.
const HOLD: Duration = Duration::from_millis(400);

/// Accepts nothing for [`HOLD`], then accepts every connection and joins it to `etcd`,
/// counting them, until `stop`.
fn holding_proxy(
    listener: TcpListener,
    etcd: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    std::thread::sleep(HOLD);
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        client.set_nonblocking(false).unwrap();
        let Ok(upstream) = TcpStream::connect(&etcd) else {
            continue;
        };
        for (mut from, mut to) in [
            (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
            (upstream, client),
        ] {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Both);
            });
        }
    }
}

#[test]
fn first_contact_waits_on_the_connection_a_starting_member_holds() {
    if !root_or_skip() {
        return;
    }
    let (sim, c) = started("efirst1", 1, 1);
    let etcd_addr = format!("{}:2379", c.etcd_nodes()[0].ip());
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted2, stop2) = (accepted.clone(), stop.clone());
    // In the etcd host's namespace: the proxy's thread is started from there, so it
    // listens and dials there too.
    let outcome = knetsim::netns::run_in(&c.etcd_ns(), move || {
        let refusing = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let holding = listener.local_addr()?.port();
        let proxy =
            std::thread::spawn(move || holding_proxy(listener, etcd_addr, accepted2, stop2));
        // The port `refusing` was bound and closed again: nothing listens there.
        let members = Members::parse(&format!(
            "http://127.0.0.1:{refusing},http://127.0.0.1:{holding}"
        ))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut retries = Vec::new();
        let reached = rt.block_on(async {
            let mut client = EtcdClient::new(members);
            let watch = client
                .call_until(
                    "watching /t/",
                    Duration::from_secs(20),
                    |c| {
                        etcd::confirmed_watch(
                            c,
                            "/t/".to_string(),
                            etcd_client::WatchOptions::new(),
                        )
                    },
                    |r| retries.push(format!("{:#}", r.error)),
                )
                .await;
            (watch.is_ok(), client.current().describe())
        });
        stop.store(true, Ordering::SeqCst);
        let _ = proxy.join();
        Ok((reached, retries, holding, refusing))
    });
    tear_down(&sim, &[]);
    let ((reached, answered_by), retries, holding, refusing) = outcome.unwrap();
    assert!(reached, "the first contact failed; retries: {retries:?}");
    assert_eq!(answered_by, format!("127.0.0.1:{holding}"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the member that held the connection was dialled again instead of waited on"
    );
    assert!(
        !retries.is_empty() && retries.iter().all(|r| r.contains(&format!(":{refusing}"))),
        "the member that refused was not asked first (or the other one failed): {retries:?}"
    );
}
