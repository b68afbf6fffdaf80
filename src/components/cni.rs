//! CNI: the flannel CNI plugin's logic (read subnet.env, render a delegated `bridge`
//! config with host-local IPAM, keep it per container for DEL), executing Debian's real
//! plugins from `/usr/lib/cni` inside the worker's namespace, as a kubelet's container
//! runtime would.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
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

/// Runs one plugin binary inside namespace `worker_ns`, the way a runtime does.
fn exec_plugin(
    worker_ns: &str,
    plugin: &str,
    command: &str,
    container_id: &str,
    netns_path: &Path,
    ifname: &str,
    config: &Value,
) -> Result<Value> {
    let dir = cni_path();
    let bin = Path::new(&dir).join(plugin);
    if !bin.exists() {
        bail!(
            "CNI plugin {} is missing: install it with `apt-get install containernetworking-plugins`",
            bin.display()
        );
    }
    let mut cmd =
        crate::netns::process::command_net_only(Some(worker_ns), &bin.display().to_string())?;
    cmd.command()
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns_path)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &dir)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(config)?.as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // CNI errors come as JSON {code, msg, details} on stdout.
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
    serde_json::from_str(&stdout).with_context(|| format!("parsing the {plugin} plugin's result"))
}

/// Paths the flannel plugin logic keeps per worker.
pub struct WorkerCni {
    pub worker_ns: String,
    pub subnet_file: PathBuf,
    /// Where the rendered delegate config of each container is kept for DEL.
    pub data_dir: PathBuf,
    /// host-local's per-worker allocation directory.
    pub ipam_dir: PathBuf,
}

impl WorkerCni {
    pub fn conf(&self) -> Value {
        flannel_conf(&self.subnet_file, &self.data_dir)
    }

    /// CNI ADD: loopback for `lo`, then the flannel-delegated bridge for `eth0`.
    pub fn add(&self, container_id: &str, netns_path: &Path) -> Result<Attachment> {
        let env = read_subnet_env(&self.subnet_file)?;
        let delegate = render_delegate(&self.conf(), &env, &self.ipam_dir);
        std::fs::create_dir_all(&self.data_dir)?;
        // Kept before ADD, as the flannel plugin does, so a failed ADD can still be DELeted.
        std::fs::write(
            self.data_dir.join(container_id),
            serde_json::to_vec_pretty(&delegate)?,
        )?;
        let lo = json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"});
        exec_plugin(
            &self.worker_ns,
            "loopback",
            "ADD",
            container_id,
            netns_path,
            "lo",
            &lo,
        )?;
        let result = exec_plugin(
            &self.worker_ns,
            "bridge",
            "ADD",
            container_id,
            netns_path,
            "eth0",
            &delegate,
        )?;
        let addr = result["ips"][0]["address"]
            .as_str()
            .ok_or_else(|| anyhow!("the bridge plugin returned no IP address: {result}"))?;
        let (ip, _prefix) = addr
            .split_once('/')
            .ok_or_else(|| anyhow!("unexpected address '{addr}' from the bridge plugin"))?;
        Ok(Attachment { ip: ip.to_string() })
    }

    /// CNI DEL with the config kept at ADD time.
    pub fn del(&self, container_id: &str, netns_path: &Path) -> Result<()> {
        let kept = self.data_dir.join(container_id);
        let delegate: Value = match std::fs::read(&kept) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => return Ok(()),
        };
        exec_plugin(
            &self.worker_ns,
            "bridge",
            "DEL",
            container_id,
            netns_path,
            "eth0",
            &delegate,
        )?;
        let _ = std::fs::remove_file(kept);
        Ok(())
    }
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
