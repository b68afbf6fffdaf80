//! What every command run on a node or in a pod sees, besides its namespace: node and pod
//! names resolve (a hosts file per cluster in the run directory, bind-mounted over
//! /etc/hosts for the command only), `etcdctl` reaches the cluster's etcd as people type
//! it (a thin wrapper first on PATH), and the node's own directory is the working
//! directory, so `wget` leaves its file there.

use super::Sim;
use crate::netns::process::Setup;
use crate::netns::state;
use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The setting of one exec: pass [`ExecPlace::setup`] and [`ExecPlace::env`] to the
/// process functions.
pub(crate) struct ExecPlace {
    pub hosts: Option<PathBuf>,
    pub cwd: PathBuf,
    pub path: String,
    /// The cluster's etcd client URLs, for the etcdctl wrapper (never ETCDCTL_ENDPOINTS:
    /// etcdctl 3.4 refuses it beside an --endpoints flag).
    pub etcd: String,
}

impl ExecPlace {
    pub fn setup(&self) -> Setup<'_> {
        Setup {
            hosts: self.hosts.as_deref(),
            cwd: Some(&self.cwd),
            keep_session: false,
            net_only: false,
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("PATH", self.path.as_str()),
            ("KNETSIM_ETCD_ENDPOINTS", self.etcd.as_str()),
        ]
    }
}

/// Files and directories exec already wrote or made in this run's directory, so an exec
/// touches the disk only when a hosts file changes (exec latency is measured against
/// `ip netns exec`).
#[derive(Default)]
pub(crate) struct Written {
    files: std::collections::HashMap<PathBuf, String>,
    dirs: std::collections::HashSet<PathBuf>,
}

/// v2-only etcdctl commands: the wrapper sends them to the v2 API.
pub const ETCDCTL_V2_ONLY: &[&str] = &[
    "cluster-health",
    "ls",
    "set",
    "mk",
    "mkdir",
    "rm",
    "rmdir",
    "update",
    "updatedir",
    "exec-watch",
    "backup",
    "import",
];

fn etcdctl_wrapper(real: &Path) -> String {
    format!(
        r#"#!/bin/sh
# knetsim's etcdctl: the real one, with this cluster's endpoints added only when none are
# given, and v2-only commands (cluster-health, ls, set, ...) sent to the v2 API.
real='{real}'
given=no
skip=no
cmd=
for a in "$@"; do
  if [ "$skip" = yes ]; then skip=no; continue; fi
  case "$a" in
    --endpoints|--peers|-C) given=yes; skip=yes ;;
    --endpoints=*|--peers=*|-C=*) given=yes ;;
    --cacert|--cert|--key|--user|--dial-timeout|--command-timeout|-w|--write-out|--ca-file|--cert-file|--key-file|--username|-u) skip=yes ;;
    -*) ;;
    *) [ -z "$cmd" ] && cmd="$a" ;;
  esac
done
[ -n "$ETCDCTL_ENDPOINTS" ] && given=yes
api="$ETCDCTL_API"
if [ -z "$api" ]; then
  case "$cmd" in
    {v2}) api=2 ;;
    *) api=3 ;;
  esac
fi
export ETCDCTL_API="$api"
if [ "$given" = no ] && [ -n "$KNETSIM_ETCD_ENDPOINTS" ]; then
  exec "$real" --endpoints "$KNETSIM_ETCD_ENDPOINTS" "$@"
fi
exec "$real" "$@"
"#,
        real = real.display(),
        v2 = ETCDCTL_V2_ONLY.join("|"),
    )
}

/// Writes `text` to `path` unless it already holds exactly that: a new file beside it,
/// then a rename, so a command mounting the old one never sees half a file. The
/// directory is knetsim's own private one; nothing here follows a symlink.
fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && std::fs::read_to_string(path).is_ok_and(|old| old == text)
    {
        return Ok(());
    }
    let tmp = path.with_extension(format!(
        "tmp{}{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

impl Sim {
    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        self.inner
            .exec_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_dir_once(&self, dir: &Path) -> Result<()> {
        if self.written().dirs.contains(dir) {
            return Ok(());
        }
        state::ensure_private_dir(dir)?;
        self.written().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn write_once(&self, path: &Path, text: String, mode: u32) -> Result<()> {
        if self.written().files.get(path) == Some(&text) {
            return Ok(());
        }
        write_if_changed(path, &text, mode)?;
        self.written().files.insert(path.to_path_buf(), text);
        Ok(())
    }

    /// The hosts file of cluster `id`, brought up to date: every node of every cluster, every
    /// pod as `C0-c2`, and this cluster's pods also by their short name (`c2`).
    pub(crate) fn hosts_file(&self, id: &str) -> Result<PathBuf> {
        let text = {
            let st = self.state();
            let mut t = String::from(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 # knetsim: the nodes and pods of this simulation (kept current by knetsim)\n",
            );
            for c in &st.clusters {
                for e in &c.etcd {
                    t.push_str(&format!("{}\t{}\n", e.ip, e.name));
                }
                for w in &c.workers {
                    t.push_str(&format!("{}\t{}\n", w.ip, w.name));
                }
            }
            for c in &st.clusters {
                for w in &c.workers {
                    for (name, ct) in &w.containers {
                        let ip = ct.ip.split('/').next().unwrap_or(&ct.ip);
                        if c.id == id {
                            t.push_str(&format!("{ip}\t{}-{name} {name}\n", c.name()));
                        } else {
                            t.push_str(&format!("{ip}\t{}-{name}\n", c.name()));
                        }
                    }
                }
            }
            t
        };
        let dir = self.run_dir().join("hosts");
        self.ensure_dir_once(&dir)?;
        let path = dir.join(format!("C{id}"));
        self.write_once(&path, text, 0o644)?;
        Ok(path)
    }

    /// `<run dir>/bin`, with the etcdctl wrapper when etcdctl is installed.
    fn exec_bin_dir(&self) -> Result<PathBuf> {
        let dir = self.run_dir().join("bin");
        if self.written().dirs.contains(&dir) {
            return Ok(dir);
        }
        state::ensure_private_dir(&dir)?;
        let wrapper = dir.join("etcdctl");
        if let Some(real) = crate::netns::process::which("etcdctl") {
            if real != wrapper {
                write_if_changed(&wrapper, &etcdctl_wrapper(&real), 0o755)?;
            }
        }
        self.written().dirs.insert(dir.clone());
        Ok(dir)
    }

    /// Where a command on node `node` (or in one of its pods) of cluster `id` runs.
    pub(crate) fn exec_place(&self, id: &str, node: &str) -> Result<ExecPlace> {
        let cwd = self.run_dir().join(node);
        self.ensure_dir_once(&cwd)?;
        let bin = self.exec_bin_dir()?;
        let etcd = self
            .state()
            .clusters
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.etcd_endpoints())
            .unwrap_or_default();
        Ok(ExecPlace {
            hosts: Some(self.hosts_file(id)?),
            cwd,
            path: format!("{}:{}", bin.display(), self.path_env()),
            etcd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcdctl_wrapper_routes_v2_commands_and_adds_endpoints_only_when_none_are_given() {
        let dir = std::env::temp_dir().join(format!("knetsim-etcdctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in etcdctl that prints what it got.
        let fake = dir.join("real");
        std::fs::write(&fake, "#!/bin/sh\necho \"API=$ETCDCTL_API ARGS=$*\"\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let w = dir.join("etcdctl");
        write_if_changed(&w, &etcdctl_wrapper(&fake), 0o755).unwrap();
        let run = |args: &[&str]| {
            let o = std::process::Command::new(&w)
                .args(args)
                .env("KNETSIM_ETCD_ENDPOINTS", "http://10.1.0.1:2379")
                .env_remove("ETCDCTL_API")
                .env_remove("ETCDCTL_ENDPOINTS")
                .output()
                .unwrap();
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        assert_eq!(
            run(&["cluster-health"]),
            "API=2 ARGS=--endpoints http://10.1.0.1:2379 cluster-health"
        );
        assert_eq!(
            run(&["get", "--prefix", "/coreos.com"]),
            "API=3 ARGS=--endpoints http://10.1.0.1:2379 get --prefix /coreos.com"
        );
        assert_eq!(
            run(&[
                "--endpoints",
                "http://10.1.0.2:2379",
                "get",
                "--prefix",
                "/a"
            ]),
            "API=3 ARGS=--endpoints http://10.1.0.2:2379 get --prefix /a"
        );
        assert_eq!(
            run(&["--endpoints=http://x:2379", "ls", "/"]),
            "API=2 ARGS=--endpoints=http://x:2379 ls /"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
