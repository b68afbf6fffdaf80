//! flannel's network config in scripts: the `flannel` option of `cluster(...)` (a map of
//! flannel's own settings, or the path of its JSON file) and the map `C0.flannel` reports.

use super::registry::RResult;
use crate::components::flannel::config::NetConfig;
use rhai::{Dynamic, Map};

/// The `flannel` option of `cluster(id, #{ flannel: ... })`: `#{ network: ..., vni: ... }` or
/// `"path.json"`, checked as a whole before anything starts.
pub(super) fn from_option(id: &str, v: &Dynamic) -> RResult<NetConfig> {
    use crate::components::flannel::config::{self, OptValue};
    let cfg = if let Some(path) = v.read_lock::<rhai::ImmutableString>() {
        config::from_file(std::path::Path::new(path.as_str()))
    } else if let Some(m) = v.read_lock::<Map>() {
        let opts: Vec<(String, OptValue)> = m
            .iter()
            .map(|(k, v)| {
                let value = match v.as_int() {
                    Ok(n) => OptValue::Int(n),
                    Err(_) => OptValue::Text(v.to_string()),
                };
                (k.to_string(), value)
            })
            .collect();
        config::from_options(&opts)
    } else {
        return Err(format!(
            "cluster(\"{id}\", ...): 'flannel' must be a map such as #{{ network: \"12.0.0.0/16\", backend: \"host-gw\" }} \
             or the path of a flannel network config JSON file, got {}",
            v.type_name()
        )
        .into());
    };
    cfg.map_err(|e| format!("cluster(\"{id}\", ...): {e:#}").into())
}

/// What `C0.flannel` reports: the config's values, the device and the JSON in etcd.
pub(super) fn to_map(cfg: &NetConfig, device: &str) -> Map {
    let mut m = Map::new();
    m.insert("network".into(), cfg.network.to_string().into());
    m.insert("subnet_len".into(), i64::from(cfg.subnet_len).into());
    m.insert("subnet_min".into(), cfg.subnet_min.to_string().into());
    m.insert("subnet_max".into(), cfg.subnet_max.to_string().into());
    m.insert("backend".into(), cfg.backend.kind().into());
    if let Some(v) = cfg.vxlan() {
        m.insert("vni".into(), i64::from(v.vni).into());
        m.insert("port".into(), i64::from(v.port).into());
    }
    m.insert("device".into(), device.into());
    m.insert("json".into(), cfg.to_json().into());
    m
}
