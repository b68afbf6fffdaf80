//! The lessons' echo servers: `knetsim echo-server` in a pod, a daemon the simulator
//! records so teardown (or deleting the pod) stops it.

use super::listen::{port_holder, wait_listening};
use crate::components::echo;
use crate::sim::{DaemonKind, DaemonSpec, Worker};
use anyhow::{anyhow, bail, Result};
use std::net::{Ipv4Addr, SocketAddr};

impl Worker {
    /// Starts `knetsim echo-server` in pod `container`, answering every GET on `port`
    /// with `message`; returns once it accepts connections. Teardown (or deleting the
    /// pod) stops it.
    pub fn echo_server(&self, container: &str, port: i64, message: &str) -> Result<u32> {
        let info = self.container(container)?;
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            anyhow!(
                "echo server port {port} is not a port: use a number from 1 to 65535, e.g. 8000"
            )
        })?;
        echo::check_message(message)?;
        if let Some(who) = port_holder(&info.ns, port)? {
            bail!(
                "port {port} in container '{container}' is already in use{who}: pick another port for its echo server"
            );
        }
        let log = self.dir().join(format!("{container}-echo-{port}.log"));
        let args = vec![
            "echo-server".to_string(),
            "--port".into(),
            port.to_string(),
            // One argument, so a message starting with '-' is not taken for an option.
            format!("--message={message}"),
        ];
        let spawned = self.sim.spawn_daemon(DaemonSpec::new(
            DaemonKind::EchoServer,
            &self.name(),
            &info.ns,
            &self.sim.knetsim_exe(),
            args,
            log.clone(),
            format!(
                "echo-server {message:?} on {container}:{port} ({})",
                self.name()
            ),
        ))?;
        let (pid, start) = (spawned.pid, spawned.start);
        let ip: Ipv4Addr = info.ip.parse().unwrap_or(Ipv4Addr::LOCALHOST);
        let what = format!("the echo server in '{container}'");
        if let Err(e) = wait_listening(
            &info.ns,
            SocketAddr::from((ip, port)),
            (pid, start),
            &what,
            &log,
        ) {
            let _ = self.sim.stop_daemon(spawned.id);
            return Err(e);
        }
        Ok(pid)
    }
}
