//! CNI: the flannel CNI plugin's logic (read subnet.env, render a delegated `bridge`
//! config with host-local IPAM, keep it per container for DEL), executing Debian's real
//! plugins from `/usr/lib/cni` inside the worker's namespace, as a kubelet's container
//! runtime would.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where Debian installs the CNI plugins; `KNETSIM_CNI_PATH` overrides it.
pub const CNI_PATH: &str = "/usr/lib/cni";

pub fn cni_path() -> String {
    std::env::var("KNETSIM_CNI_PATH").unwrap_or_else(|_| CNI_PATH.to_string())
}
pub const CNI_VERSION: &str = "0.3.1";

/// What flanneld wrote to subnet.env.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetEnv {
    pub network: String,
    pub subnet: String,
    pub mtu: u32,
    pub ipmasq: bool,
}

pub fn parse_subnet_env(text: &str) -> Result<SubnetEnv> {
    let get = |k: &str| -> Result<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| anyhow!("subnet.env has no {k}"))
    };
    Ok(SubnetEnv {
        network: get("FLANNEL_NETWORK")?,
        subnet: get("FLANNEL_SUBNET")?,
        mtu: get("FLANNEL_MTU")?
            .parse()
            .context("FLANNEL_MTU is not a number")?,
        ipmasq: get("FLANNEL_IPMASQ")? == "true",
    })
}

pub fn read_subnet_env(path: &Path) -> Result<SubnetEnv> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (is the worker's flannel agent running?)",
            path.display()
        )
    })?;
    parse_subnet_env(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The network configuration a worker's runtime hands to the flannel plugin (what would
/// sit in /etc/cni/net.d/10-flannel.conflist).
pub fn flannel_conf(subnet_file: &Path, data_dir: &Path) -> Value {
    json!({
        "name": "cbr0",
        "cniVersion": CNI_VERSION,
        "type": "flannel",
        "subnetFile": subnet_file,
        "dataDir": data_dir,
        "delegate": { "hairpinMode": true, "isDefaultGateway": true }
    })
}

/// The flannel plugin's delegation: subnet.env + the user's `delegate` section become a
/// `bridge` config with host-local IPAM over this worker's subnet.
pub fn render_delegate(conf: &Value, env: &SubnetEnv, ipam_dir: &Path) -> Value {
    let mut d = json!({
        "name": conf["name"],
        "cniVersion": conf["cniVersion"],
        "type": "bridge",
        "mtu": env.mtu,
        "ipMasq": !env.ipmasq,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": network_of(&env.subnet) }]],
            "routes": [{ "dst": env.network }],
            "dataDir": ipam_dir,
        }
    });
    if let Some(user) = conf["delegate"].as_object() {
        for (k, v) in user {
            d[k] = v.clone();
        }
    }
    d
}

/// `11.12.16.1/20` -> `11.12.16.0/20`, as the flannel plugin's CIDR parse yields.
pub fn network_of(cidr: &str) -> String {
    let Some((ip, len)) = cidr.split_once('/') else {
        return cidr.to_string();
    };
    let (Ok(ip), Ok(len)) = (ip.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return cidr.to_string();
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(ip) & mask))
}

/// One container's attachment: the address the bridge plugin's IPAM gave it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub ip: String,
}

/// A container to attach: its ID (what CNI_CONTAINERID carries) and its namespace's path.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub netns: PathBuf,
}

/// A plugin run that has its config on stdin and has not been waited for yet.
struct Running {
    plugin: &'static str,
    command: &'static str,
    child: std::process::Child,
}

impl Running {
    /// Waits for the plugin and reads its result (CNI errors come as JSON on stdout).
    fn finish(self) -> Result<Value> {
        let (plugin, command) = (self.plugin, self.command);
        let out = crate::netns::process::output_reaping_later(self.child)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let msg = serde_json::from_str::<Value>(&stdout)
                .ok()
                .and_then(|v| {
                    v["msg"]
                        .as_str()
                        .map(|m| format!("{m} {}", v["details"].as_str().unwrap_or("")))
                })
                .unwrap_or_else(|| format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
            bail!(
                "CNI {command} with plugin '{plugin}' failed: {}",
                msg.trim()
            );
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout)
            .with_context(|| format!("parsing the {plugin} plugin's result"))
    }
}

/// A plugin started and waiting for its config on stdin. Dropped without one, its stdin
/// closes: it reads an empty config, fails at once without touching anything, and is reaped.
struct Spawned(Option<Running>);

impl Spawned {
    /// Hands the plugin its config and closes its stdin.
    fn give(mut self, config: &Value) -> Result<Running> {
        let mut running = self
            .0
            .take()
            .expect("a spawned plugin is given its config once");
        // A config is far smaller than a pipe's buffer: this never waits on the plugin.
        let written = running
            .child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(serde_json::to_string(config)?.as_bytes());
        if let Err(e) = written {
            let plugin = running.plugin;
            let _ = running.finish();
            return Err(e).with_context(|| format!("giving the {plugin} plugin its config"));
        }
        Ok(running)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut running) = self.0.take() {
            drop(running.child.stdin.take());
            let _ = running.child.wait();
        }
    }
}

/// The CPU nice value the plugins run at: ahead of the agents and etcd. A pod's ADD is
/// what its caller waits for, and at bring-up it is the last step after the election,
/// run while every worker's agents and etcd answer each other on the same cores. In two
/// sittings of 45 alternate runs of the default scenario (`bench_bringup`), the part
/// after the election took a median of 57 and 62 ms with the plugins at 0, 40 and 49 ms
/// at -10. They are short-lived, so nothing runs ahead for long. A bridge plugin started
/// ahead (see [`BEGUN_AHEAD`]) starts at this value too: raising it only when it gets its
/// config gained nothing. Where raising a priority is not allowed (a container without
/// CAP_SYS_NICE) they run at the simulator's.
pub const PLUGIN_NICE: i32 = -10;

/// The environment every plugin gets besides CNI's own variables: `GOMAXPROCS=1`, so the
/// Go runtime of a plugin (and of the host-local it runs, which inherits it) runs its
/// goroutines on one thread at a time, as etcd's members do (`etcd::member_env`). A
/// plugin does one short job; a second Go processor mostly started and woke threads on
/// the other core, and the kernel then flushes the TLB of every core the process ran on
/// at each copy-on-write fault of its start-up (`perf` shows those flushes among its
/// largest kernel costs). Over six alternate bring-ups of the default topology (`perf
/// record` of the whole machine), the 7 pods' bridge and host-local processes used 76 ms
/// of CPU a run with it, 88 ms without (bridge 50 against 57 ms, host-local 26 against
/// 31 ms); one host-local alone, 3.6 to 4.2 ms against 4.9 ms.
pub const PLUGIN_ENV: [(&str, &str); 1] = [("GOMAXPROCS", "1")];

/// Pods of one [`WorkerCni::add_all`] begun (namespace made, loopback run, bridge plugin
/// started and waiting for its config) ahead of the bridge ADD that runs: their plugins
/// start up while the ADDs before them run, and at bring-up while etcd elects. Two
/// covers every worker of the default topology; each waiting plugin is a process of its
/// own (about 0.7 MB), so a worker given many pods has only a few waiting at once.
const BEGUN_AHEAD: usize = 2;

/// What one pod of [`WorkerCni::add_all`] has got to.
enum Progress {
    Failed(anyhow::Error),
    Started {
        loopback: Result<Running>,
        bridge: Option<Result<Value>>,
    },
}

/// Paths the flannel plugin logic keeps per worker.
pub struct WorkerCni {
    pub worker_ns: String,
    pub subnet_file: PathBuf,
    /// Where the rendered delegate config of each container is kept for DEL.
    pub data_dir: PathBuf,
    /// host-local's per-worker allocation directory.
    pub ipam_dir: PathBuf,
    /// The plugins' directory (CNI_PATH), absolute, so each plugin is started by its path
    /// without a walk of PATH.
    pub bin_dir: PathBuf,
}

impl WorkerCni {
    pub fn conf(&self) -> Value {
        flannel_conf(&self.subnet_file, &self.data_dir)
    }

    /// Starts one plugin binary inside the worker's namespace, the way a runtime does, and
    /// hands it its config.
    fn start(
        &self,
        plugin: &'static str,
        command: &'static str,
        pod: &Pod,
        ifname: &str,
        config: &Value,
    ) -> Result<Running> {
        self.spawn(plugin, command, pod, ifname)?.give(config)
    }

    /// Starts one plugin binary inside the worker's namespace with its environment; it
    /// waits for its config on stdin (CNI's skeleton reads all of stdin before anything
    /// else), so its start-up can overlap other work until [`Spawned::give`].
    fn spawn(
        &self,
        plugin: &'static str,
        command: &'static str,
        pod: &Pod,
        ifname: &str,
    ) -> Result<Spawned> {
        let bin = self.bin_dir.join(plugin);
        if !bin.exists() {
            bail!(
                "CNI plugin {} is missing: install it with `apt-get install containernetworking-plugins`",
                bin.display()
            );
        }
        let mut cmd = crate::netns::process::command_net_only(
            Some(&self.worker_ns),
            &bin.display().to_string(),
        )?;
        cmd.priority(PLUGIN_NICE);
        cmd.command()
            .env_clear()
            .envs(PLUGIN_ENV)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.id)
            .env("CNI_NETNS", &pod.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        Ok(Spawned(Some(Running {
            plugin,
            command,
            child,
        })))
    }

    /// CNI ADD of one container: see [`WorkerCni::add_all`].
    pub fn add(&self, pod: &Pod) -> Result<Attachment> {
        self.add_all(
            std::slice::from_ref(pod),
            |_| ControlFlow::Continue(Ok(())),
            || Ok(()),
        )
        .pop()
        .expect("one pod, one result")
    }

    /// CNI ADD of containers on this worker: loopback for `lo`, the flannel-delegated
    /// bridge for `eth0`. A pod's two plugins run side by side, as containerd attaches a
    /// pod's networks (they touch different interfaces). Up to [`BEGUN_AHEAD`] pods are
    /// begun before the first gets its config: each one's namespace made (by `prepare(i)`,
    /// which may also say stop), its loopback run and its bridge plugin started, waiting
    /// for its config; as each bridge ADD gets its config the next pod is begun. At
    /// bring-up that is while etcd elects and the worker's agent waits for its lease, so
    /// the part after the election holds only the bridge ADDs. The bridge ADDs get their
    /// config one after another in the order given, so host-local hands out addresses in
    /// that order, the same on every run. The config comes from the worker's subnet.env,
    /// read after `ready()` returns. A pod whose loopback or bridge ADD failed is DELeted
    /// again, so the worker keeps nothing of it (its namespace is the caller's). One
    /// result per pod begun, in order.
    pub fn add_all(
        &self,
        pods: &[Pod],
        mut prepare: impl FnMut(usize) -> ControlFlow<(), Result<()>>,
        ready: impl FnOnce() -> Result<()>,
    ) -> Vec<Result<Attachment>> {
        let lo = json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"});
        let mut progress: Vec<Progress> = Vec::new();
        // Pods begun whose bridge plugin waits for its config, oldest first.
        let mut waiting: VecDeque<(usize, Result<Spawned>)> = VecDeque::new();
        // Set once `prepare` says stop: no later pod is begun, and none has a result.
        let stopped = std::cell::Cell::new(false);
        // Begins pods until BEGUN_AHEAD plugins wait for their config (a pod whose
        // namespace could not be made does not count), all pods are begun, or `prepare`
        // says stop.
        let mut begin_more =
            |progress: &mut Vec<Progress>, waiting: &mut VecDeque<(usize, Result<Spawned>)>| {
                while !stopped.get() && progress.len() < pods.len() && waiting.len() < BEGUN_AHEAD {
                    let i = progress.len();
                    match prepare(i) {
                        ControlFlow::Break(()) => stopped.set(true),
                        ControlFlow::Continue(Err(e)) => progress.push(Progress::Failed(e)),
                        ControlFlow::Continue(Ok(())) => {
                            let loopback = self.start("loopback", "ADD", &pods[i], "lo", &lo);
                            waiting.push_back((i, self.spawn("bridge", "ADD", &pods[i], "eth0")));
                            progress.push(Progress::Started {
                                loopback,
                                bridge: None,
                            });
                        }
                    }
                }
            };
        begin_more(&mut progress, &mut waiting);
        let delegate = if waiting.is_empty() {
            None
        } else {
            Some(ready().and_then(|()| self.delegate()))
        };
        let mut bridge_running: Option<(usize, Result<Running>)> = None;
        while let Some((i, spawned)) = waiting.pop_front() {
            let config = match delegate.as_ref().expect("a pod was begun") {
                Ok(config) => config,
                Err(e) => {
                    // Without a config no later pod can be attached: none is begun.
                    set_bridge(&mut progress[i], Err(anyhow!("{e:#}")));
                    while progress.len() < pods.len() && !stopped.get() {
                        progress.push(Progress::Failed(anyhow!("{e:#}")));
                    }
                    continue;
                }
            };
            let bridge = self.keep(&pods[i], config).and(spawned);
            // The previous bridge ADD ends before this one gets its config: addresses stay
            // in order.
            if let Some((j, run)) = bridge_running.take() {
                set_bridge(&mut progress[j], run.and_then(Running::finish));
            }
            bridge_running = Some((i, bridge.and_then(|b| b.give(config))));
            begin_more(&mut progress, &mut waiting);
        }
        if let Some((j, run)) = bridge_running.take() {
            set_bridge(&mut progress[j], run.and_then(Running::finish));
        }
        progress
            .into_iter()
            .zip(pods)
            .map(|(p, pod)| {
                let (loopback, bridge) = match p {
                    Progress::Failed(e) => return Err(e),
                    Progress::Started { loopback, bridge } => (loopback, bridge),
                };
                let attached = loopback
                    .and_then(Running::finish)
                    .and(bridge.expect("every started bridge ADD was waited for"))
                    .and_then(|result| attachment(&result));
                if attached.is_err() {
                    let _ = self.del(pod);
                }
                attached
            })
            .collect()
    }

    /// The bridge config for this worker's pods, from its current subnet.env.
    fn delegate(&self) -> Result<Value> {
        let env = read_subnet_env(&self.subnet_file)?;
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(render_delegate(&self.conf(), &env, &self.ipam_dir))
    }

    /// Keeps a container's config before its ADD, as the flannel plugin does, so a failed
    /// ADD can still be DELeted.
    fn keep(&self, pod: &Pod, delegate: &Value) -> Result<()> {
        let kept = self.data_dir.join(&pod.id);
        std::fs::write(&kept, serde_json::to_vec_pretty(delegate)?)
            .with_context(|| format!("writing {}", kept.display()))
    }

    /// CNI DEL with the config kept at ADD time.
    pub fn del(&self, pod: &Pod) -> Result<()> {
        let kept = self.data_dir.join(&pod.id);
        let delegate: Value = match std::fs::read(&kept) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => return Ok(()),
        };
        self.start("bridge", "DEL", pod, "eth0", &delegate)?
            .finish()?;
        let _ = std::fs::remove_file(kept);
        Ok(())
    }
}

fn set_bridge(p: &mut Progress, result: Result<Value>) {
    if let Progress::Started { bridge, .. } = p {
        *bridge = Some(result);
    }
}

/// The pod's address from the bridge plugin's result.
fn attachment(result: &Value) -> Result<Attachment> {
    let addr = result["ips"][0]["address"]
        .as_str()
        .ok_or_else(|| anyhow!("the bridge plugin returned no IP address: {result}"))?;
    let (ip, _prefix) = addr
        .split_once('/')
        .ok_or_else(|| anyhow!("unexpected address '{addr}' from the bridge plugin"))?;
    Ok(Attachment { ip: ip.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.12.16.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn parses_subnet_env() {
        let e = parse_subnet_env(ENV).unwrap();
        assert_eq!(e.network, "11.0.0.0/8");
        assert_eq!(e.subnet, "11.12.16.1/20");
        assert_eq!(e.mtu, 1450);
        assert!(e.ipmasq);
    }

    #[test]
    fn missing_key_is_named() {
        let err = parse_subnet_env("FLANNEL_NETWORK=11.0.0.0/8\n").unwrap_err();
        assert!(err.to_string().contains("FLANNEL_SUBNET"), "{err}");
    }

    #[test]
    fn delegate_has_flannel_shape() {
        let env = parse_subnet_env(ENV).unwrap();
        let conf = flannel_conf(Path::new("/x/subnet.env"), Path::new("/x/flannel"));
        let d = render_delegate(&conf, &env, Path::new("/x/ipam"));
        assert_eq!(d["type"], "bridge");
        assert_eq!(d["name"], "cbr0");
        assert_eq!(d["mtu"], 1450);
        assert_eq!(
            d["ipMasq"], false,
            "flannel masquerades, so the bridge must not"
        );
        assert_eq!(d["isGateway"], true);
        assert_eq!(d["isDefaultGateway"], true);
        assert_eq!(d["hairpinMode"], true);
        assert_eq!(d["ipam"]["type"], "host-local");
        assert_eq!(d["ipam"]["ranges"][0][0]["subnet"], "11.12.16.0/20");
        assert_eq!(d["ipam"]["routes"][0]["dst"], "11.0.0.0/8");
        assert_eq!(d["ipam"]["dataDir"], "/x/ipam");
    }
}
