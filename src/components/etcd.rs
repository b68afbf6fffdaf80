//! etcd members: real etcd processes, one per namespace.
