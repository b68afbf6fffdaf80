//! CNI: the flannel CNI plugin logic, delegating to the real bridge/host-local/loopback plugins.
