//! Console lines through `console::handle`, as a learner types them: commands, Rhai in
//! the shared scope, mininet-style node lines, errors. No cluster is started here.

mod common;

use common::{assert_holds, assert_starts};

use common::session::Session;
use knetsim::console::{handle, Flow};

/// A console session of its own per test.
fn console(test: &str) -> Session {
    Session::new(&format!("con-{test}"), true)
}

#[test]
fn rhai_lines_share_the_scope_and_show_values() {
    let mut c = console("rhai");
    assert_eq!(c.line("1 + 2"), "3\n");
    assert_eq!(c.line("let x = 20"), "");
    assert_eq!(c.line("x * 2 + 2"), "42\n");
    assert_eq!(c.line("py x + 1"), "21\n");
    assert_eq!(c.line("\"text\""), "text\n");
    // A multi-line block (as the console collects it) runs as one input.
    assert_eq!(c.line("for i in 0..3 {\n  x += i;\n}\nx"), "23\n");
    // `step` prints its header itself (to stdout) and yields nothing to show.
    assert_eq!(c.line("step(\"in the console\")"), "");
}

#[test]
fn a_script_run_first_leaves_its_variables_and_nodes_to_the_console() {
    let mut c = console("shared");
    c.ran(
        "setup.rhai",
        "let C0 = cluster(\"0\", #{ workers: 2, etcd: 1 });\nlet greeting = \"hello\";\nfn twice(s) { s + s }\n",
    );
    assert_eq!(c.line("twice(greeting)"), "hellohello\n");
    assert_eq!(c.line("C0w2"), "worker C0w2 (10.0.0.3)\n");
    assert_eq!(c.line("C0e1.ip"), "10.1.0.1\n");
    assert_eq!(
        c.line("C0.workers()"),
        "[worker C0w1 (10.0.0.2), worker C0w2 (10.0.0.3)]\n"
    );
    // Nodes added from the console become variables after the line.
    c.line("let C1 = cluster(\"1\", #{ workers: 1, etcd: 1 })");
    c.refresh_node_variables();
    let vars = c.variable_names();
    for v in [
        "C0", "C0w1", "C0w2", "C0e1", "C1", "C1w1", "C1e1", "greeting",
    ] {
        assert!(vars.iter().any(|n| n == v), "{v} missing from {vars:?}");
    }
    assert_eq!(c.line("C1w1.name"), "C1w1\n");
}

#[test]
fn errors_are_one_message_and_the_console_goes_on() {
    let mut c = console("errors");
    let out = c.line("let a = (1 +;");
    assert_starts(&out, "error: console:1:");
    assert_holds(&out, &[" 1 | let a = (1 +;"]);
    let out = c.line("cluster(\"x\")");
    assert_starts(&out, "error: console:1:1: cluster id 'x' is not valid");
    assert_eq!(c.line("2 * 3"), "6\n");
}

#[test]
fn node_lines_run_on_the_node_and_say_why_not() {
    let mut c = console("nodeline");
    c.line("cluster(\"0\", #{ workers: 1, etcd: 1 }); cluster(\"1\", #{ workers: 1, etcd: 1 });");
    let out = c.line("C0w1 ip -br addr");
    assert_holds(&out, &["C0w1 is not running yet: call start()"]);
    let out = c.line("w1 ip -br addr");
    assert_holds(
        &out,
        &["'w1' names a node in more than one cluster: use C0w1 or C1w1"],
    );
}

#[test]
fn help_nodes_pingall_and_exit() {
    let mut c = console("cmds");
    let help = c.line("help");
    assert_holds(
        &help,
        &[
            "pingall",
            "nodes",
            "exec_container",
            "create_container",
            "C0w1 CMD",
            "expect",
            "say(text)",
            ".skupper_link(token, opts?)",
            ".create_conf(remotes, services)",
            ".exec_async(cmd)",
            ".dir -> string",
        ],
    );
    let one = c.line("help skupper_link");
    assert_holds(
        &one,
        &[
            "Cluster.skupper_link(token, opts?)",
            "e.g. C1.skupper_link(C0.skupper_token());",
        ],
    );
    let none = c.line("help pingal");
    assert_holds(&none, &["no function, method or property named 'pingal'"]);
    assert_holds(&c.line("nodes"), &["no clusters yet"]);
    c.line("let C0 = cluster(\"0\", #{ workers: 2, etcd: 1 })");
    let nodes = c.line("nodes");
    assert_holds(
        &nodes,
        &[
            "C0e1",
            "etcd member",
            "10.1.0.1",
            "C0w2",
            "worker",
            "10.0.0.3",
            "declared",
        ],
    );
    let ping = c.line("pingall");
    assert_holds(&ping, &["C0: fewer than two containers", "no pings sent"]);
    let mut out = Vec::new();
    assert_eq!(handle(&mut c, "exit", &mut out), Flow::Exit);
    assert_eq!(handle(&mut c, " quit ", &mut out), Flow::Exit);
}
