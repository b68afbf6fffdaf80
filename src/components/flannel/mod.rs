//! `knetsim flanneld`: a flannel-compatible node agent (etcd v3 subnet manager + vxlan
//! backend). Owned by the flannel work; see the module docs inside.

use clap::Args;

/// Flags named like flanneld's own.
#[derive(Debug, Clone, Args)]
pub struct FlanneldArgs {
    /// Comma-separated etcd client URLs.
    #[arg(long = "etcd-endpoints", default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// Interface name or IP address used for inter-host communication.
    #[arg(long)]
    pub iface: Option<String>,
    /// Where the subnet file is written.
    #[arg(long = "subnet-file", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: String,
    /// etcd prefix of the flannel configuration and leases.
    #[arg(long = "etcd-prefix", default_value = "/coreos.com/network")]
    pub etcd_prefix: String,
    /// Set up IP masquerade for traffic leaving the flannel network.
    #[arg(long = "ip-masq")]
    pub ip_masq: bool,
}

pub fn run(_args: FlanneldArgs) -> anyhow::Result<()> {
    anyhow::bail!("flanneld: not implemented yet")
}
