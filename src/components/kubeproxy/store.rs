//! The Service state in the cluster's etcd, as JSON a learner can read with etcdctl.
//!
//! | key | value |
//! | --- | --- |
//! | `/registry/services/specs/<namespace>/<name>` | a [`Service`]: `{"name":"web","namespace":"default","clusterIP":"100.64.0.1","type":"ClusterIP","ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8000}]}` |
//! | `/registry/services/endpoints/<namespace>/<name>` | its [`Endpoints`]: `{"service":"web","namespace":"default","addresses":[{"ip":"11.10.0.2","pod":"c2","node":"C0w2"}]}` |
//! | `/registry/knetsim/vips/<vip>` | a [`StaticVip`]: `{"vip":"100.64.10.1","ips":["11.10.0.2","11.11.0.2"]}` |
//!
//! The first two are where the Kubernetes API server keeps Services and Endpoints; the
//! third is this simulator's own. Try:
//! `etcdctl --endpoints http://10.1.0.1:2379 get --prefix /registry/services/`.
//!
//! Writes validate the whole resulting state first, so a bad change is refused with a
//! clear message and nothing is written.

use super::model::{Endpoints, Service, State, StaticVip};
use crate::components::etcd::{EtcdClient, Members};
use anyhow::{bail, Context, Result};
use etcd_client::{GetOptions, GetResponse};
use std::net::Ipv4Addr;

pub const SERVICES_PREFIX: &str = "/registry/services/specs/";
pub const ENDPOINTS_PREFIX: &str = "/registry/services/endpoints/";
pub const VIPS_PREFIX: &str = "/registry/knetsim/vips/";

pub fn service_key(namespace: &str, name: &str) -> String {
    format!("{SERVICES_PREFIX}{namespace}/{name}")
}

pub fn endpoints_key(namespace: &str, name: &str) -> String {
    format!("{ENDPOINTS_PREFIX}{namespace}/{name}")
}

pub fn vip_key(vip: Ipv4Addr) -> String {
    format!("{VIPS_PREFIX}{vip}")
}

/// A fail-over client of the etcd members at `endpoints` (comma-separated URLs). Nothing
/// is dialled until the first call.
pub fn connect(endpoints: &str) -> Result<EtcdClient> {
    Ok(EtcdClient::new(Members::parse(endpoints)?))
}

/// One object read from a key, or why it could not be understood.
pub enum Parsed {
    Service(Service),
    Endpoints(Endpoints),
    Vip(StaticVip),
    /// A key under our prefixes whose value is not valid JSON for its kind.
    Invalid(String),
    /// A key this module does not own.
    Other,
}

/// Parses one key/value from etcd.
pub fn parse(key: &str, value: &[u8]) -> Parsed {
    fn j<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> std::result::Result<T, String> {
        serde_json::from_slice(v).map_err(|e| format!("{key}: not a valid object ({e})"))
    }
    let r = if key.starts_with(SERVICES_PREFIX) {
        j(key, value).map(Parsed::Service)
    } else if key.starts_with(ENDPOINTS_PREFIX) {
        j(key, value).map(Parsed::Endpoints)
    } else if key.starts_with(VIPS_PREFIX) {
        j(key, value).map(Parsed::Vip)
    } else {
        Ok(Parsed::Other)
    };
    r.unwrap_or_else(Parsed::Invalid)
}

/// Reads every key under `prefix`, at revision `rev` when it is not 0.
pub async fn get_prefix(client: &mut EtcdClient, prefix: &str, rev: i64) -> Result<GetResponse> {
    let mut opts = GetOptions::new().with_prefix();
    if rev > 0 {
        opts = opts.with_revision(rev);
    }
    client
        .call(&format!("listing {prefix}"), |mut c| {
            let opts = opts.clone();
            async move { c.get(prefix, Some(opts)).await }
        })
        .await
        .with_context(|| format!("listing {prefix} in etcd"))
}

async fn put(client: &mut EtcdClient, key: String, value: String, what: &str) -> Result<()> {
    client
        .call(&format!("writing {key}"), |mut c| {
            let (k, v) = (key.clone(), value.clone());
            async move { c.put(k, v, None).await }
        })
        .await
        .with_context(|| format!("writing {what} to etcd"))?;
    Ok(())
}

/// Deletes `key`; true when it existed.
async fn delete(client: &mut EtcdClient, key: String, what: &str) -> Result<bool> {
    let r = client
        .call(&format!("deleting {key}"), |mut c| {
            let k = key.clone();
            async move { c.delete(k, None).await }
        })
        .await
        .with_context(|| format!("deleting {what} from etcd"))?;
    Ok(r.deleted() > 0)
}

/// Everything under the three prefixes, with the etcd revision it was read at. Keys whose
/// value cannot be parsed are returned as messages, not fatal.
pub async fn list(client: &mut EtcdClient) -> Result<(State, i64, Vec<String>)> {
    let mut st = State::default();
    let mut bad = Vec::new();
    let mut rev = 0;
    for prefix in [SERVICES_PREFIX, ENDPOINTS_PREFIX, VIPS_PREFIX] {
        let resp = get_prefix(client, prefix, 0).await?;
        if let Some(h) = resp.header() {
            rev = rev.max(h.revision());
        }
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match parse(&key, kv.value()) {
                Parsed::Service(s) => st.services.push(s),
                Parsed::Endpoints(e) => st.endpoints.push(e),
                Parsed::Vip(v) => st.vips.push(v),
                Parsed::Invalid(m) => bad.push(m),
                Parsed::Other => {}
            }
        }
    }
    Ok((st, rev, bad))
}

/// Lists only valid state (what a writer needs to check a change against).
async fn current(client: &mut EtcdClient) -> Result<State> {
    Ok(list(client).await?.0)
}

/// Stores a Service after checking it against everything else (ClusterIP and NodePorts
/// free, names valid). Replaces a Service of the same name.
pub async fn put_service(client: &mut EtcdClient, svc: &Service) -> Result<()> {
    let mut st = current(client).await?;
    st.services.retain(|s| s.key() != svc.key());
    st.services.push(svc.clone());
    st.validate()?;
    let v = serde_json::to_string(svc)?;
    let what = format!("Service {}", svc.key());
    put(client, service_key(&svc.namespace, &svc.name), v, &what).await
}

/// Deletes a Service and its endpoints. Returns false when it did not exist.
pub async fn delete_service(client: &mut EtcdClient, namespace: &str, name: &str) -> Result<bool> {
    let existed = delete(
        client,
        service_key(namespace, name),
        &format!("Service {namespace}/{name}"),
    )
    .await?;
    delete(
        client,
        endpoints_key(namespace, name),
        &format!("endpoints of {namespace}/{name}"),
    )
    .await?;
    Ok(existed)
}

/// Stores the endpoints of a Service (the endpoints controller's job).
pub async fn put_endpoints(client: &mut EtcdClient, eps: &Endpoints) -> Result<()> {
    let v = serde_json::to_string(eps)?;
    let what = format!("endpoints of {}", eps.key());
    put(
        client,
        endpoints_key(&eps.namespace, &eps.service),
        v,
        &what,
    )
    .await
}

/// Stores a static VIP after checking it is in range and not taken.
pub async fn put_vip(client: &mut EtcdClient, vip: &StaticVip) -> Result<()> {
    let mut st = current(client).await?;
    if st.vips.iter().any(|v| v.vip == vip.vip) {
        bail!("VIP {} is already taken by VIP {}: delete it first (kp_vip_del) or pick a free address", vip.vip, vip.vip);
    }
    st.vips.push(vip.clone());
    st.validate()?;
    let v = serde_json::to_string(vip)?;
    put(client, vip_key(vip.vip), v, &format!("VIP {}", vip.vip)).await
}

/// Deletes a static VIP. Returns false when it did not exist.
pub async fn delete_vip(client: &mut EtcdClient, vip: Ipv4Addr) -> Result<bool> {
    delete(client, vip_key(vip), &format!("VIP {vip}")).await
}

/// A free ClusterIP from 100.64.0.0/16 (never 100.64.10.1, never one in use).
pub async fn allocate_cluster_ip(client: &mut EtcdClient) -> Result<Ipv4Addr> {
    current(client).await?.free_cluster_ip()
}

/// A free NodePort (30000-32767) for `proto`, not among those in use nor in `also_taken`
/// (ports already picked for other ports of the Service being built).
pub async fn allocate_node_port(
    client: &mut EtcdClient,
    proto: super::model::Protocol,
    also_taken: &[u16],
) -> Result<u16> {
    current(client).await?.free_node_port(proto, also_taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_without_endpoints_is_a_clear_error() {
        let e = format!("{:#}", connect(" , ").err().unwrap());
        assert!(
            e.contains("no etcd endpoint given: pass --etcd-endpoints"),
            "{e}"
        );
    }

    #[test]
    fn keys_and_parse() {
        assert_eq!(
            service_key("default", "web"),
            "/registry/services/specs/default/web"
        );
        assert_eq!(
            endpoints_key("default", "web"),
            "/registry/services/endpoints/default/web"
        );
        assert_eq!(
            vip_key("100.64.10.1".parse().unwrap()),
            "/registry/knetsim/vips/100.64.10.1"
        );
        let v = br#"{"vip":"100.64.10.1","ips":["11.10.0.2"]}"#;
        assert!(matches!(
            parse("/registry/knetsim/vips/100.64.10.1", v),
            Parsed::Vip(_)
        ));
        match parse("/registry/services/specs/default/web", b"{nope") {
            Parsed::Invalid(m) => assert!(
                m.contains("/registry/services/specs/default/web: not a valid object"),
                "{m}"
            ),
            _ => panic!("expected Invalid"),
        }
        let bad_port = br#"{"name":"web","clusterIP":"100.64.0.1","ports":[{"protocol":"TCP","port":70000,"targetPort":80}]}"#;
        assert!(matches!(
            parse("/registry/services/specs/default/web", bad_port),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse("/coreos.com/network/config", b"{}"),
            Parsed::Other
        ));
    }
}
