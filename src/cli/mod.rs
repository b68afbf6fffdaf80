//! The `knetsim` command line: run a lesson or the default scenario (then the console),
//! open a shell in a node, clean up after a crash, check the machine, and the daemons
//! the simulator starts inside its namespaces.

mod doctor;
mod run;

use crate::netns::state::parse_instance;
use crate::sim::DEFAULT_INSTANCE;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Exit statuses, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    /// A lesson's `expect` did not hold.
    pub const EXPECT_FAILED: i32 = 1;
    /// Bad input: a script error, an unknown name, bad flags.
    pub const USAGE: i32 = 2;
    /// The machine is missing something, or the simulation could not be built.
    pub const ENVIRONMENT: i32 = 3;
    /// Ctrl-C (SIGINT) stopped the run.
    pub const INTERRUPTED: i32 = 130;
    /// SIGTERM stopped the run.
    pub const TERMINATED: i32 = 143;
    /// The terminal hung up (SIGHUP) and the run ended.
    pub const HUNG_UP: i32 = 129;
}

#[derive(Debug, Parser)]
#[command(
    name = "knetsim",
    version,
    about = "Kubernetes networking, built for real in miniature: namespaces, etcd, flannel VXLAN, CNI, nftables",
    long_about = "Runs a lesson script (or, with no SCRIPT, the default two-cluster scenario followed by \
                  the interactive console).\n\nExamples:\n  sudo knetsim                          # default scenario, then the console\n  \
                  sudo knetsim lessons/01-flannel.rhai  # a lesson, step by step\n  \
                  sudo knetsim --no-pause lessons/02-cni.rhai\n  sudo knetsim exec 0 w1 c1             # a shell in pod c1 of cluster C0"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A lesson or scenario script (.rhai). Without it: the default scenario and the console.
    pub script: Option<PathBuf>,
    /// Open the console after SCRIPT finishes.
    #[arg(long)]
    pub console: bool,
    /// Never wait for Enter at step() (also implied when stdin is not a terminal).
    #[arg(long)]
    pub no_pause: bool,
    /// Instance name: lets two simulations run side by side (run dir /run/knetsim/NAME,
    /// or /dev/shm/knetsim-run/NAME where /run is on disk); 1 to 32 letters, digits, '-' or '_'.
    #[arg(long, env = "KNETSIM_INSTANCE", default_value = DEFAULT_INSTANCE, value_parser = parse_instance)]
    pub instance: String,
    /// Default time limit, in seconds, for exec/exec_container.
    #[arg(long, default_value_t = 10.0)]
    pub exec_timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a shell (or run CMD) on a worker or inside a container: `knetsim exec 0 w1 [c1]`.
    Exec(ExecArgs),
    /// Remove what a crashed run left behind (namespaces, processes, run directory), and
    /// the logs a failed run kept.
    Cleanup(CleanupArgs),
    /// Check the binaries and kernel features the simulator needs.
    Doctor,
    /// The flannel-compatible node agent (the simulator starts one per worker).
    Flanneld(crate::components::flannel::FlanneldArgs),
    /// The nftables kube-proxy of one worker (the simulator starts one per worker).
    #[command(name = "kube-proxy")]
    KubeProxy(crate::components::kubeproxy::KubeProxyArgs),
    /// A Skupper-style router (the simulator starts one per linked cluster).
    Skrouterd(crate::components::skupper::SkrouterdArgs),
    /// A tiny HTTP server for lessons: answers every GET with one message (like the
    /// original's utils/ss.py), e.g. `knetsim echo-server --port 8000 --message S1-W2`.
    #[command(name = "echo-server")]
    EchoServer(crate::components::echo::EchoServerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Cluster number, e.g. 0 for C0.
    pub cluster: String,
    /// Node in that cluster: w1, w2, e1, ...
    pub node: String,
    /// A container on that worker (c1, ...). Omit to open the node itself.
    pub container: Option<String>,
    /// Command to run instead of an interactive shell (after `--`).
    #[arg(last = true)]
    pub cmd: Vec<String>,
    /// The instance the node belongs to (see `knetsim --help`).
    #[arg(long, env = "KNETSIM_INSTANCE", default_value = DEFAULT_INSTANCE, value_parser = parse_instance)]
    pub instance: String,
}

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// The instance to clean (see `knetsim --help`).
    #[arg(long, env = "KNETSIM_INSTANCE", default_value = DEFAULT_INSTANCE, value_parser = parse_instance)]
    pub instance: String,
    /// Clean every instance under /run/knetsim or /dev/shm/knetsim-run (and its etcd data
    /// under /dev/shm/knetsim).
    #[arg(long)]
    pub all: bool,
}

/// The node agents' own command line: the simulator starts two agents per worker,
/// hundreds at once, and building the whole parser (every subcommand with its flags) cost
/// each more than its own flags. The same flags, help and errors as through [`Cli`]
/// (tested); the variants' help is theirs.
#[derive(Debug, Parser)]
#[command(name = "knetsim")]
enum Agent {
    /// The flannel-compatible node agent (the simulator starts one per worker).
    Flanneld(crate::components::flannel::FlanneldArgs),
    /// The nftables kube-proxy of one worker (the simulator starts one per worker).
    #[command(name = "kube-proxy")]
    KubeProxy(crate::components::kubeproxy::KubeProxyArgs),
}

/// A command line parsed: an agent's, or any other.
#[derive(Debug)]
enum Line {
    Agent(Command),
    Whole(Cli),
}

/// The command line, through [`Agent`] when it starts an agent.
fn parse(argv: Vec<std::ffi::OsString>) -> Result<Line, clap::Error> {
    let agent = argv
        .get(1)
        .is_some_and(|a| a == "flanneld" || a == "kube-proxy");
    if !agent {
        return Cli::try_parse_from(argv).map(Line::Whole);
    }
    Ok(Line::Agent(match Agent::try_parse_from(argv)? {
        Agent::Flanneld(a) => Command::Flanneld(a),
        Agent::KubeProxy(a) => Command::KubeProxy(a),
    }))
}

pub fn main() -> i32 {
    let command = match parse(std::env::args_os().collect()) {
        Ok(Line::Agent(agent)) => {
            // An agent prints its errors as text, never their backtraces, yet with
            // RUST_BACKTRACE set in the simulator's environment each error (every refused
            // try while etcd elects, a device not there yet) walked the stack to capture
            // one. Panics keep theirs; an explicit RUST_LIB_BACKTRACE is left as given.
            if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
                std::env::set_var("RUST_LIB_BACKTRACE", "0");
            }
            agent
        }
        Ok(Line::Whole(Cli { command: None, run })) => return run::run(run),
        Ok(Line::Whole(Cli {
            command: Some(c), ..
        })) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    // Daemons exit 1 on failure, as their upstream counterparts do.
    let (res, failure) = match command {
        Command::Exec(a) => return exec(a),
        Command::Doctor => return doctor::run(),
        Command::Cleanup(a) => (cleanup(a), exit::ENVIRONMENT),
        Command::Flanneld(a) => (crate::components::flannel::run(a), 1),
        Command::KubeProxy(a) => (crate::components::kubeproxy::run(a), 1),
        Command::Skrouterd(a) => (crate::components::skupper::run(a), 1),
        Command::EchoServer(a) => (crate::components::echo::run(a), 1),
    };
    match res {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("{} {e:#}", crate::ui::red("error:"));
            failure
        }
    }
}

fn cleanup(a: CleanupArgs) -> anyhow::Result<()> {
    use crate::netns::record;
    let instances = if a.all {
        let (names, strangers) = record::instances()?;
        for p in strangers {
            eprintln!(
                "{} {} is not an instance of knetsim's; left alone (remove it as root if it is not yours)",
                crate::ui::yellow("warning:"),
                p.display()
            );
        }
        names
    } else {
        vec![a.instance]
    };
    if instances.is_empty() {
        println!("nothing to clean");
    }
    // One refused instance does not stop the others from being cleaned.
    let mut failed = Vec::new();
    for i in instances {
        match record::cleanup(&i) {
            Ok(summary) => println!("{summary}"),
            Err(e) => {
                eprintln!("{} {e:#}", crate::ui::red("error:"));
                failed.push(i);
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not clean instance(s) {}", failed.join(", "));
    }
    Ok(())
}

/// `knetsim exec 0 w1 [c1] [-- CMD]`: enters the node's or container's namespace, the way
/// the original's `utils/exec` did.
fn exec(a: ExecArgs) -> i32 {
    use crate::sim::addressing::{container_node, node_name, ns_name};
    let cluster = a.cluster.trim_start_matches('C');
    let node = match &a.container {
        Some(c) => container_node(cluster, c),
        None => node_name(cluster, &a.node),
    };
    let ns = ns_name(&a.instance, &node);
    if !crate::netns::valid_name(&ns) {
        eprintln!(
            "{} '{}' is not a node name: give a cluster number, a node and optionally a container, \
             each letters, digits, '-' or '_' (e.g. `knetsim exec 0 w1 c1`)",
            crate::ui::red("error:"),
            ns.escape_debug()
        );
        return exit::USAGE;
    }
    if !crate::netns::exists(&ns) {
        let what = match &a.container {
            Some(c) => format!("container '{c}' of cluster C{cluster}"),
            None => format!("node '{}'", node_name(cluster, &a.node)),
        };
        eprintln!(
            "{} there is no {what} (no namespace '{ns}'). Is the simulation (instance '{}') running? \
             `ip netns list` shows what exists.",
            crate::ui::red("error:"),
            a.instance
        );
        return exit::USAGE;
    }
    // As docker exec and ip netns exec: the words after `--` are the program and its
    // arguments, as given (never joined into one shell line).
    let (program, args) = match a.cmd.split_first() {
        None => {
            let shell = if std::path::Path::new("/bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            (shell.to_string(), vec![])
        }
        Some((p, rest)) => (p.clone(), rest.to_vec()),
    };
    // Node and pod names resolve here too, through the running simulation's hosts file.
    let run_dir = crate::netns::record::run_dir(&a.instance);
    let hosts_dir = run_dir.join("hosts");
    let hosts = hosts_dir.join(format!("C{cluster}"));
    let hosts = (crate::netns::state::verify_private_dir(&hosts_dir).is_ok()
        && std::fs::symlink_metadata(&hosts).is_ok_and(|m| m.is_file()))
    .then_some(hosts);
    let setup = crate::netns::process::Setup {
        hosts: hosts.as_deref(),
        cwd: None,
        keep_session: true,
        net_only: false,
    };
    let mut cmd = match crate::netns::process::command_with(Some(&ns), &program, &setup) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{} {e:#}", crate::ui::red("error:"));
            return exit::ENVIRONMENT;
        }
    };
    cmd.args(&args).env("PS1", format!("{node}# "));
    match cmd.status() {
        Ok(s) => s.code().unwrap_or(exit::INTERRUPTED),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let path = std::env::var("PATH").unwrap_or_default();
            let why = crate::netns::process::missing_program(&program, &path)
                .unwrap_or_else(|| format!("{program}: no such program"));
            eprintln!("{} {why}", crate::ui::red("error:"));
            127
        }
        Err(e) => {
            eprintln!("{} starting {program}: {e}", crate::ui::red("error:"));
            exit::ENVIRONMENT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a command line gives: the parsed command, or the text and stream of its error
    /// (help included).
    fn outcome(parsed: Result<Command, String>) -> String {
        match parsed {
            Ok(c) => format!("{c:?}"),
            Err(e) => e,
        }
    }

    fn rendered(e: clap::Error) -> String {
        format!("stderr {}: {}", e.use_stderr(), e.render())
    }

    #[test]
    fn the_agents_command_line_is_the_whole_ones() {
        let lines: &[&[&str]] = &[
            &["flanneld"],
            &[
                "flanneld",
                "--etcd-endpoints",
                "http://10.1.0.1:2379",
                "--iface",
                "10.0.0.3",
                "--ip-masq",
            ],
            &["flanneld", "--subnet-lease-ttl", "x"],
            &["flanneld", "--bogus"],
            &["flanneld", "--help"],
            &["flanneld", "-h"],
            &[
                "kube-proxy",
                "--hostname-override",
                "C0w1",
                "--service-route-dev",
                "flannel.100",
            ],
            &["kube-proxy", "--debounce-ms"],
            &["kube-proxy", "extra"],
            &["kube-proxy", "--help"],
        ];
        for line in lines {
            let argv: Vec<std::ffi::OsString> = std::iter::once("knetsim")
                .chain(line.iter().copied())
                .map(Into::into)
                .collect();
            let fast = match parse(argv.clone()) {
                Ok(Line::Agent(c)) => Ok(c),
                Err(e) => Err(rendered(e)),
                Ok(Line::Whole(_)) => panic!("{line:?} did not take the agents' parser"),
            };
            let whole = Cli::try_parse_from(argv)
                .map_err(rendered)
                .map(|c| c.command.expect("a subcommand"));
            assert_eq!(outcome(fast), outcome(whole), "{line:?}");
        }
        // anything else goes through the whole parser
        assert!(matches!(
            parse(vec!["knetsim".into(), "doctor".into()]),
            Ok(Line::Whole(_))
        ));
        assert!(matches!(parse(vec!["knetsim".into()]), Ok(Line::Whole(_))));
    }
}
