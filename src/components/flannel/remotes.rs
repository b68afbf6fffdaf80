//! The agent's policy for the other nodes' subnets: what a list of leases or a watch
//! response asks for, and bringing the kernel's entries there (removals first, then
//! additions, many requests at a time on the agent's netlink session).

use super::backend::{Dataplane, Remote};
use super::log;
use super::subnet::{Ipv4Net, Lease, LeaseAttrs};
use crate::netns::netlink::Netlink;
use anyhow::anyhow;
use std::collections::HashMap;

/// How many remote subnets one batch of work removes at once: their netlink requests then
/// share the session's socket instead of each waiting for the one before.
const IN_FLIGHT: usize = 64;

/// Why a remote's entries are removed (what is logged before and on failure).
#[derive(Clone, Copy)]
enum Removal {
    /// Its lease changed: the new entries follow.
    Replaced,
    /// Its lease is gone.
    Gone,
    /// Left on the device by a lease that vanished while the agent was not running.
    Stale,
}

/// What a lease asks this node to program, or None (logged) when it cannot.
fn wanted(dp: &Dataplane, l: &Lease) -> Option<Remote> {
    match dp.remote(l) {
        Ok(r) => Some(r),
        Err(e) => {
            log!(
                "ignoring subnet {} (PublicIP {}): {e:#}",
                l.subnet,
                l.attrs.public_ip
            );
            None
        }
    }
}

/// The removals and additions that bring `known` to `want` and remove `stale` (each
/// logged as flanneld logs it). A subnet whose lease is gone leaves `known` here; one added
/// enters it when its entries are in place.
fn plan(
    known: &mut HashMap<Ipv4Net, Remote>,
    stale: Vec<Remote>,
    want: Vec<(Ipv4Net, Option<Remote>)>,
) -> (Vec<(Remote, Removal)>, Vec<Remote>) {
    let mut removals: Vec<(Remote, Removal)> = Vec::new();
    for r in stale {
        log!(
            "removing stale subnet: {} {} (its lease is gone from etcd)",
            r.subnet(),
            r.describe()
        );
        removals.push((r, Removal::Stale));
    }
    let mut additions = Vec::new();
    for (sn, new) in want {
        match (known.get(&sn).copied(), new) {
            (Some(old), Some(r)) if old == r => {}
            (Some(old), Some(r)) => {
                log!(
                    "lease {sn} changed (was {}), replacing its entries",
                    old.describe()
                );
                removals.push((old, Removal::Replaced));
                additions.push(r);
            }
            (None, Some(r)) => additions.push(r),
            (Some(old), None) => {
                known.remove(&sn);
                log!("removing subnet: {sn} {}", old.describe());
                removals.push((old, Removal::Gone));
            }
            (None, None) => {}
        }
    }
    (removals, additions)
}

/// Brings the entries of each subnet in `want` to what it says (None: removed) and removes
/// `stale` ones. Every removal goes before every addition, so a node that came back with a
/// new subnet keeps the FDB entry of its VtepMAC. Removals run concurrently; additions go to
/// the kernel together ([`Dataplane::add_all`]), each subnet's steps in order.
pub async fn apply(
    nl: &Netlink,
    dp: &Dataplane,
    known: &mut HashMap<Ipv4Net, Remote>,
    stale: Vec<Remote>,
    want: Vec<(Ipv4Net, Option<Remote>)>,
) {
    use futures::StreamExt;
    let (removals, additions) = plan(known, stale, want);
    futures::stream::iter(removals)
        .for_each_concurrent(IN_FLIGHT, |(r, why)| async move {
            if let Err(e) = dp.del(nl, &r).await {
                match why {
                    Removal::Replaced => log!("error: {e:#}"),
                    Removal::Gone | Removal::Stale => {
                        log!("error removing {}: {e:#}", r.subnet())
                    }
                }
            }
        })
        .await;
    for r in &additions {
        log!("adding subnet: {} {}", r.subnet(), r.describe());
    }
    let results = dp.add_all(nl, &additions).await;
    let mut added = Vec::with_capacity(additions.len());
    for (r, res) in additions.into_iter().zip(results) {
        match res {
            Ok(()) => added.push(r),
            Err(e) => log!("error programming {}: {e:#}", r.subnet()),
        }
    }
    for r in added {
        known.insert(r.subnet(), r);
    }
}

/// Entries for subnets without a lease, left while this agent was not running.
pub async fn find_stale(
    nl: &Netlink,
    dp: &Dataplane,
    own: &Ipv4Net,
    leases: &[Lease],
) -> Vec<Remote> {
    let mut keep: Vec<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
    keep.push(*own);
    dp.stale(nl, &keep).await.unwrap_or_else(|e| {
        log!("error looking for stale entries: {e:#}");
        Vec::new()
    })
}

/// What a full list of leases asks for: every other node's subnet, and none for the known
/// subnets that no longer have a lease.
pub fn wanted_by_list(
    dp: &Dataplane,
    own: &Ipv4Net,
    known: &HashMap<Ipv4Net, Remote>,
    leases: &[Lease],
) -> Vec<(Ipv4Net, Option<Remote>)> {
    let listed: std::collections::HashSet<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
    let mut want: Vec<(Ipv4Net, Option<Remote>)> = known
        .keys()
        .filter(|k| !listed.contains(k))
        .map(|k| (*k, None))
        .collect();
    for l in leases.iter().filter(|l| l.subnet != *own) {
        if let Some(r) = wanted(dp, l) {
            want.push((l.subnet, Some(r)));
        }
    }
    want
}

/// One event of a watch response on a subnet lease.
pub enum Change<'a> {
    Put(Ipv4Net, String, &'a [u8]),
    Delete(Ipv4Net, String),
}

/// What the events of one watch response ask for, the last event of a subnet winning, and
/// the error that ends the agent when one of them deletes its own lease (the events before
/// it still count).
pub fn wanted_by_events(
    dp: &Dataplane,
    own: &Ipv4Net,
    changes: &[Change],
) -> (Vec<(Ipv4Net, Option<Remote>)>, Option<anyhow::Error>) {
    fn set(want: &mut Vec<(Ipv4Net, Option<Remote>)>, sn: Ipv4Net, r: Option<Remote>) {
        match want.iter_mut().find(|w| w.0 == sn) {
            Some(w) => w.1 = r,
            None => want.push((sn, r)),
        }
    }
    let mut want: Vec<(Ipv4Net, Option<Remote>)> = Vec::new();
    for c in changes {
        match c {
            Change::Put(sn, _, _) if sn == own => {}
            Change::Put(sn, key, value) => match LeaseAttrs::from_json(value) {
                Ok(attrs) => {
                    if let Some(r) = wanted(dp, &Lease { subnet: *sn, attrs }) {
                        set(&mut want, *sn, Some(r));
                    }
                }
                Err(e) => log!("ignoring bad subnet lease {key}: {e:#}"),
            },
            Change::Delete(sn, key) if sn == own => {
                return (want, Some(anyhow!(
                    "our lease {sn} has been revoked (etcd key {key} was deleted or expired); shutting down as flanneld does. Start flanneld again to acquire a new lease"
                )));
            }
            Change::Delete(sn, _) => set(&mut want, *sn, None),
        }
    }
    (want, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::flannel::vxlan::{self, Device};
    use std::net::Ipv4Addr;

    fn sn(b: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(11, b, 0, 0), 20)
    }

    fn dp() -> Dataplane {
        Dataplane::Vxlan(Device {
            name: "flannel.100".into(),
            index: 7,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1450,
            created: true,
        })
    }

    fn remote(b: u8, host: u8) -> Remote {
        Remote::Vxlan(vxlan::Remote {
            subnet: sn(b),
            public_ip: Ipv4Addr::new(10, 0, 0, host),
            mac: [0xaa, 0, 0, 0, 0, host],
        })
    }

    fn lease_json(host: u8) -> Vec<u8> {
        format!(r#"{{"PublicIP":"10.0.0.{host}","BackendType":"vxlan","BackendData":{{"VtepMAC":"aa:00:00:00:00:{host:02x}","VNI":100}}}}"#).into_bytes()
    }

    #[test]
    fn the_last_event_of_a_subnet_wins_and_bad_ones_change_nothing() {
        let (a, b, c) = (lease_json(4), lease_json(5), b"{not json".to_vec());
        let changes = [
            Change::Put(sn(12), "k12".into(), &a),
            Change::Put(sn(13), "k13".into(), &a),
            Change::Delete(sn(12), "k12".into()),
            Change::Put(sn(13), "k13".into(), &b),
            Change::Put(sn(13), "k13".into(), &c),
            Change::Put(sn(10), "own".into(), &a),
        ];
        let (want, revoked) = wanted_by_events(&dp(), &sn(10), &changes);
        assert!(revoked.is_none());
        assert_eq!(want, vec![(sn(12), None), (sn(13), Some(remote(13, 5)))]);
    }

    #[test]
    fn deleting_the_own_lease_ends_the_agent_after_the_events_before_it() {
        let a = lease_json(4);
        let changes = [
            Change::Put(sn(12), "k12".into(), &a),
            Change::Delete(sn(10), "/coreos.com/network/subnets/11.10.0.0-20".into()),
            Change::Put(sn(13), "k13".into(), &a),
        ];
        let (want, revoked) = wanted_by_events(&dp(), &sn(10), &changes);
        assert_eq!(want, vec![(sn(12), Some(remote(12, 4)))]);
        let e = format!("{:#}", revoked.expect("revoked"));
        assert!(e.contains("our lease 11.10.0.0/20 has been revoked"), "{e}");
    }

    #[test]
    fn a_plan_removes_stale_gone_and_changed_entries_and_adds_new_ones() {
        let mut known = HashMap::from([
            (sn(12), remote(12, 4)),
            (sn(13), remote(13, 5)),
            (sn(14), remote(14, 6)),
        ]);
        let want = vec![
            (sn(12), Some(remote(12, 4))), // unchanged
            (sn(13), None),                // gone
            (sn(14), Some(remote(14, 7))), // changed
            (sn(15), Some(remote(15, 8))), // new
            (sn(16), None),                // never known
        ];
        let (removals, additions) = plan(&mut known, vec![remote(11, 3)], want);
        let removed: Vec<(Remote, &str)> = removals
            .iter()
            .map(|(r, why)| {
                let why = match why {
                    Removal::Replaced => "replaced",
                    Removal::Gone => "gone",
                    Removal::Stale => "stale",
                };
                (*r, why)
            })
            .collect();
        assert_eq!(
            removed,
            vec![
                (remote(11, 3), "stale"),
                (remote(13, 5), "gone"),
                (remote(14, 6), "replaced"),
            ]
        );
        assert_eq!(additions, vec![remote(14, 7), remote(15, 8)]);
        // the gone subnet leaves at once; the changed one keeps its old entry until the
        // new one is in place
        assert_eq!(known.len(), 2);
        assert_eq!(known.get(&sn(14)), Some(&remote(14, 6)));
    }
}
