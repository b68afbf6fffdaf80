//! Netlink inside a named namespace: one rtnetlink connection per call site, opened on a
//! thread that has entered the namespace, so every request lands there and never in the
//! host's root namespace.

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

/// A netlink session inside one namespace, with the few operations the simulator needs.
pub struct Netlink {
    pub handle: Handle,
}

/// Opens a netlink session inside namespace `ns` and runs `f` with it.
pub fn with<F, Fut, R>(ns: &str, f: F) -> Result<R>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
    R: Send + 'static,
{
    let ns_name = ns.to_string();
    super::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a netlink runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .with_context(|| format!("opening netlink in namespace '{ns_name}'"))?;
            tokio::spawn(conn);
            f(Netlink { handle }).await
        })
    })
}

impl Netlink {
    pub async fn index(&self, name: &str) -> Result<u32> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(anyhow!("no link named '{name}'")),
            Err(e) => Err(anyhow!("looking up link '{name}': {e}")),
        }
    }

    pub async fn set_up(&self, name: &str) -> Result<()> {
        let idx = self.index(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .with_context(|| format!("setting '{name}' up"))
    }

    pub async fn add_bridge(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkBridge::new(name).up().build())
            .execute()
            .await
            .with_context(|| format!("creating bridge '{name}'"))
    }

    /// Creates a veth pair here; `peer` is then moved into namespace `peer_ns` and, when
    /// given, attached to bridge `peer_master` there and set up (by the caller).
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .with_context(|| format!("creating veth pair {name}/{peer}"))
    }

    pub async fn move_to_ns(&self, name: &str, ns: &str) -> Result<()> {
        let idx = self.index(name).await?;
        let file = super::open(ns)?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).setns_by_fd(file.as_raw_fd()).build())
            .execute()
            .await
            .with_context(|| format!("moving '{name}' into namespace '{ns}'"))
    }

    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        let idx = self.index(name).await?;
        let br = self.index(bridge).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).controller(br).up().build())
            .execute()
            .await
            .with_context(|| format!("attaching '{name}' to bridge '{bridge}'"))
    }

    pub async fn add_addr(&self, name: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        let idx = self.index(name).await?;
        self.handle
            .address()
            .add(idx, ip.into(), prefix)
            .execute()
            .await
            .with_context(|| format!("adding {ip}/{prefix} to '{name}'"))
    }

    /// `ip route replace DST/LEN dev NAME` (scope link).
    pub async fn route_dev(&self, dst: Ipv4Addr, len: u8, dev: &str) -> Result<()> {
        let idx = self.index(dev).await?;
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .output_interface(idx)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding route {dst}/{len} dev {dev}"))
    }

    /// Names of every link in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>> {
        use netlink_packet_route::link::LinkAttribute;
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links.try_next().await? {
            for a in l.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Count of IPv4 routes whose gateway/onlink device is `dev`.
    pub async fn routes_via(&self, dev: &str) -> Result<usize> {
        use netlink_packet_route::route::RouteAttribute;
        let idx = match self.index(dev).await {
            Ok(i) => i,
            Err(_) => return Ok(0),
        };
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(msg).execute();
        let mut n = 0;
        while let Some(r) = routes.try_next().await? {
            if r.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if *i == idx))
                && r.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_)))
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
