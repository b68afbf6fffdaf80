//! nftables for the components, two ways:
//!
//! - [`batch`] (with [`expr`]): transactions written as nf_tables netlink messages and sent
//!   in one `sendmsg`, no process. flannel's table, kube-proxy's empty table at start-up
//!   and its bulk balancer rules go this way.
//! - [`run`] / [`apply`] / [`list_table_json`]: the `nft` program, in a namespace (or the
//!   current one), a transaction on stdin or a listing on stdout, and nft's own message
//!   when it refuses: kube-proxy's readable service transactions and every listing.

pub mod batch;
pub mod expr;
pub mod session;
pub mod wire;

use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::OnceLock;

/// What to say when nft is not installed (the package that has it).
const INSTALL_NFT: &str = "install it with `apt-get install nftables`";

/// The absolute path of `nft` on this process's PATH, looked up once: spawning by bare
/// name walks PATH on every run (seven failed execs per run on these machines).
pub(crate) fn nft_program() -> Result<&'static str> {
    static NFT: OnceLock<Option<String>> = OnceLock::new();
    NFT.get_or_init(|| {
        crate::netns::process::which("nft")
            .filter(|p| p.is_absolute())
            .and_then(|p| p.to_str().map(str::to_string))
    })
    .as_deref()
    .ok_or_else(|| anyhow!("starting nft: not found on PATH ({INSTALL_NFT})"))
}

/// What nft printed on stderr when it exited with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Runs `nft ARGS` in namespace `ns` (None: the current one) with `input` on stdin.
/// Returns stdout, or nft's message when it refused; an error only when nft could not run.
pub fn run(
    ns: Option<&str>,
    args: &[&str],
    input: Option<&str>,
) -> Result<std::result::Result<String, Refused>> {
    let mut cmd = crate::netns::process::command_net_only(ns, nft_program()?)?;
    cmd.command()
        .arg0("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting nft ({INSTALL_NFT})"))?;
    let writer = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            // Write from a thread so a large transaction cannot deadlock against nft's output.
            let text = text.to_string();
            Some(std::thread::spawn(move || stdin.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let out = crate::netns::process::output_reaping_later(child).context("waiting for nft")?;
    if let Some(w) = writer {
        // A write error means nft exited early; its exit status and message say why.
        let _ = w.join();
    }
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    })
}

/// Applies `text` atomically with `nft -f -` in `ns`. `what` names the transaction in the
/// error ("the kube-proxy transaction"); nft changes nothing when it refuses.
pub fn apply(ns: Option<&str>, text: &str, what: &str) -> Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    match run(ns, &["-f", "-"], Some(text))? {
        Ok(_) => Ok(()),
        Err(Refused(e)) => {
            let first: String = e.lines().take(6).collect::<Vec<_>>().join("\n");
            bail!("nft refused {what} (nothing was changed):\n{first}")
        }
    }
}

/// `nft -j list table ip NAME` in `ns`; None when the table does not exist.
pub fn list_table_json(ns: Option<&str>, table: &str) -> Result<Option<String>> {
    match run(ns, &["-j", "list", "table", "ip", table], None)? {
        Ok(s) => Ok(Some(s)),
        Err(Refused(e))
            if e.contains("No such file or directory") || e.contains("does not exist") =>
        {
            Ok(None)
        }
        Err(Refused(e)) => bail!("reading table ip {table} with nft: {e}"),
    }
}
