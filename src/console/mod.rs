//! The interactive console: rustyline with history and completion; console commands
//! (`help`, `nodes`, `pingall`, `exit`); mininet-style `C0w1 ifconfig` lines; and Rhai
//! in the same engine and scope as the script that ran before it.

pub mod complete;
pub mod line;
pub mod live;
mod reader;
mod trace;

use crate::netns::pty;
use crate::script::{api, LineResult, ScriptSession};
use crate::sim::Sim;
use crate::ui;
use complete::{needs_more, ConsoleHelper};
use line::{classify, Line, COMMANDS};
use reader::Read;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;
use std::io::Write;
use std::path::PathBuf;

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
    // The supervisor's notices print above the prompt instead of across it (rustyline
    // redraws the line being typed); without a terminal rustyline drives, they stay on
    // stderr.
    let _notices = NoticesBack;
    if let Ok(mut printer) = ed.create_external_printer() {
        use rustyline::ExternalPrinter;
        ui::set_notice_printer(Some(Box::new(move |line: &str| {
            printer.print(format!("{line}\n")).is_ok()
        })));
    }
    let reader = reader::LineReader::new(ed)?;
    println!(
        "{}",
        ui::dim("knetsim console: `help` lists commands and the API; `exit` or Ctrl-D leaves and tears down.")
    );
    let parser = rhai::Engine::new_raw();
    // Node commands get a pseudo-terminal only when the console itself has one.
    let terminal = pty::is_tty(0) && pty::is_tty(1);
    'outer: loop {
        session.refresh_node_variables();
        let nodes = session.sim().node_names();
        if let Some(h) = reader.editor().helper_mut() {
            h.nodes = nodes.clone();
            h.vars = session.variable_names();
        }
        let mut input = match reader.read(PROMPT) {
            Read::Line(Ok(l)) => l,
            Read::Line(Err(ReadlineError::Interrupted)) => continue,
            Read::Line(Err(ReadlineError::Eof)) | Read::Terminated => break,
            Read::Line(Err(e)) => return Err(e.into()),
        };
        while needs_more(&input, &nodes, &parser) {
            match reader.read(MORE) {
                Read::Line(Ok(l)) => {
                    input.push('\n');
                    input.push_str(&l);
                }
                Read::Line(Err(ReadlineError::Interrupted)) => continue 'outer,
                Read::Line(Err(ReadlineError::Eof)) => break,
                Read::Terminated => break 'outer,
                Read::Line(Err(e)) => return Err(e.into()),
            }
        }
        if !input.trim().is_empty() {
            let mut ed = reader.editor();
            let _ = ed.add_history_entry(input.as_str());
            if let Some(h) = &hist {
                let _ = ed.save_history(h);
            }
        }
        // A Ctrl-C pressed while nothing ran must not stop the next command.
        crate::interrupt::take();
        let mut out = std::io::stdout();
        if handle_with(session, &input, &mut out, terminal) == Flow::Exit
            || crate::interrupt::terminated()
        {
            break;
        }
    }
    println!(
        "{}",
        ui::dim("leaving the console; tearing the simulation down")
    );
    Ok(())
}

/// Puts the supervisor's notices back on stderr when the console ends, however it ends.
struct NoticesBack;

impl Drop for NoticesBack {
    fn drop(&mut self) {
        ui::set_notice_printer(None);
    }
}

/// Runs one console input, writing what it shows to `out`; node commands stream their
/// output to `out` as it comes (without a terminal).
pub fn handle(session: &mut ScriptSession, input: &str, out: &mut dyn Write) -> Flow {
    handle_with(session, input, out, false)
}

/// [`handle`]; with `terminal`, node commands run on a pseudo-terminal wired to the
/// console's own (stdin and stdout), so they take keystrokes and Ctrl-C.
pub fn handle_with(
    session: &mut ScriptSession,
    input: &str,
    out: &mut dyn Write,
    terminal: bool,
) -> Flow {
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
        Line::Net => {
            let _ = write!(out, "{}", net_text(session.sim()));
        }
        Line::Dump => {
            let _ = write!(out, "{}", dump_text(session.sim()));
        }
        Line::NoNode(word) => {
            let names: Vec<&str> = nodes
                .iter()
                .map(String::as_str)
                .filter(|n| line::looks_like_node(n))
                .collect();
            let list = if names.is_empty() {
                "none yet: declare a cluster and start() it".to_string()
            } else {
                names.join(", ")
            };
            let _ = writeln!(
                out,
                "{}",
                ui::red(&format!("no node {word} (nodes: {list})"))
            );
        }
        Line::LiveExec { node, method, args } => {
            live::exec_call(session, &node, &method, &args, out, terminal);
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
            Some(n) => live::run(&live::Target::Node(n), &cmd, out, terminal),
            None => {
                let _ = writeln!(
                    out,
                    "{}",
                    ui::red(&format!("error: there is no node '{node}'"))
                );
            }
        },
        Line::Rhai(src) if unknown_word(session, &src).is_some() => {
            let msg = unknown_word(session, &src).unwrap_or_default();
            let _ = writeln!(out, "{}", ui::red(&msg));
        }
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

/// The console words that need no script scope (`trace`, `nodes`, `net`, `dump`,
/// `pingall`, `C0w1 CMD`), for the prompt of a lesson's `challenge`; false for any other
/// line, which the challenge evaluates as Rhai.
pub fn side_line(sim: &Sim, input: &str, out: &mut dyn Write) -> bool {
    if let Some(r) = trace::console_line(sim, input) {
        let _ = match r {
            Ok(text) => write!(out, "{text}"),
            Err(e) => writeln!(out, "{}", ui::red(&format!("error: {e}"))),
        };
        return true;
    }
    let text = match classify(input, &sim.node_names()) {
        Line::Nodes => format!("{}\n", nodes_table(sim)),
        Line::PingAll => pingall(sim),
        Line::Net => net_text(sim),
        Line::Dump => dump_text(sim),
        Line::Node { node, cmd } => {
            let Some(n) = sim.node(&node) else {
                return false;
            };
            let terminal = pty::is_tty(0) && pty::is_tty(1);
            live::run(&live::Target::Node(n), &cmd, out, terminal);
            return true;
        }
        _ => return false,
    };
    let _ = write!(out, "{text}");
    true
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
    let r = sim.pingall();
    let mut s =
        String::from("*** Ping: every container pings every other container of its cluster once\n");
    for (cluster, members, pairs) in &r.clusters {
        if members.len() < 2 {
            s.push_str(&format!(
                "{cluster}: fewer than two containers, nothing to ping\n"
            ));
            continue;
        }
        let width = members.iter().map(|n| n.len()).max().unwrap_or(1);
        for src in members {
            let mut line = format!("{cluster} {src:<width$} ->");
            for p in pairs.iter().filter(|p| &p.from == src) {
                let mark = match p.ok {
                    Some(true) => p.to.as_str(),
                    Some(false) => "X",
                    None => "-",
                };
                line.push_str(&format!(" {mark:<width$}"));
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
    }
    if r.interrupted {
        s.push_str("*** interrupted (Ctrl-C): '-' marks pings not run\n");
    }
    let (sent, received) = (r.sent(), r.received());
    if sent == 0 {
        s.push_str("*** Results: no pings sent (create containers first, e.g. C0w1.create_container(\"c1\"))\n");
    } else {
        s.push_str(&format!(
            "*** Results: {}% dropped ({received}/{sent} received)\n",
            r.loss_percent()
        ));
    }
    s
}

/// `net`: the links, one node per line, as Mininet's `net` prints them.
pub fn net_text(sim: &Sim) -> String {
    let links = sim.links();
    if links.is_empty() {
        return "no nodes yet: declare a cluster, e.g. let C0 = cluster(\"0\"); start();\n".into();
    }
    let mut s = String::new();
    let mut last = String::new();
    for l in links {
        if l.node != last {
            if !last.is_empty() {
                s.push('\n');
            }
            s.push_str(&l.node);
            last = l.node.clone();
        }
        s.push_str(&format!(" {}:{}", l.dev, l.peer));
    }
    s.push('\n');
    s
}

/// `dump`: every node and pod with its namespace, address and pids.
pub fn dump_text(sim: &Sim) -> String {
    let nodes = sim.dump();
    if nodes.is_empty() {
        return "no nodes yet: declare a cluster, e.g. let C0 = cluster(\"0\"); start();\n".into();
    }
    let mut s = String::new();
    for n in nodes {
        let pids: Vec<String> = n
            .pids
            .iter()
            .map(|(pid, what)| format!("{pid} ({what})"))
            .collect();
        s.push_str(&format!(
            "<{} {}: eth0:{} netns={}{}>\n",
            n.kind,
            n.name,
            n.ip,
            n.ns,
            if pids.is_empty() {
                String::new()
            } else {
                format!(" pids={}", pids.join(", "))
            }
        ));
    }
    s
}

/// A bare word that is no variable, node, command or function: what to say about it
/// ("unknown command 'pingal': did you mean pingall?").
fn unknown_word(session: &ScriptSession, src: &str) -> Option<String> {
    let word = src.trim().trim_end_matches(';').trim_end();
    let mut chars = word.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        || matches!(word, "true" | "false" | "this")
    {
        return None;
    }
    let vars = session.variable_names();
    if vars.iter().any(|v| v == word) || api::resolve_name(session.sim(), word).is_some() {
        return None;
    }
    let mut known: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
    known.extend(crate::script::registry::function_names());
    known.extend(crate::script::registry::member_names());
    known.extend(vars.iter().map(String::as_str));
    Some(match line::nearest(word, known) {
        Some(k) => format!("unknown command '{word}': did you mean {k}?"),
        None => format!("unknown command '{word}': `help` lists the commands and functions"),
    })
}
