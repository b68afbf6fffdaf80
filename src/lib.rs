//! knetsim: Kubernetes networking built for real, in miniature, on one Linux machine.
//!
//! Layers, top to bottom (each depends only on the ones below it):
//! - [`cli`]: the `knetsim` command line (clap).
//! - [`script`]: the Rhai lesson runner and its API.
//! - [`console`]: the interactive console (rustyline).
//! - [`sim`]: the model and lifecycle: Sim > Cluster > Worker / EtcdNode > Container.
//! - [`components`]: protocol knowledge: etcd, flannel agent, CNI, kube-proxy, Skupper router.
//! - [`netns`]: named network namespaces, netlink, processes inside namespaces, teardown record.
//!
//! Beside them: [`interrupt`] (Ctrl-C and SIGTERM), [`wait`] (every readiness wait) and
//! [`closer`] (descriptors whose close waits on the kernel).

pub mod cli;
pub mod closer;
pub mod components;
pub mod console;
pub mod interrupt;
pub mod netns;
pub(crate) mod parallel;
pub mod script;
pub mod sim;
pub mod ui;
pub mod wait;
