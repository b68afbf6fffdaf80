//! Components: the protocol knowledge of each piece of a cluster. They never call up into
//! `sim`, `script` or `console`.

pub mod cni;
pub mod echo;
pub mod etcd;
pub mod flannel;
pub mod ingress;
pub mod kubeproxy;
pub mod nft;
pub mod skupper;
pub mod topology;
pub mod trace;
