//! The trace's kernel side in each namespace: an `nft monitor trace` whose output a
//! thread collects, and the trace tables, removed even when the walk fails.

use crate::components::nft as nftcmd;
use crate::components::trace as tr;
use crate::netns::process;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

/// NFNLGRP_NFTRACE (9) as a bit of /proc/net/netlink's group mask.
const NFTRACE_GROUP_BIT: u32 = 1 << 8;

/// An `nft monitor trace` running in one namespace, its output collected by a thread.
pub(super) struct Monitor {
    pub(super) ns: String,
    child: Child,
    out: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub(super) fn start(ns: &str) -> Result<Monitor> {
        // Line-buffered: a killed nft would lose a block-buffered tail.
        let mut cmd = process::command_in(Some(ns), "stdbuf")?;
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        let writer2 = writer.try_clone()?;
        cmd.args(["-oL", nftcmd::nft_program()?, "monitor", "trace"])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        let child = cmd
            .spawn()
            .context("starting `nft monitor trace` (install nftables and coreutils)")?;
        drop(cmd);
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(Monitor {
            ns: ns.to_string(),
            child,
            out,
            reader: Some(reader),
        })
    }

    /// True once the process holds a netlink socket subscribed to trace events.
    pub(super) fn subscribed(&self) -> bool {
        let pid = self.child.id();
        let mut inodes = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in dir.flatten() {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    let t = t.to_string_lossy().into_owned();
                    if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                        inodes.push(i.to_string());
                    }
                }
            }
        }
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")) else {
            return false;
        };
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 10
                && f[1] == "12"
                && u32::from_str_radix(f[3], 16).is_ok_and(|g| g & NFTRACE_GROUP_BIT != 0)
                && inodes.iter().any(|i| i == f[9])
        })
    }

    pub(super) fn len(&self) -> usize {
        self.out.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Ends the monitor (its process group, by the pid we started) and returns its output.
    pub(super) fn stop(mut self) -> String {
        self.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let s = self.out.lock().unwrap_or_else(|e| e.into_inner());
        s.clone()
    }

    fn kill(&mut self) {
        process::kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.kill();
        }
    }
}

/// Removes the trace table from every namespace it was added to, even when the walk fails.
pub(super) struct Tables(pub(super) Vec<String>);

impl Tables {
    pub(super) fn remove(&mut self) -> Result<()> {
        let mut first_err = None;
        for ns in self.0.drain(..) {
            if let Err(e) = nftcmd::apply(Some(&ns), &tr::delete_text(), "removing the trace table")
            {
                first_err.get_or_insert(e.context(format!("in namespace {ns}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
