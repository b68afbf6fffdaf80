//! Console commands that run live: `C0w1 ping C0w2` and a `py` line that is one exec call.
//! On the console's terminal they get a pseudo-terminal of their own; without one they
//! stream through a pipe. No time limit (scripts keep theirs): the user ends them.

use crate::netns::process::{self, Ended};
use crate::netns::pty;
use crate::script::{LineResult, ScriptSession};
use crate::sim::{Node, Worker};
use crate::ui;
use anyhow::Result;
use std::io::Write;
use std::process::Command;

/// Where a live command runs.
pub enum Target {
    Node(Node),
    Container(Worker, String),
}

fn prepare(target: &Target, cmd: &str) -> Result<Command> {
    let (ns, place) = match target {
        Target::Node(Node::Worker(w)) => {
            w.require_started()?;
            (w.ns(), w.exec_place()?)
        }
        Target::Node(Node::Etcd(e)) => {
            let ns = e.ns();
            if !crate::netns::exists(&ns) {
                anyhow::bail!("{} is not running yet: call start() first", e.name());
            }
            (ns, e.exec_place()?)
        }
        Target::Container(w, name) => {
            let info = w.container(name)?;
            (info.ns, w.exec_place()?)
        }
    };
    process::shell_command(Some(&ns), cmd, &place.env(), &place.setup())
}

/// Runs `cmd` on `target`, live, then says how it ended when that is not plain success.
pub fn run(target: &Target, cmd: &str, out: &mut dyn Write, terminal: bool) {
    let command = match prepare(target, cmd) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "{}", ui::red(&format!("error: {e:#}")));
            return;
        }
    };
    let _ = out.flush();
    let cancel = crate::interrupt::flag();
    let ended = if terminal {
        let _ = std::io::stdout().flush();
        pty::run_on_pty(command, 0, 1, cancel)
    } else {
        pty::run_streaming(command, out, cancel)
    };
    let note = match ended {
        Ok(Ended::Exited(0)) => None,
        Ok(Ended::Exited(n)) => Some(format!("exit status {n}")),
        Ok(Ended::Signalled(s)) if s == libc::SIGINT => Some("interrupted (Ctrl-C)".into()),
        Ok(Ended::Signalled(s)) => Some(format!("killed by signal {s}")),
        Ok(Ended::Cancelled) => {
            crate::interrupt::take();
            Some("interrupted (Ctrl-C)".into())
        }
        Ok(Ended::TimedOut) => Some("timed out".into()),
        Err(e) => Some(format!("error: {e:#}")),
    };
    if let Some(n) = note {
        let _ = writeln!(out, "{}", ui::yellow(&n));
    }
    let _ = out.flush();
}

/// `py C0w1.exec_container("c1", "ping ...")`: the arguments are evaluated as Rhai, the
/// command runs live. Arguments of another shape go to Rhai as the whole line, which
/// says what is wrong.
pub fn exec_call(
    session: &mut ScriptSession,
    node: &str,
    method: &str,
    args: &str,
    out: &mut dyn Write,
    terminal: bool,
) {
    let whole = format!("{node}.{method}({args})");
    let values: Option<Vec<String>> = match session.eval_line(&format!("[{args}]")) {
        LineResult::Value(v) => v.into_array().ok().and_then(|a| {
            a.into_iter()
                .map(|x| x.into_immutable_string().ok().map(|s| s.to_string()))
                .collect()
        }),
        _ => None,
    };
    let target = match (session.sim().node(node), method, values.as_deref()) {
        (Some(n), "exec", Some([cmd])) => Some((Target::Node(n), cmd.clone())),
        (Some(Node::Worker(w)), "exec_container", Some([c, cmd])) => {
            Some((Target::Container(w, c.clone()), cmd.clone()))
        }
        _ => None,
    };
    match target {
        Some((t, cmd)) => run(&t, &cmd, out, terminal),
        None => match session.eval_line(&whole) {
            LineResult::Value(v) => {
                let text = crate::script::show(&v);
                let _ = write!(out, "{text}");
                if !text.is_empty() && !text.ends_with('\n') {
                    let _ = writeln!(out);
                }
            }
            LineResult::Error(msg) => {
                let _ = write!(out, "{msg}");
            }
            LineResult::Interrupted(p) => {
                let _ = write!(out, "{}", p.unwrap_or_default());
            }
        },
    }
}
