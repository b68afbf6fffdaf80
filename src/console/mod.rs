//! The interactive console: rustyline with history and completion; console commands
//! (`help`, `nodes`, `pingall`, `exit`); mininet-style `C0w1 ifconfig` lines; and Rhai
//! in the same engine and scope as the script that ran before it.

pub mod complete;
pub mod line;
mod trace;

use crate::script::{api, LineResult, ScriptSession};
use crate::sim::Sim;
use crate::ui;
use complete::{needs_more, ConsoleHelper};
use line::{classify, Line, COMMANDS};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

const PROMPT: &str = "knetsim> ";
const MORE: &str = "     ...> ";

/// What the console loop does after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Exit,
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".knetsim_history"))
}

/// Runs the console until `exit`, `quit` or Ctrl-D. The caller tears down afterwards.
pub fn run(session: &mut ScriptSession) -> anyhow::Result<()> {
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut ed: Editor<ConsoleHelper, DefaultHistory> = Editor::with_config(config)?;
    ed.set_helper(Some(ConsoleHelper {
        nodes: Vec::new(),
        vars: Vec::new(),
    }));
    let hist = history_file();
    if let Some(h) = &hist {
        let _ = ed.load_history(h);
    }
    println!(
        "{}",
        ui::dim("knetsim console: `help` lists commands and the API; `exit` or Ctrl-D leaves and tears down.")
    );
    let parser = rhai::Engine::new_raw();
    'outer: loop {
        session.refresh_node_variables();
        let nodes = session.sim().node_names();
        if let Some(h) = ed.helper_mut() {
            h.nodes = nodes.clone();
            h.vars = session.variable_names();
        }
        let mut input = match ed.readline(PROMPT) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        while needs_more(&input, &nodes, &parser) {
            match ed.readline(MORE) {
                Ok(l) => {
                    input.push('\n');
                    input.push_str(&l);
                }
                Err(ReadlineError::Interrupted) => continue 'outer,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if !input.trim().is_empty() {
            let _ = ed.add_history_entry(input.as_str());
            if let Some(h) = &hist {
                let _ = ed.save_history(h);
            }
        }
        // A Ctrl-C pressed while nothing ran must not stop the next command.
        crate::interrupt::take();
        let mut out = std::io::stdout();
        if handle(session, &input, &mut out) == Flow::Exit || crate::interrupt::terminated() {
            break;
        }
    }
    println!(
        "{}",
        ui::dim("leaving the console; tearing the simulation down")
    );
    Ok(())
}

/// Runs one console input, writing what it shows to `out`.
pub fn handle(session: &mut ScriptSession, input: &str, out: &mut dyn Write) -> Flow {
    if let Some(r) = trace::console_line(session.sim(), input) {
        let _ = match r {
            Ok(text) => write!(out, "{text}"),
            Err(e) => writeln!(out, "{}", ui::red(&format!("error: {e}"))),
        };
        return Flow::Continue;
    }
    let nodes = session.sim().node_names();
    match classify(input, &nodes) {
        Line::Empty => {}
        Line::Exit => return Flow::Exit,
        Line::Help => {
            let _ = write!(out, "{}", help_text());
        }
        Line::HelpOn(name) => {
            let _ = write!(out, "{}", crate::script::help::help_on(&name));
        }
        Line::Nodes => {
            let _ = writeln!(out, "{}", nodes_table(session.sim()));
        }
        Line::PingAll => {
            let _ = write!(out, "{}", pingall(session.sim()));
        }
        Line::Ambiguous { word, candidates } => {
            let _ = writeln!(
                out,
                "{}",
                ui::red(&format!(
                    "error: '{word}' names a node in more than one cluster: use {}",
                    candidates.join(" or ")
                ))
            );
        }
        Line::Node { node, cmd } => match session.sim().node(&node) {
            Some(n) => match n.exec(&cmd) {
                Ok(text) => {
                    let _ = write!(out, "{text}");
                    if !text.is_empty() && !text.ends_with('\n') {
                        let _ = writeln!(out);
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{}", ui::red(&format!("error: {e:#}")));
                }
            },
            None => {
                let _ = writeln!(
                    out,
                    "{}",
                    ui::red(&format!("error: there is no node '{node}'"))
                );
            }
        },
        Line::Rhai(src) => match session.eval_line(&src) {
            LineResult::Value(v) => {
                if !v.is_unit() {
                    let text = crate::script::show(&v);
                    let _ = write!(out, "{text}");
                    if !text.ends_with('\n') {
                        let _ = writeln!(out);
                    }
                }
            }
            LineResult::Error(msg) => {
                let _ = write!(out, "{msg}");
            }
            LineResult::Interrupted(partial) => match partial {
                // An exec's own output already ends with "^C (interrupted)".
                Some(p) => {
                    let _ = write!(out, "{p}");
                }
                None => {
                    let _ = writeln!(out, "{}", ui::yellow("(interrupted)"));
                }
            },
        },
    }
    let _ = out.flush();
    Flow::Continue
}

/// `help`: console commands, then the script API (from its registry).
pub fn help_text() -> String {
    let mut s = String::new();
    s.push_str("Console commands:\n");
    for (c, what) in COMMANDS {
        s.push_str(&format!("  {c:<10} {what}\n"));
    }
    s.push_str("  help NAME  one function, method or property with an example, e.g. `help exec_container`\n");
    s.push_str("  C0w1 CMD   run a shell command on a node, e.g. `C0w1 ip route`, `C0e1 etcdctl member list`\n");
    s.push_str("\nEverything else is Rhai. Every node is a variable: C0, C0w1, C0e1, ...\n\n");
    s.push_str(&crate::script::help::help_text());
    s.push_str("\nTab completes names; an unfinished line (open brace, bracket, string) continues on the next.\n");
    s
}

/// `nodes`: every node with its kind, underlay IP, state and containers.
pub fn nodes_table(sim: &Sim) -> String {
    let clusters = sim.clusters();
    if clusters.is_empty() {
        return "no clusters yet: declare one, e.g. let C0 = cluster(\"0\"); start();".to_string();
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(["node", "kind", "underlay IP", "state", "containers"]);
    for c in clusters {
        let state = |on: bool| if on { "running" } else { "declared" };
        for e in c.etcd_nodes() {
            t.add_row([
                e.name(),
                "etcd member".into(),
                e.ip().to_string(),
                state(c.is_started()).into(),
                "-".into(),
            ]);
        }
        for w in c.workers() {
            let cs: Vec<String> = w
                .containers()
                .into_iter()
                .map(|n| match w.container_ip(&n) {
                    Ok(ip) => format!("{n} {ip}"),
                    Err(_) => n,
                })
                .collect();
            t.add_row([
                w.name(),
                "worker".into(),
                w.ip().to_string(),
                state(w.is_started()).into(),
                if cs.is_empty() {
                    "-".into()
                } else {
                    cs.join(", ")
                },
            ]);
        }
    }
    t.to_string()
}

/// `pingall`: in each cluster, every container pings every other container once.
/// Prints a mininet-style matrix (`X` marks a lost ping) and the loss.
pub fn pingall(sim: &Sim) -> String {
    let mut s =
        String::from("*** Ping: every container pings every other container of its cluster once\n");
    let (mut sent, mut received) = (0usize, 0usize);
    let stop = AtomicBool::new(false);
    for c in sim.clusters() {
        let mut members = Vec::new();
        for (name, short) in c.containers() {
            if let Ok(w) = c.worker(&short) {
                if let Ok(ip) = w.container_ip(&name) {
                    members.push((name, w, ip));
                }
            }
        }
        if members.len() < 2 {
            s.push_str(&format!(
                "{}: fewer than two containers, nothing to ping\n",
                c.name()
            ));
            continue;
        }
        let rows: Vec<Vec<(String, Option<bool>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = members
                .iter()
                .map(|(src, w, _)| {
                    let (members, stop) = (&members, &stop);
                    scope.spawn(move || {
                        members
                            .iter()
                            .filter(|(dst, _, _)| dst != src)
                            .map(|(dst, _, ip)| {
                                if stop.load(Ordering::SeqCst) {
                                    return (dst.clone(), None);
                                }
                                let cmd = format!(
                                    "ping -c 1 -W 1 {ip} >/dev/null 2>&1 && echo ok || echo lost"
                                );
                                let r = w.exec_container(src, &cmd);
                                let ok = match r {
                                    Ok(o) if o.ends_with(api::INTERRUPTED_MARK) => {
                                        stop.store(true, Ordering::SeqCst);
                                        None
                                    }
                                    Ok(o) => Some(o.trim() == "ok"),
                                    Err(_) => Some(false),
                                };
                                (dst.clone(), ok)
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let width = members.iter().map(|(n, _, _)| n.len()).max().unwrap_or(1);
        for ((src, _, _), row) in members.iter().zip(rows) {
            let mut line = format!("{} {src:<width$} ->", c.name());
            for (dst, ok) in row {
                match ok {
                    Some(true) => {
                        sent += 1;
                        received += 1;
                        line.push_str(&format!(" {dst:<width$}"));
                    }
                    Some(false) => {
                        sent += 1;
                        line.push_str(&format!(" {:<width$}", "X"));
                    }
                    None => line.push_str(&format!(" {:<width$}", "-")),
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
    }
    if stop.load(Ordering::SeqCst) {
        s.push_str("*** interrupted (Ctrl-C): '-' marks pings not run\n");
    }
    if sent == 0 {
        s.push_str("*** Results: no pings sent (create containers first, e.g. C0w1.create_container(\"c1\"))\n");
    } else {
        let lost = sent - received;
        s.push_str(&format!(
            "*** Results: {}% dropped ({received}/{sent} received)\n",
            lost * 100 / sent
        ));
    }
    s
}
