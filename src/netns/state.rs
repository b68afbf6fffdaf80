//! Where knetsim keeps its state, and the checks that make keeping it there safe for a
//! root tool on a machine other people use.
//!
//! Two bases: [`run_base`] (run directories: logs, configs, the teardown record) and
//! [`SHM_BASE`] (etcd's throwaway data, in memory). Each is a directory of root's with
//! mode 0700 that knetsim creates, and checks before every use, without following a
//! symlink. No other user can create anything inside such a directory, so once a base and
//! an instance directory in it have passed the checks, the paths below them are used
//! plainly. A check that fails is an error naming the path, why it is refused and how to
//! fix it: knetsim never uses, follows or removes what it refused.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Run directories: `/run` is where a root tool keeps runtime state on Linux, in memory.
pub const RUN_BASE: &str = "/run/knetsim";
/// Run directories on a machine whose `/run` is on disk (some VMs and containers): a run
/// makes and removes a handful of files per worker, and on a disk file system without a
/// journal (ext4 here) every new inode is searched past each one deleted in the last
/// minutes, which made those files a third of the simulator's CPU at 200 workers.
pub const RUN_BASE_SHM: &str = "/dev/shm/knetsim-run";
/// etcd's data: /run is a small tmpfs on most machines, and 64 MB of WAL per member does
/// not belong there.
pub const SHM_BASE: &str = "/dev/shm/knetsim";

/// Where run directories live on this machine: [`RUN_BASE`] when `/run` is a tmpfs (every
/// systemd machine), else [`RUN_BASE_SHM`] when `/dev/shm` is a tmpfs of at least 1 GiB,
/// else [`RUN_BASE`] on disk. It depends only on how the two are mounted (not on free
/// space), so every knetsim process on the machine (the simulator, `exec`, `cleanup`)
/// finds the same directories.
pub fn run_base() -> &'static Path {
    static BASE: std::sync::OnceLock<&'static Path> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let tmpfs = |path: &str| {
            nix::sys::statfs::statfs(path)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        };
        let roomy_shm = || {
            nix::sys::statvfs::statvfs("/dev/shm")
                .is_ok_and(|s| s.blocks() * s.fragment_size() >= 1 << 30)
        };
        if !tmpfs("/run") && tmpfs("/dev/shm") && roomy_shm() {
            Path::new(RUN_BASE_SHM)
        } else {
            Path::new(RUN_BASE)
        }
    })
}

/// Where etcd's data goes: [`SHM_BASE`] when the run directory is not in `/dev/shm` already
/// and `/dev/shm` has 1 GiB free; None for the run directory (beside the member's log).
/// The 1 GiB was room for the WAL's two 64 MB segments per member, preallocated; members
/// now preallocate them sparse (see `netns::process::sparse`), except on an architecture
/// that filter is not written for, so it is a generous margin that keeps the same
/// machines choosing the same place.
pub fn etcd_data_base() -> Option<&'static Path> {
    if run_base() == Path::new(RUN_BASE_SHM) {
        return None;
    }
    let roomy = nix::sys::statvfs::statvfs("/dev/shm")
        .is_ok_and(|s| s.blocks_available() * s.fragment_size() > 1 << 30);
    roomy.then_some(Path::new(SHM_BASE))
}

/// Every base knetsim may have made, for `cleanup --all` and for the paths a record may name.
pub fn all_bases() -> [&'static Path; 3] {
    [
        Path::new(RUN_BASE),
        Path::new(RUN_BASE_SHM),
        Path::new(SHM_BASE),
    ]
}

/// Instance names become directory names and namespace-name prefixes (a namespace name
/// must stay a short plain word), so they are short plain words themselves.
pub const INSTANCE_MAX_LEN: usize = 32;
pub const INSTANCE_FORM: &str =
    "1 to 32 letters, digits, '-' or '_', starting with a letter or a digit (e.g. lab2)";

/// A namespace-name word (see [`super::valid_name`]), short enough to prefix node names.
fn instance_ok(name: &str) -> bool {
    name.len() <= INSTANCE_MAX_LEN && super::valid_name(name)
}

/// The one check of an instance name, for every subcommand, `KNETSIM_INSTANCE` and the
/// library: anything that is not a plain word could name a path outside the bases.
pub fn check_instance(name: &str) -> Result<()> {
    if instance_ok(name) {
        return Ok(());
    }
    bail!(
        "instance name '{}' is not valid: an instance name is {INSTANCE_FORM}",
        name.escape_debug()
    )
}

/// [`check_instance`] as a clap value parser, so a bad `--instance` or
/// `KNETSIM_INSTANCE` is a usage error (exit 2) before anything touches the filesystem.
pub fn parse_instance(name: &str) -> std::result::Result<String, String> {
    if instance_ok(name) {
        Ok(name.to_string())
    } else {
        Err(format!("an instance name is {INSTANCE_FORM}"))
    }
}

fn owner_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| format!("uid {uid} ({})", u.name))
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Why `path` (which opening without following symlinks refused) is not a directory.
fn not_a_plain_dir(path: &Path, err: std::io::Error) -> anyhow::Error {
    let p = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            anyhow!(
                "{p} is a symbolic link (to {target}): knetsim keeps its state only in real \
                 directories of root's, and follows no link there. Check who made it, then \
                 remove the link as root: rm {p}"
            )
        }
        Ok(m) => anyhow!(
            "{p} is not a directory (it belongs to {}): knetsim keeps its state there and \
             refuses to use it. Check what it is, then remove it as root: rm {p}",
            owner_name(m.uid())
        ),
        Err(_) => anyhow!(err).context(format!("opening {p}")),
    }
}

/// Opens directory `path` without following a symlink and checks that it is root's and
/// that no group or other user can write it. Read access for others is taken away
/// (0700): the directory is root's own, and logs and keys inside are nobody else's.
pub fn verify_private_dir(path: &Path) -> Result<()> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                anyhow!(e).context(format!("opening {}", path.display()))
            } else {
                not_a_plain_dir(path, e)
            }
        })?;
    verify_open_dir(&dir, path)
}

fn verify_open_dir(dir: &File, path: &Path) -> Result<()> {
    let p = path.display();
    let m = dir.metadata()?;
    if m.uid() != 0 {
        bail!(
            "{p} belongs to {}, not to root: another user may have planted it, so knetsim \
             neither uses nor removes it. Check its contents, then remove it as root: rm -r {p}",
            owner_name(m.uid())
        );
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "{p} is writable by other users (mode {mode:04o}): anyone could plant a record \
             there, so knetsim refuses it. Check its contents, then remove it as root: rm -r {p}"
        );
    }
    if mode & 0o077 != 0 {
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {p} private (chmod 700)"))?;
    }
    Ok(())
}

/// Creates directory `path` (mode 0700) unless it exists, then checks it as
/// [`verify_private_dir`] does. `mkdir` never follows a symlink, and the check opens what
/// is there without following one.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    verify_private_dir(path)
}

/// True when something is at `path` (a symlink counts; it is not followed).
fn present(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}

/// False when nothing is at `path`; true when a private directory is there; an error
/// when something else is.
pub fn existing_private_dir(path: &Path) -> Result<bool> {
    if !present(path)? {
        return Ok(false);
    }
    verify_private_dir(path)?;
    Ok(true)
}

/// The directory of `instance` under `base`, created (0700) or checked. Retries when the
/// base vanished in between: another instance may remove an empty base as it ends.
pub fn ensure_instance_dir(base: &Path, instance: &str) -> Result<PathBuf> {
    check_instance(instance)?;
    let dir = base.join(instance);
    let mut attempts = 0;
    loop {
        ensure_private_dir(base)?;
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => {
                attempts += 1;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        verify_private_dir(&dir)?;
        return Ok(dir);
    }
}

/// The base `path` lies in and the names below it, when `path` is strictly inside one of
/// knetsim's bases and spelled plainly (absolute, no `.` or `..`).
pub fn inside_base(path: &Path) -> Option<(&'static Path, Vec<String>)> {
    if !path.is_absolute()
        || path
            .to_str()
            .is_none_or(|s| s.contains("/./") || s.contains("//") || s.ends_with("/."))
    {
        return None;
    }
    for base in all_bases() {
        let Ok(rest) = path.strip_prefix(base) else {
            continue;
        };
        let mut names = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(n) => names.push(n.to_str()?.to_string()),
                _ => return None,
            }
        }
        if names.is_empty() {
            return None;
        }
        return Some((base, names));
    }
    None
}

/// Removes `path`, a directory inside one of knetsim's bases, after checking the base and
/// every directory from it down to `path` as [`verify_private_dir`] does (so no symlink is
/// followed on the way). `remove_dir_all` never follows a symlink below the top it is
/// given. Returns false when nothing was there.
pub fn remove_private_dir(path: &Path) -> Result<bool> {
    let Some((base, names)) = inside_base(path) else {
        bail!(
            "{} is not inside knetsim's own directories ({}, {SHM_BASE}); not removing it",
            path.display(),
            run_base().display()
        );
    };
    let mut at = base.to_path_buf();
    if !existing_private_dir(&at)? {
        return Ok(false);
    }
    for name in names {
        at.push(name);
        if !existing_private_dir(&at)? {
            return Ok(false);
        }
    }
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(true)
}

/// Removes the shared etcd-data base when it is empty: `rmdir` fails when another instance
/// has a directory in it, so this cannot take anything from a running instance.
/// Where a file written by rename goes first: its directory (`.` for a bare name) and a
/// temporary name beside `path` in it, so the rename that replaces `path` stays within one
/// file system and is atomic.
pub fn temp_beside(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    Ok((dir.to_path_buf(), tmp))
}

pub fn remove_shm_base_if_empty() {
    let _ = std::fs::remove_dir(SHM_BASE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        for good in [
            "default",
            "lab2",
            "cli11",
            "a",
            "0",
            "a-b_c",
            &"x".repeat(32),
        ] {
            assert!(check_instance(good).is_ok(), "{good}");
            assert!(parse_instance(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../victim",
            "/tmp/victim",
            "a/b",
            "-a",
            "_a",
            "a.b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(33),
        ] {
            let e = check_instance(bad).unwrap_err().to_string();
            assert!(e.contains("letters, digits"), "{bad}: {e}");
            assert!(parse_instance(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_run_base_is_one_of_the_bases_and_the_same_every_time() {
        let base = run_base();
        assert!(base == Path::new(RUN_BASE) || base == Path::new(RUN_BASE_SHM));
        assert!(all_bases().contains(&base));
        assert_eq!(run_base(), base);
    }

    #[test]
    fn only_plain_paths_inside_a_base_count() {
        let (b, n) = inside_base(Path::new("/dev/shm/knetsim/lab")).unwrap();
        assert_eq!((b, n), (Path::new(SHM_BASE), vec!["lab".to_string()]));
        let (b, n) = inside_base(Path::new("/run/knetsim/lab/C0e1/data")).unwrap();
        assert_eq!(b, Path::new(RUN_BASE));
        assert_eq!(n, ["lab", "C0e1", "data"]);
        let (b, n) = inside_base(Path::new("/dev/shm/knetsim-run/lab/C0w1")).unwrap();
        assert_eq!(
            (b, n),
            (Path::new(RUN_BASE_SHM), vec!["lab".into(), "C0w1".into()])
        );
        for bad in [
            "/dev/shm/knetsim-run",
            "/dev/shm/knetsim-runx/lab",
            "/run/knetsim",
            "/dev/shm/knetsim/",
            "/dev/shm/knetsim/../../../tmp/victim",
            "/run/knetsim/lab/../../etc",
            "/run/knetsim/./lab",
            "/run/knetsimx/lab",
            "run/knetsim/lab",
            "/tmp/victim",
            "/",
        ] {
            assert!(inside_base(Path::new(bad)).is_none(), "{bad}");
        }
    }
}
