//! The router's counters and their Prometheus text exposition (/metrics).

use super::Router;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    pub tcp_accepted: AtomicU64,
    pub tcp_connected: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_routed: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub client_deliveries: AtomicU64,
    pub config_reloads: AtomicU64,
    pub links_up_total: AtomicU64,
    pub links_refused: AtomicU64,
    pub per_address: Mutex<BTreeMap<String, AddressCounters>>,
}

#[derive(Default, Clone)]
pub struct AddressCounters {
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Router {
    pub fn count_address(&self, address: &str, f: impl FnOnce(&mut AddressCounters)) {
        let mut m = self.metrics.per_address.lock().unwrap();
        f(m.entry(address.to_string()).or_default());
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let (links, flows, routes) = {
            let st = self.state.lock().unwrap();
            (st.neighbors.len(), st.flows.len(), st.addr_routes.len())
        };
        let mut s = String::new();
        let mut g = |name: &str, help: &str, ty: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {ty}\n{name}{{router=\"{}\"}} {v}\n",
                self.id
            ));
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(
            "skrouter_links",
            "Inter-router links up",
            "gauge",
            links as u64,
        );
        g(
            "skrouter_links_up_total",
            "Inter-router links established",
            "counter",
            ld(&m.links_up_total),
        );
        g(
            "skrouter_links_refused_total",
            "Inter-router connections refused (TLS or protocol)",
            "counter",
            ld(&m.links_refused),
        );
        g(
            "skrouter_addresses_reachable",
            "Service addresses with a route",
            "gauge",
            routes as u64,
        );
        g(
            "skrouter_tcp_flows",
            "TCP flow ends open on this router",
            "gauge",
            flows as u64,
        );
        g(
            "skrouter_tcp_accepted_total",
            "Connections accepted on tcpListeners",
            "counter",
            ld(&m.tcp_accepted),
        );
        g(
            "skrouter_tcp_connected_total",
            "Connections opened by tcpConnectors",
            "counter",
            ld(&m.tcp_connected),
        );
        g(
            "skrouter_tcp_refused_total",
            "Connections that could not be carried",
            "counter",
            ld(&m.tcp_refused),
        );
        g(
            "skrouter_bytes_in_total",
            "Bytes read from TCP peers",
            "counter",
            ld(&m.bytes_in),
        );
        g(
            "skrouter_bytes_out_total",
            "Bytes written to TCP peers",
            "counter",
            ld(&m.bytes_out),
        );
        g(
            "skrouter_messages_routed_total",
            "AMQP messages routed",
            "counter",
            ld(&m.messages_routed),
        );
        g(
            "skrouter_messages_dropped_total",
            "Messages without a route",
            "counter",
            ld(&m.messages_dropped),
        );
        g(
            "skrouter_client_deliveries_total",
            "Messages from AMQP clients routed by address",
            "counter",
            ld(&m.client_deliveries),
        );
        g(
            "skrouter_config_reloads_total",
            "Configuration reloads applied (SIGHUP)",
            "counter",
            ld(&m.config_reloads),
        );
        let per = m.per_address.lock().unwrap();
        s.push_str("# HELP skrouter_address_connections_total TCP connections per service address\n# TYPE skrouter_address_connections_total counter\n");
        for (a, c) in per.iter() {
            s.push_str(&format!(
                "skrouter_address_connections_total{{router=\"{}\",address=\"{a}\"}} {}\n",
                self.id, c.connections
            ));
        }
        s.push_str("# HELP skrouter_address_bytes_total Bytes per service address and direction\n# TYPE skrouter_address_bytes_total counter\n");
        for (a, c) in per.iter() {
            s.push_str(&format!(
                "skrouter_address_bytes_total{{router=\"{}\",address=\"{a}\",direction=\"in\"}} {}\n",
                self.id, c.bytes_in
            ));
            s.push_str(&format!(
                "skrouter_address_bytes_total{{router=\"{}\",address=\"{a}\",direction=\"out\"}} {}\n",
                self.id, c.bytes_out
            ));
        }
        s
    }
}
