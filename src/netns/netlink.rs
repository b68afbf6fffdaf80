//! Netlink inside a named namespace: one rtnetlink session per namespace within a process,
//! opened once on a thread that has entered the namespace (so every request lands there
//! and never in the host's root namespace) and reused by every later call; requests from
//! many callers share its socket concurrently. An agent running inside its node's namespace
//! opens its own session on its runtime instead ([`Netlink::connect`], [`overlay`]).

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

pub mod overlay;

/// A netlink session inside one namespace, with the few operations the simulator needs.
#[derive(Clone)]
pub struct Netlink {
    pub handle: Handle,
    /// A second socket of an agent's session for many requests in one system call
    /// ([`overlay::Entry`]); None in the simulator's sessions, which send them one by one.
    batch: Option<overlay::Batch>,
}

type Job = Box<dyn FnOnce(Handle) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// An open session: its namespace's inode (a namespace deleted and made again under the
/// same name is another namespace) and the queue its thread takes requests from.
struct Session {
    inode: u64,
    jobs: UnboundedSender<Job>,
}

fn sessions() -> &'static Mutex<HashMap<String, Session>> {
    static SESSIONS: OnceLock<Mutex<HashMap<String, Session>>> = OnceLock::new();
    SESSIONS.get_or_init(Mutex::default)
}

/// The key of this process's own namespace among the sessions.
const HERE: &str = "";

/// The session of namespace `ns` (`HERE`: the process's own), opened on first use.
fn session(ns: &str) -> Result<UnboundedSender<Job>> {
    let inode = if ns == HERE {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/net")
            .context("reading this process's network namespace")?
            .ino()
    } else {
        super::inode(ns).ok_or_else(|| {
            anyhow!(
                "network namespace '{ns}' does not exist (no {})",
                super::path(ns).display()
            )
        })?
    };
    let mut all = sessions().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get(ns) {
        if s.inode == inode && !s.jobs.is_closed() {
            return Ok(s.jobs.clone());
        }
    }
    let jobs = open(ns)?;
    all.insert(
        ns.to_string(),
        Session {
            inode,
            jobs: jobs.clone(),
        },
    );
    Ok(jobs)
}

/// Starts the session thread of `ns`: it enters the namespace, opens the socket, then
/// runs each request it is sent until its queue is dropped ([`forget`]).
fn open(ns: &str) -> Result<UnboundedSender<Job>> {
    let file = match ns {
        HERE => None,
        ns => Some(super::open(ns)?),
    };
    let (tx, mut rx) = unbounded_channel::<Job>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let name = ns.to_string();
    std::thread::Builder::new()
        .name(format!("netlink {ns}"))
        .spawn(move || {
            let opened = (|| -> Result<(tokio::runtime::Runtime, _, Handle)> {
                if let Some(file) = &file {
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering network namespace '{name}'"))?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting a netlink runtime")?;
                let (conn, handle, _) = rt
                    .block_on(async { rtnetlink::new_connection() })
                    .with_context(|| format!("opening netlink in namespace '{name}'"))?;
                Ok((rt, conn, handle))
            })();
            let (rt, conn, handle) = match opened {
                Ok(o) => o,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                tokio::spawn(conn);
                while let Some(job) = rx.recv().await {
                    tokio::task::spawn_local(job(handle.clone()));
                }
            });
        })
        .context("starting a netlink thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the netlink thread of namespace '{ns}' ended at once"))??;
    Ok(tx)
}

/// Closes the session of namespace `ns` (it is being deleted): its thread ends and its
/// socket no longer holds the namespace.
pub fn forget(ns: &str) {
    sessions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(ns);
}

/// [`with`] in the namespace `ns` names, or this process's own for None (an agent
/// running inside its node's namespace).
pub fn with_in<F, Fut, R>(ns: Option<&str>, f: F) -> Result<R>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>> + 'static,
    R: Send + 'static,
{
    with(ns.unwrap_or(HERE), f)
}

/// Runs `f` with the netlink session of namespace `ns` and returns its result.
pub fn with<F, Fut, R>(ns: &str, f: F) -> Result<R>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>> + 'static,
    R: Send + 'static,
{
    let jobs = session(ns)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let job: Job = Box::new(move |handle| {
        Box::pin(async move {
            let _ = tx.send(
                f(Netlink {
                    handle,
                    batch: None,
                })
                .await,
            );
        })
    });
    jobs.send(job)
        .map_err(|_| anyhow!("the netlink session of namespace '{ns}' is closed"))?;
    rx.recv()
        .map_err(|_| anyhow!("the netlink session of namespace '{ns}' closed during a request"))?
}

impl Netlink {
    /// Link `name` as the kernel describes it.
    async fn link_named(&self, name: &str) -> Result<netlink_packet_route::link::LinkMessage> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(anyhow!("no link named '{name}'")),
            Err(e) => Err(anyhow!("looking up link '{name}': {e}")),
        }
    }

    pub async fn index(&self, name: &str) -> Result<u32> {
        Ok(self.link_named(name).await?.header.index)
    }

    /// Whether link `name` is operationally up: the kernel's link watch has seen its
    /// carrier, given it its queueing discipline (until then it drops what is sent), and
    /// told a bridge it is a port of to forward for it.
    pub async fn is_oper_up(&self, name: &str) -> Result<bool> {
        use netlink_packet_route::link::{LinkAttribute, State};
        Ok(self
            .link_named(name)
            .await?
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::OperState(State::Up))))
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

    /// Creates a veth pair whose `peer` end is born in namespace `peer_ns` (as
    /// `ip link add NAME type veth peer name PEER netns NS`): moving a link afterwards
    /// waits for an RCU grace period under the kernel's RTNL lock, which serialized the
    /// wiring of hosts side by side.
    pub async fn add_veth_into(&self, name: &str, peer: &str, peer_ns: &str) -> Result<()> {
        use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo};
        let file = super::open(peer_ns)?;
        let mut msg = LinkVeth::new(name, peer).build();
        for a in msg.attributes.iter_mut() {
            if let LinkAttribute::LinkInfo(infos) = a {
                for info in infos.iter_mut() {
                    if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = info {
                        p.attributes.push(LinkAttribute::NetNsFd(file.as_raw_fd()));
                    }
                }
            }
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating veth pair {name}/{peer} (peer in '{peer_ns}')"))
    }

    pub async fn move_to_ns(&self, name: &str, ns: &str) -> Result<()> {
        let idx = self.index(name).await?;
        let file = super::open(ns)?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .setns_by_fd(file.as_raw_fd())
                    .build(),
            )
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
            if r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == idx))
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Gateway(_)))
            {
                n += 1;
            }
        }
        Ok(n)
    }
}
