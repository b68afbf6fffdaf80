//! The teardown record: a JSON file in the run directory listing every namespace and
//! process a simulation created. Each entry is written before the thing is created (for
//! namespaces) or right after it is spawned (for pids), so `knetsim cleanup` after a crash
//! removes exactly what that run made, and nothing else.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RUN_ROOT: &str = "/tmp/knetsim";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedProcess {
    pub pid: u32,
    pub start_time: u64,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordData {
    pub instance: String,
    pub owner_pid: u32,
    pub owner_start_time: u64,
    pub namespaces: Vec<String>,
    pub processes: Vec<RecordedProcess>,
}

/// A live record, shared by every part of one simulation.
#[derive(Clone)]
pub struct Record {
    dir: PathBuf,
    data: Arc<Mutex<RecordData>>,
}

pub fn run_dir(instance: &str) -> PathBuf {
    Path::new(RUN_ROOT).join(instance)
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

pub fn inspect(instance: &str) -> Existing {
    let dir = run_dir(instance);
    match read(&dir) {
        Some(d) => {
            if super::process::is_same_process(d.owner_pid, d.owner_start_time) {
                Existing::Live(d.owner_pid)
            } else {
                Existing::Stale
            }
        }
        None if dir.exists() => Existing::Stale,
        None => Existing::None,
    }
}

fn read(dir: &Path) -> Option<RecordData> {
    let text = std::fs::read_to_string(record_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

impl Record {
    /// Claims the run directory of `instance` for this process. Refuses a live instance;
    /// a stale one (its owner is gone) is cleaned first.
    pub fn claim(instance: &str) -> Result<Record> {
        match inspect(instance) {
            Existing::Live(pid) => bail!(
                "instance '{instance}' is already running (knetsim pid {pid}).\n  \
                 Stop it first, or run a second simulation beside it with `--instance OTHER`."
            ),
            Existing::Stale => {
                cleanup(instance)?;
            }
            Existing::None => {}
        }
        let dir = run_dir(instance);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let me = std::process::id();
        let data = RecordData {
            instance: instance.to_string(),
            owner_pid: me,
            owner_start_time: super::process::start_time(me).unwrap_or(0),
            ..Default::default()
        };
        let rec = Record {
            dir,
            data: Arc::new(Mutex::new(data)),
        };
        rec.save()?;
        Ok(rec)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn save(&self) -> Result<()> {
        let data = self.data.lock().unwrap();
        let tmp = self.dir.join("record.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*data)?)?;
        std::fs::rename(&tmp, record_path(&self.dir))?;
        Ok(())
    }

    pub fn add_namespace(&self, name: &str) -> Result<()> {
        self.data.lock().unwrap().namespaces.push(name.to_string());
        self.save()
    }

    pub fn forget_namespace(&self, name: &str) -> Result<()> {
        self.data.lock().unwrap().namespaces.retain(|n| n != name);
        self.save()
    }

    pub fn add_process(&self, pid: u32, what: &str) -> Result<()> {
        let start_time = super::process::start_time(pid).unwrap_or(0);
        self.data.lock().unwrap().processes.push(RecordedProcess {
            pid,
            start_time,
            what: what.to_string(),
        });
        self.save()
    }

    pub fn forget_process(&self, pid: u32) -> Result<()> {
        self.data.lock().unwrap().processes.retain(|p| p.pid != pid);
        self.save()
    }

    pub fn snapshot(&self) -> RecordData {
        self.data.lock().unwrap().clone()
    }

    /// Removes everything recorded, then the run directory.
    pub fn teardown(&self) -> Result<()> {
        let data = self.snapshot();
        teardown_data(&data)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Ends the recorded processes (by pid, checked against their start time), then every
/// process still inside one of the recorded namespaces (by pid), then the namespaces.
fn teardown_data(data: &RecordData) -> Result<()> {
    use super::process;
    // Daemons first, followers before the first etcd member so no leader hands over.
    let mut procs = data.processes.clone();
    procs.reverse();
    for p in &procs {
        if process::is_same_process(p.pid, p.start_time) {
            unsafe {
                libc::kill(p.pid as i32, libc::SIGKILL);
                libc::kill(-(p.pid as i32), libc::SIGKILL);
            }
        }
    }
    let inodes: Vec<u64> = data.namespaces.iter().filter_map(|n| super::inode(n)).collect();
    for _ in 0..50 {
        let left = process::pids_in_namespaces(&inodes);
        if left.is_empty() {
            break;
        }
        for pid in left {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut errors = Vec::new();
    for ns in data.namespaces.iter().rev() {
        if let Err(e) = super::delete(ns) {
            errors.push(format!("{ns}: {e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("could not remove some namespaces: {}", errors.join("; "));
    }
    Ok(())
}

/// `knetsim cleanup`: removes what a (crashed) run of `instance` left. Idempotent.
/// Returns a summary of what it removed.
pub fn cleanup(instance: &str) -> Result<String> {
    let dir = run_dir(instance);
    let Some(data) = read(&dir) else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ok();
            return Ok(format!("removed {} (it held no record)", dir.display()));
        }
        return Ok(format!("nothing to clean for instance '{instance}'"));
    };
    if super::process::is_same_process(data.owner_pid, data.owner_start_time)
        && data.owner_pid != std::process::id()
    {
        bail!(
            "instance '{instance}' is still running (knetsim pid {}); exit its console or stop that process first",
            data.owner_pid
        );
    }
    let n_ns = data.namespaces.iter().filter(|n| super::exists(n)).count();
    let n_proc = data
        .processes
        .iter()
        .filter(|p| super::process::is_same_process(p.pid, p.start_time))
        .count();
    teardown_data(&data)?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(format!(
        "instance '{instance}': removed {n_ns} namespaces, ended {n_proc} processes, removed {}",
        dir.display()
    ))
}
