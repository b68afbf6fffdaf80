//! `knetsim kube-proxy`: programs a worker's nftables from the Service state kept in etcd,
//! in the layout of kube-proxy's nftables mode.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct KubeProxyArgs {
    /// Comma-separated etcd client URLs.
    #[arg(long = "etcd-endpoints", default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// This node's name.
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
}

pub fn run(_args: KubeProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("kube-proxy: not implemented yet")
}
