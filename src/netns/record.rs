//! The teardown record: a JSON file in the run directory listing every namespace, process
//! and outside directory a simulation created. Each entry is written before the thing is
//! created (for namespaces and directories) or right after it is spawned (for pids), so
//! `knetsim cleanup` after a crash removes exactly what that run made, and nothing else.
//!
//! A record read back from disk is obeyed only when it and its directory are root's and
//! nobody else can write them, and then entry by entry: namespace names by the naming
//! rules, paths only inside knetsim's own bases, pids only while pid, start time and
//! command line still match. Anything else is named in a warning and left alone.

use super::state::{self, SHM_BASE};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedProcess {
    pub pid: u32,
    pub start_time: u64,
    /// Its command line when it was recorded (see [`super::process::cmdline`]).
    #[serde(default)]
    pub cmdline: String,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordData {
    pub instance: String,
    pub owner_pid: u32,
    pub owner_start_time: u64,
    #[serde(default)]
    pub owner_cmdline: String,
    pub namespaces: Vec<String>,
    pub processes: Vec<RecordedProcess>,
    /// Directories outside the run directory (etcd data under /dev/shm/knetsim).
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A live record, shared by every part of one simulation.
#[derive(Clone)]
pub struct Record {
    dir: PathBuf,
    shared: Arc<Shared>,
}

/// The record in memory and on disk. Changes are committed in groups: each change bumps
/// the version under `data`; one caller at a time (the writer) writes the newest version
/// whole, outside `data`'s lock, and every caller returns once a version at least its own
/// is on disk. So spawners side by side share writes instead of queueing one rewrite each
/// behind the lock (at 200 workers a rewrite is 100+ KB, once per process started).
struct Shared {
    data: Mutex<Versioned>,
    disk: Mutex<OnDisk>,
    /// Signalled whenever a writer finishes.
    written: Condvar,
}

struct Versioned {
    data: RecordData,
    version: u64,
}

#[derive(Default)]
struct OnDisk {
    version: u64,
    writing: bool,
}

pub fn run_dir(instance: &str) -> PathBuf {
    state::run_base().join(instance)
}

/// Where an instance's etcd data lives when memory allows (see `sim::bringup`).
pub fn shm_dir(instance: &str) -> PathBuf {
    Path::new(SHM_BASE).join(instance)
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join("record.json")
}

/// The state of an instance's run directory.
pub enum Existing {
    None,
    Live(u32),
    Stale,
}

/// What is in `instance`'s run directory; an error when the directory (or its base, or its
/// record) is not one knetsim may trust.
pub fn inspect(instance: &str) -> Result<Existing> {
    let Some(dir) = trusted_run_dir(instance)? else {
        return Ok(Existing::None);
    };
    Ok(match read(&dir)? {
        Some(d) if owner_alive(&d) => Existing::Live(d.owner_pid),
        _ => Existing::Stale,
    })
}

/// What the record of `instance` holds now (None: there is none), read as every reader of
/// another process's record must: under its shared lock, again when a write swapped it
/// meanwhile, and refused when another user could have written it.
pub fn read_record(instance: &str) -> Result<Option<RecordData>> {
    match trusted_run_dir(instance)? {
        Some(dir) => read(&dir),
        None => Ok(None),
    }
}

/// `instance`'s run directory when it exists; an error when the name could leave the
/// run base, or the directory or its base is not a private directory of root's.
fn trusted_run_dir(instance: &str) -> Result<Option<PathBuf>> {
    state::check_instance(instance)?;
    let dir = run_dir(instance);
    if !state::existing_private_dir(state::run_base())? || !state::existing_private_dir(&dir)? {
        return Ok(None);
    }
    Ok(Some(dir))
}

fn owner_alive(d: &RecordData) -> bool {
    super::process::is_same_process_cmd(d.owner_pid, d.owner_start_time, &d.owner_cmdline)
}

/// Reads the record in `dir` (a directory already verified private) without following a
/// symlink; refuses one that is not a plain file of root's that only root can write.
fn read(dir: &Path) -> Result<Option<RecordData>> {
    // A writer rewrites the file that was the record before its last write (see
    // `swap_in`), under an exclusive lock: the read holds a shared one, and reads again
    // when the file stopped being the record before it got the lock (a write finished in
    // between: writes are few, each far longer than a read).
    loop {
        if let Read::Done(data) = read_file(dir)? {
            return data;
        }
    }
}

enum Read {
    Done(Result<Option<RecordData>>),
    Swapped,
}

/// One read: Err when the record may not be trusted at all.
fn read_file(dir: &Path) -> Result<Read> {
    let path = record_path(dir);
    let p = path.display();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Read::Done(Ok(None))),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{p} is a symbolic link: knetsim obeys only a record that is a plain file of \
             root's. Check who made it, then remove it as root: rm {p}"
        ),
        Err(e) => return Err(e).with_context(|| format!("opening {p}")),
    };
    let m = file.metadata()?;
    if !m.is_file() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        bail!(
            "{p} is not a plain file that only root can write (owner uid {}, mode {:04o}): \
             knetsim will not obey it. Check who made it, then remove the directory as root: \
             rm -r {}",
            m.uid(),
            m.mode() & 0o7777,
            dir.display()
        );
    }
    let file = Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {p}"))?;
    if std::fs::symlink_metadata(&path).map(|n| n.ino()).ok() != Some(m.ino()) {
        return Ok(Read::Swapped);
    }
    let data = serde_json::from_reader(std::io::BufReader::new(&*file)).with_context(|| {
        format!(
            "{p} is not a knetsim record; check it, then remove the directory as root: rm -r {}",
            dir.display()
        )
    });
    Ok(Read::Done(data.map(Some)))
}

/// The entries of a record read from disk that may be obeyed, and a warning for each one
/// that may not.
fn vet(instance: &str, data: RecordData) -> (RecordData, Vec<String>) {
    let mut warnings = Vec::new();
    let prefix = format!("{instance}-");
    let mut namespaces = Vec::new();
    for n in data.namespaces {
        let prefixed = instance == crate::sim::DEFAULT_INSTANCE || n.starts_with(&prefix);
        if super::valid_name(&n) && prefixed {
            namespaces.push(n);
        } else {
            warnings.push(format!(
                "namespace '{}' is not a namespace name of instance '{instance}'; left alone",
                n.escape_debug()
            ));
        }
    }
    let mut processes = Vec::new();
    for p in data.processes {
        if !may_signal(p.pid) || p.cmdline.is_empty() {
            warnings.push(format!(
                "process {} ({}) cannot be a process of this run; not ended",
                p.pid,
                p.what.escape_debug()
            ));
        } else if super::process::is_same_process(p.pid, p.start_time)
            && !super::process::is_same_process_cmd(p.pid, p.start_time, &p.cmdline)
        {
            warnings.push(format!(
                "process {} runs '{}', not the recorded '{}'; not ended",
                p.pid,
                super::process::cmdline(p.pid)
                    .unwrap_or_default()
                    .escape_debug(),
                p.cmdline.escape_debug()
            ));
        } else {
            processes.push(p);
        }
    }
    let mut paths = Vec::new();
    for p in data.paths {
        if own_path(instance, Path::new(&p)) {
            paths.push(p);
        } else {
            warnings.push(format!(
                "path '{}' is not inside instance '{instance}''s own directories ({}, {}); left alone",
                p.escape_debug(),
                run_dir(instance).display(),
                shm_dir(instance).display()
            ));
        }
    }
    let vetted = RecordData {
        namespaces,
        processes,
        paths,
        ..data
    };
    (vetted, warnings)
}

/// True for the instance's own directories under knetsim's bases, or below them.
fn own_path(instance: &str, path: &Path) -> bool {
    state::inside_base(path).is_some_and(|(_, names)| names[0] == instance)
}

impl Record {
    /// Claims the run directory of `instance` for this process. Refuses a live instance;
    /// a stale one (its owner is gone) is cleaned first.
    pub fn claim(instance: &str) -> Result<Record> {
        match inspect(instance)? {
            Existing::Live(pid) => bail!(
                "instance '{instance}' is already running (knetsim pid {pid}).\n  \
                 Stop it first, or run a second simulation beside it with `--instance OTHER`."
            ),
            Existing::Stale => {
                cleanup(instance)?;
            }
            Existing::None => {}
        }
        let dir = state::ensure_instance_dir(state::run_base(), instance)?;
        let me = std::process::id();
        let data = RecordData {
            instance: instance.to_string(),
            owner_pid: me,
            owner_start_time: super::process::start_time(me).unwrap_or(0),
            owner_cmdline: super::process::cmdline(me).unwrap_or_default(),
            ..Default::default()
        };
        let rec = Record::new(dir, data);
        rec.commit(1)?;
        Ok(rec)
    }

    fn new(dir: PathBuf, data: RecordData) -> Record {
        Record {
            dir,
            shared: Arc::new(Shared {
                // Version 1 is the record as claimed; 0 is what the disk holds so far.
                data: Mutex::new(Versioned { data, version: 1 }),
                disk: Mutex::new(OnDisk::default()),
                written: Condvar::new(),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> MutexGuard<'_, Versioned> {
        self.shared.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` in memory, then returns once the record on disk holds it.
    fn change(&self, change: impl FnOnce(&mut RecordData)) -> Result<()> {
        let version = {
            let mut d = self.data();
            change(&mut d.data);
            d.version += 1;
            d.version
        };
        self.commit(version)
    }

    /// Returns once version `version` (or a newer one) is on disk: written by this caller
    /// when no one else is writing, else by whichever writer comes after.
    fn commit(&self, version: u64) -> Result<()> {
        let disk_lock = || self.shared.disk.lock().unwrap_or_else(|e| e.into_inner());
        let mut disk = disk_lock();
        loop {
            if disk.version >= version {
                return Ok(());
            }
            if !disk.writing {
                break;
            }
            disk = self
                .shared
                .written
                .wait(disk)
                .unwrap_or_else(|e| e.into_inner());
        }
        disk.writing = true;
        drop(disk);
        let written = self.write_newest();
        let mut disk = disk_lock();
        disk.writing = false;
        if let Ok(v) = written {
            disk.version = disk.version.max(v);
        }
        drop(disk);
        // A failed write leaves the versions unwritten: a waiter retries it and reports
        // its own error.
        self.shared.written.notify_all();
        written.map(|_| ())
    }

    /// Writes the newest version whole (only the writer calls this); returns its number.
    fn write_newest(&self) -> Result<u64> {
        let (bytes, version) = {
            let d = self.data();
            (serde_json::to_vec_pretty(&d.data)?, d.version)
        };
        let tmp = self.dir.join("record.json.tmp");
        // Rewritten in place (the previous version it holds is no longer needed), so no
        // write allocates an inode: on ext4 without a journal each new inode scans past
        // the recently deleted ones, and a rename over the record deleted one per write.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        // A reader that opened it while it was the record may still be reading it.
        let mut f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.set_len(bytes.len() as u64))
            .with_context(|| format!("writing {}", tmp.display()))?;
        swap_in(&tmp, &record_path(&self.dir))?;
        Ok(version)
    }

    pub fn add_namespace(&self, name: &str) -> Result<()> {
        self.add_namespaces(&[name.to_string()])
    }

    /// Records many namespaces in one write (the record is rewritten whole each time, so
    /// a bring-up of hundreds of hosts or pods records them all before creating any).
    pub fn add_namespaces(&self, names: &[String]) -> Result<()> {
        self.change(|d| d.namespaces.extend(names.iter().cloned()))
    }

    /// Records namespace `name`, then creates it. When it cannot be created (most often
    /// because a namespace of that name already exists: another instance's, or one made by
    /// hand), the entry is taken back, so this run's teardown never deletes a namespace it
    /// did not make.
    pub fn create_namespace(&self, name: &str) -> Result<()> {
        self.add_namespace(name)?;
        if let Err(e) = super::create(name) {
            let _ = self.forget_namespace(name);
            return Err(e);
        }
        Ok(())
    }

    pub fn forget_namespace(&self, name: &str) -> Result<()> {
        self.forget_namespaces(&[name.to_string()])
    }

    pub fn forget_namespaces(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<&String> = names.iter().collect();
        self.change(|d| d.namespaces.retain(|n| !gone.contains(n)))
    }

    pub fn add_process(&self, pid: u32, what: &str) -> Result<()> {
        let start_time = super::process::start_time(pid).unwrap_or(0);
        let cmdline = super::process::cmdline(pid).unwrap_or_default();
        self.change(|d| {
            d.processes.push(RecordedProcess {
                pid,
                start_time,
                cmdline,
                what: what.to_string(),
            })
        })
    }

    /// Records a directory outside the run directory; it must lie inside this instance's
    /// own directory under one of knetsim's bases.
    pub fn add_path(&self, path: &Path) -> Result<()> {
        let instance = self.data().data.instance.clone();
        if !own_path(&instance, path) {
            bail!(
                "{} is outside instance '{instance}''s own directories; not recording it",
                path.display()
            );
        }
        let path = path.display().to_string();
        if self.data().data.paths.contains(&path) {
            return Ok(());
        }
        self.change(|d| {
            if !d.paths.contains(&path) {
                d.paths.push(path)
            }
        })
    }

    pub fn forget_process(&self, pid: u32) -> Result<()> {
        self.change(|d| d.processes.retain(|p| p.pid != pid))
    }

    pub fn snapshot(&self) -> RecordData {
        self.data().data.clone()
    }

    /// Removes everything recorded, then the run directory.
    pub fn teardown(&self) -> Result<()> {
        self.teardown_keeping_logs(false).map(|_| ())
    }

    /// Removes everything recorded. With `keep_logs`, the run directory's non-empty `*.log`
    /// files stay where they are (everything else goes, the record too) so a failed run can
    /// be examined; returns the directory when it kept any.
    pub fn teardown_keeping_logs(&self, keep_logs: bool) -> Result<Option<PathBuf>> {
        let data = self.snapshot();
        let res = teardown_data(&data);
        if keep_logs && keep_only_logs(&self.dir)? {
            res?;
            return Ok(Some(self.dir.clone()));
        }
        let removed = state::remove_private_dir(&self.dir).map(|_| ());
        res.and(removed).map(|()| None)
    }
}

/// Prunes run directory `dir` down to its non-empty `*.log` files (the directories that
/// hold them stay). Returns whether any log is left. The directory is knetsim's own
/// (private, verified when claimed), and `symlink_metadata` never follows a link.
fn keep_only_logs(dir: &Path) -> Result<bool> {
    fn prune(dir: &Path) -> std::io::Result<bool> {
        let mut kept = false;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            let m = std::fs::symlink_metadata(&path)?;
            if m.is_dir() {
                if prune(&path)? {
                    kept = true;
                } else {
                    std::fs::remove_dir(&path)?;
                }
            } else if m.is_file() && m.len() > 0 && path.extension().is_some_and(|x| x == "log") {
                kept = true;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(kept)
    }
    prune(dir).with_context(|| format!("keeping the logs in {}", dir.display()))
}

/// Makes `new` the record at `path` whole, even after a crash: the two files are swapped
/// in one step, so `new` then holds the previous version, overwritten by the next write.
/// The first write (no record yet), or a filesystem that cannot swap, renames instead.
fn swap_in(new: &Path, path: &Path) -> Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, new, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT | Errno::EINVAL) => {
            std::fs::rename(new, path).with_context(|| format!("replacing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("replacing {}", path.display())),
    }
}

/// Whether a recorded pid may be signalled at all (it and its process group), whatever
/// the record says: never pid 0 or 1 (`kill(-1)` reaches every process on the machine,
/// `kill(0)` our own group, and 1 is init), never ourselves, never a pid that would wrap.
fn may_signal(pid: u32) -> bool {
    pid > 1 && pid != std::process::id() && pid <= i32::MAX as u32
}

/// Ends the recorded processes (by pid, checked against their start time and command
/// line), then every process still inside one of the recorded namespaces (by pid), then
/// the namespaces and the recorded directories. Names that are not namespace names and
/// paths outside knetsim's bases are never used (see [`vet`] for a record read from disk).
fn teardown_data(data: &RecordData) -> Result<()> {
    use super::process;
    // Daemons first, followers before the first etcd member so no leader hands over.
    for p in data.processes.iter().rev() {
        if may_signal(p.pid) && process::is_same_process_cmd(p.pid, p.start_time, &p.cmdline) {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(-(p.pid as i32)), Signal::SIGKILL);
        }
    }
    // Only real namespaces under /run/netns, never the host's (see `netns::inode`).
    let inodes: Vec<u64> = data
        .namespaces
        .iter()
        .filter_map(|n| super::inode(n))
        .collect();
    for _ in 0..50 {
        let left = process::pids_in_namespaces(&inodes);
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Side by side: each unmount waits on the kernel (and on every mount copy it
    // propagates to) far more than it computes.
    let mut errors: Vec<String> =
        crate::parallel::each(&data.namespaces, crate::parallel::default_limit(), |ns| {
            super::delete(ns).err().map(|e| format!("{ns}: {e:#}"))
        })
        .into_iter()
        .flatten()
        .collect();
    for p in &data.paths {
        if let Err(e) = state::remove_private_dir(Path::new(p)) {
            errors.push(format!("{e:#}"));
        }
    }
    if data.paths.iter().any(|p| p.starts_with(SHM_BASE)) {
        state::remove_shm_base_if_empty();
    }
    if !errors.is_empty() {
        bail!("could not remove everything: {}", errors.join("; "));
    }
    Ok(())
}

/// `knetsim cleanup`: removes what a (crashed) run of `instance` left, and the logs a
/// failed run kept. Idempotent. Returns a summary of what it removed; warnings name the
/// record entries it refused.
pub fn cleanup(instance: &str) -> Result<String> {
    state::check_instance(instance)?;
    let dir = run_dir(instance);
    let shm = shm_dir(instance);
    let have_dir =
        state::existing_private_dir(state::run_base())? && state::existing_private_dir(&dir)?;
    if !have_dir {
        // etcd data whose run directory is gone (only knetsim can write in its base).
        if state::remove_private_dir(&shm)? {
            state::remove_shm_base_if_empty();
            return Ok(format!("removed {}", shm.display()));
        }
        return Ok(format!("nothing to clean for instance '{instance}'"));
    }
    let Some(data) = read(&dir)? else {
        state::remove_private_dir(&dir)?;
        if state::remove_private_dir(&shm)? {
            state::remove_shm_base_if_empty();
        }
        return Ok(format!(
            "removed {} (it held no record: the logs of a failed run, or a run that never started)",
            dir.display()
        ));
    };
    if owner_alive(&data) && data.owner_pid != std::process::id() {
        bail!(
            "instance '{instance}' is still running (knetsim pid {}); exit its console or stop that process first",
            data.owner_pid
        );
    }
    let (data, warnings) = vet(instance, data);
    for w in &warnings {
        eprintln!(
            "{} record of instance '{instance}': {w}",
            crate::ui::yellow("warning:")
        );
    }
    let n_ns = data.namespaces.iter().filter(|n| super::exists(n)).count();
    let n_proc = data
        .processes
        .iter()
        .filter(|p| super::process::is_same_process_cmd(p.pid, p.start_time, &p.cmdline))
        .count();
    teardown_data(&data)?;
    state::remove_private_dir(&dir)?;
    if state::remove_private_dir(&shm)? {
        state::remove_shm_base_if_empty();
    }
    Ok(format!(
        "instance '{instance}': removed {n_ns} namespaces, ended {n_proc} processes, removed {}",
        dir.display()
    ))
}

/// Every instance that has something under knetsim's bases, for `cleanup --all`; entries
/// whose names are not instance names are named in the second list (never touched).
pub fn instances() -> Result<(Vec<String>, Vec<PathBuf>)> {
    let mut names = Vec::new();
    let mut strangers = Vec::new();
    for base in state::all_bases() {
        if !state::existing_private_dir(base)? {
            continue;
        }
        for e in std::fs::read_dir(base)? {
            let e = e?;
            match e.file_name().to_str() {
                Some(n) if state::check_instance(n).is_ok() => {
                    if !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
                _ => strangers.push(e.path()),
            }
        }
    }
    names.sort();
    Ok((names, strangers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name that could leave the run directory is refused before any path is made of it;
    /// an instance with no record reads as none.
    #[test]
    fn read_record_checks_the_name_and_finds_none_for_an_unknown_instance() {
        let e = read_record("../etc").unwrap_err();
        assert!(format!("{e:#}").contains("../etc"), "{e:#}");
        assert!(read_record("rr-never-made").unwrap().is_none());
    }

    fn proc(pid: u32, cmdline: &str) -> RecordedProcess {
        RecordedProcess {
            pid,
            start_time: 1,
            cmdline: cmdline.into(),
            what: "x".into(),
        }
    }

    #[test]
    fn vetting_keeps_only_what_the_instance_could_have_made() {
        let data = RecordData {
            instance: "lab".into(),
            namespaces: vec![
                "lab-C0w1".into(),
                "../../proc/1/ns/net".into(),
                "lab-../x".into(),
                "other-C0w1".into(),
                "C0w1".into(),
            ],
            processes: vec![proc(1, "init"), proc(77, ""), proc(4_000_000, "etcd")],
            paths: vec![
                "/dev/shm/knetsim/lab".into(),
                "/dev/shm/knetsim/other".into(),
                "/dev/shm/knetsim/lab/../../../tmp/victim".into(),
                "/tmp/victim".into(),
                "/run/knetsim/lab/C0e1/data".into(),
            ],
            ..Default::default()
        };
        let (v, warnings) = vet("lab", data);
        assert_eq!(v.namespaces, ["lab-C0w1"]);
        assert_eq!(v.processes.len(), 1);
        assert_eq!(v.processes[0].pid, 4_000_000);
        assert_eq!(
            v.paths,
            ["/dev/shm/knetsim/lab", "/run/knetsim/lab/C0e1/data"]
        );
        assert_eq!(warnings.len(), 4 + 2 + 3, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("../../proc/1/ns/net")));
        assert!(warnings.iter().any(|w| w.contains("/tmp/victim")));
    }

    #[test]
    fn init_everyone_and_ourselves_are_never_signalled() {
        for pid in [0, 1, std::process::id(), u32::MAX, i32::MAX as u32 + 1] {
            assert!(!may_signal(pid), "{pid}");
        }
        assert!(may_signal(2) && may_signal(4_000_000));
    }

    /// A record in a fresh private directory of its own (unit tests do not claim under
    /// knetsim's bases); removed when dropped.
    struct TempRecord(Record);

    impl TempRecord {
        fn new(tag: &str) -> TempRecord {
            let dir =
                std::env::temp_dir().join(format!("knetsim-record-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            let rec = Record::new(dir, RecordData::default());
            rec.commit(1).unwrap();
            TempRecord(rec)
        }

        fn on_disk(&self) -> RecordData {
            read(self.0.dir()).unwrap().expect("a record on disk")
        }
    }

    impl Drop for TempRecord {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.dir());
        }
    }

    #[test]
    fn every_change_is_on_disk_when_its_caller_returns_even_side_by_side() {
        let t = TempRecord::new("group");
        let names: Vec<String> = (0..64).map(|i| format!("ns{i}")).collect();
        std::thread::scope(|s| {
            for chunk in names.chunks(4) {
                let rec = &t.0;
                s.spawn(move || {
                    for n in chunk {
                        rec.add_namespace(n).unwrap();
                        // Read back by this caller at once: a writer that stored an older
                        // version than this caller's would fail here.
                        let disk = read(rec.dir()).unwrap().unwrap();
                        assert!(disk.namespaces.contains(n), "{n} not on disk yet");
                    }
                });
            }
        });
        let mut disk = t.on_disk().namespaces;
        disk.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(disk, want);
        t.0.forget_namespaces(&names[..10]).unwrap();
        assert_eq!(t.on_disk().namespaces.len(), 54);
    }

    #[test]
    fn writes_reuse_two_files_the_record_always_the_newest_whole() {
        use std::os::unix::fs::MetadataExt;
        let t = TempRecord::new("inodes");
        let inode = |name: &str| std::fs::metadata(t.0.dir().join(name)).unwrap().ino();
        t.0.add_namespace("first-with-a-long-name").unwrap();
        t.0.add_namespace("second").unwrap();
        let both = [inode("record.json"), inode("record.json.tmp")];
        // Shorter than the version the spare file held: no tail of it is left.
        t.0.forget_namespaces(&["first-with-a-long-name".to_string()])
            .unwrap();
        t.0.add_namespace("third").unwrap();
        let mut now = [inode("record.json"), inode("record.json.tmp")];
        let mut before = both;
        now.sort();
        before.sort();
        assert_eq!(now, before, "a write allocated a new file");
        assert_eq!(t.on_disk().namespaces, ["second", "third"]);
    }

    #[test]
    fn a_failed_write_is_reported_and_the_next_one_writes_everything() {
        let t = TempRecord::new("fail");
        t.0.add_namespace("before").unwrap();
        // A directory where the spare file goes makes the write fail.
        let tmp = t.0.dir().join("record.json.tmp");
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        let err = t.0.add_namespace("lost").unwrap_err();
        assert!(
            format!("{err:#}").contains("record.json.tmp"),
            "the error names the file: {err:#}"
        );
        assert_eq!(t.on_disk().namespaces, ["before"]);
        std::fs::remove_dir(&tmp).unwrap();
        t.0.add_namespace("after").unwrap();
        assert_eq!(t.on_disk().namespaces, ["before", "lost", "after"]);
    }

    #[test]
    fn processes_and_paths_are_recorded_and_forgotten() {
        let t = TempRecord::new("procs");
        let me = std::process::id();
        t.0.add_process(me, "this test").unwrap();
        let disk = t.on_disk();
        assert_eq!(disk.processes.len(), 1);
        assert_eq!(disk.processes[0].pid, me);
        assert!(!disk.processes[0].cmdline.is_empty());
        t.0.forget_process(me).unwrap();
        assert!(t.on_disk().processes.is_empty());
        // A path outside the instance's own directories is refused before anything is written.
        assert!(t.0.add_path(Path::new("/tmp/elsewhere")).is_err());
        assert!(t.on_disk().paths.is_empty());
    }

    #[test]
    fn the_default_instance_has_no_prefix() {
        let data = RecordData {
            namespaces: vec!["C0w1".into(), "underlay".into(), "a/b".into()],
            ..Default::default()
        };
        let (v, w) = vet("default", data);
        assert_eq!(v.namespaces, ["C0w1", "underlay"]);
        assert_eq!(w.len(), 1);
    }
}
