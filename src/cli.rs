//! The `knetsim` command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "knetsim", version, about = "Kubernetes networking, built for real in miniature")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the flannel-compatible node agent (started by the simulator in each worker).
    Flanneld(crate::components::flannel::FlanneldArgs),
    /// Run the nftables kube-proxy for one worker (started by the simulator).
    #[command(name = "kube-proxy")]
    KubeProxy(crate::components::kubeproxy::KubeProxyArgs),
    /// Run a Skupper-style router (started by the simulator).
    Skrouterd(crate::components::skupper::SkrouterdArgs),
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Flanneld(a)) => crate::components::flannel::run(a),
        Some(Command::KubeProxy(a)) => crate::components::kubeproxy::run(a),
        Some(Command::Skrouterd(a)) => crate::components::skupper::run(a),
        None => Ok(()),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
