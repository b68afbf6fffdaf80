//! Named network namespaces (the ones `ip netns list` shows), netlink inside them,
//! processes started inside them, and the teardown record that lets a crashed run be
//! cleaned up exactly.
//!
//! Namespaces are created the way `ip netns add` does it: a file under `/run/netns`
//! bind-mounted over a fresh network namespace, with `/run/netns` a shared mount so the
//! bind is visible from every mount namespace.

pub mod netlink;
pub mod process;
pub mod pty;
pub mod record;
pub mod route_watch;
pub mod state;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

pub const NETNS_DIR: &str = "/run/netns";

/// A namespace name is a plain word (what `ip netns` accepts, and never a path): it is
/// joined onto /run/netns, so `/` or `..` in a name read from a record could point at any
/// file, e.g. `../../proc/1/ns/net`.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Path of a named namespace's bind mount, as `ip netns` uses it.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    valid_name(name) && path(name).exists()
}

/// Names of every namespace under /run/netns (what `ip netns list` shows).
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Opens a namespace handle (for `setns` or for moving links into it).
pub fn open(name: &str) -> Result<File> {
    File::open(path(name)).with_context(|| {
        format!(
            "network namespace '{name}' does not exist (no {})",
            path(name).display()
        )
    })
}

/// Makes /run/netns a shared mount point, as iproute2 does, so that bind mounts made
/// under it propagate to every mount namespace (ip netns exec, other shells).
/// Done once per process: the flag change walks every mount under /run/netns, so
/// repeating it for each namespace made creating N namespaces cost N^2.
fn prepare_netns_dir() -> Result<()> {
    static PREPARED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    if *done && Path::new(NETNS_DIR).is_dir() {
        return Ok(());
    }
    share_netns_dir()?;
    *done = true;
    Ok(())
}

fn share_netns_dir() -> Result<()> {
    std::fs::create_dir_all(NETNS_DIR).context("creating /run/netns")?;
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, Some("none"), flags, None::<&str>).is_ok() {
        return Ok(());
    }
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind-mounting /run/netns onto itself")?;
    mount(None::<&str>, NETNS_DIR, Some("none"), flags, None::<&str>)
        .context("making /run/netns a shared mount")?;
    Ok(())
}

/// Creates a named network namespace with `lo` down, exactly like `ip netns add NAME`.
pub fn create(name: &str) -> Result<()> {
    if !valid_name(name) {
        bail!("'{name}' is not a valid namespace name: use letters, digits, '-' and '_'");
    }
    prepare_netns_dir()?;
    let target = path(name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("network namespace '{name}' already exists (remove it with `ip netns del {name}` or `knetsim cleanup`)")
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", target.display())),
    }
    // unshare() changes only the calling thread, so do it on a thread of its own.
    let t = target.clone();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &t,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind-mounting the new namespace")?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?;
    if let Err(e) = res {
        let _ = std::fs::remove_file(&target);
        return Err(e.context(format!("creating network namespace '{name}'")));
    }
    Ok(())
}

/// Deletes a named namespace like `ip netns del`; succeeds when it is already gone.
/// A symlink in its place is removed as a link, never followed.
pub fn delete(name: &str) -> Result<()> {
    if !valid_name(name) {
        bail!("'{name}' is not a namespace name; not removing anything");
    }
    netlink::forget(name);
    let target = path(name);
    if std::fs::symlink_metadata(&target).is_err() {
        return Ok(());
    }
    let _ = umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", target.display())),
    }
}

/// The inode that identifies a namespace (same as `/proc/PID/ns/net` of its members).
/// Only for a valid name whose /run/netns entry really is a namespace (a mounted nsfs
/// file, not a symlink or a plain file), and never the host's own network namespace.
pub fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if !valid_name(name) {
        return None;
    }
    let m = std::fs::symlink_metadata(path(name)).ok()?;
    // Our own namespace is the host's; init's, where readable (some sandboxes hide it).
    let own = std::fs::metadata("/proc/self/ns/net").ok()?;
    let init = std::fs::metadata("/proc/1/ns/net").map(|h| h.ino()).ok();
    let is_ns = m.file_type().is_file() && m.dev() == own.dev();
    (is_ns && m.ino() != own.ino() && Some(m.ino()) != init).then_some(m.ino())
}

/// Runs `f` on a fresh OS thread that has entered namespace `name`, and returns its result.
/// Sockets created inside `f` stay bound to that namespace.
pub fn run_in<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    let file = open(name)?;
    let name = name.to_string();
    std::thread::spawn(move || -> Result<R> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace '{name}'"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace worker thread panicked"))?
}
