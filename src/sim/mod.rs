//! The model and lifecycle: Sim > Cluster > Worker / EtcdNode > Container.
