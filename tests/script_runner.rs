//! The script runner without bring-up: expect counting, error messages and exit codes,
//! sim errors as script errors, state shared between runs. Needs root (a Sim claims a run
//! directory), but starts no cluster.

mod common;

use common::{assert_holds, assert_starts};

use common::session::Session;
use knetsim::script::Outcome;

/// A script session of its own per test.
fn session(test: &str) -> Session {
    Session::new(&format!("scr-{test}"), false)
}

#[test]
fn expects_are_counted_and_a_failure_does_not_stop_the_script() {
    let mut s = session("expect");
    let o = s.run_source(
        "lessons/e.rhai",
        "expect(1 == 1, \"one\");\nexpect(1 == 2, \"two\");\nlet after = 7;\nexpect(true, \"three\");\n",
    );
    assert_eq!(o, Outcome::ExpectFailed(1));
    assert_eq!(o.exit_code(), 1);
    assert_eq!(s.expect_counts(), (2, 1));
    // The script went on after the failure, and its variables live on.
    let o = s.run_source("next.rhai", "expect(after == 7, \"after ran\");");
    assert_eq!(o, Outcome::Ok);
    assert_eq!(o.exit_code(), 0);
    assert_eq!(s.expect_counts(), (3, 1));
}

#[test]
fn expect_needs_a_boolean() {
    let mut s = session("expbool");
    let e = s.refused(
        "b.rhai",
        "expect(\"yes\", \"a string is not a condition\");",
    );
    assert_holds(&e, &["expect() needs true or false"]);
    assert_starts(&e, "error: b.rhai:1:1:");
}

#[test]
fn syntax_error_is_one_message_with_file_line_col_and_caret() {
    let mut s = session("syntax");
    let o = s.run_source("lessons/x.rhai", "let a = 1;\nlet b = (2 + ;\nprint(a);\n");
    assert_eq!(o, Outcome::ScriptError);
    assert_eq!(o.exit_code(), 2);
    let e = s.err();
    let lines: Vec<&str> = e.lines().collect();
    assert!(lines[0].starts_with("error: lessons/x.rhai:2:"), "{e}");
    assert!(lines[1].ends_with("| let b = (2 + ;"), "{e}");
    assert!(lines[2].trim_end().ends_with('^'), "{e}");
    assert!(!e.contains("panicked") && !e.contains("backtrace"), "{e}");
}

#[test]
fn sim_errors_become_script_errors_with_the_message_intact() {
    let mut s = session("simerr");
    let e = s.refused("t.rhai", "let c = cluster(\"x\");\n");
    assert_starts(&e, "error: t.rhai:1:9: cluster id 'x' is not valid");
    let e = s.refused("t2.rhai", "let c = get_cluster(\"C7\");\n");
    assert_holds(&e, &["there is no cluster 'C7'"]);
}

#[test]
fn exec_before_start_says_to_call_start() {
    let mut s = session("nostart");
    let e = s.refused(
        "n.rhai",
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nlet w1 = C0.get(\"w1\");\nprint(w1.exec(\"ip a\"));\n",
    );
    assert_starts(&e, "error: n.rhai:3:");
    assert_holds(&e, &["C0w1 is not running yet: call start()"]);
    let e = s.refused("n2.rhai", "w1.create_container(\"c1\");");
    assert_holds(&e, &["not running yet"]);
}

#[test]
fn cluster_options_are_checked() {
    let mut s = session("opts");
    let e = s.refused("o.rhai", "cluster(\"0\", #{ worker: 3 });");
    assert_holds(&e, &["unknown option 'worker'"]);
    let e = s.refused("o.rhai", "cluster(\"0\", #{ workers: \"three\" });");
    assert_holds(&e, &["'workers' must be a whole number"]);
    let e = s.refused("o.rhai", "cluster(\"0\", #{ workers: 0 });");
    assert_holds(&e, &["workers must be between 1 and 200"]);
}

#[test]
fn nodes_are_variables_and_handles_have_names_and_addresses() {
    let mut s = session("vars");
    s.ran(
        "v.rhai",
        r#"
        let C0 = cluster(0, #{ workers: 2, etcd: 1 });
        expect(C0.name == "C0", "cluster name");
        expect(C0w1.name == "C0w1" && C0w1.name() == "C0w1", "C0w1 is a variable");
        expect(C0w1.ip == "10.0.0.2" && C0w1.ip() == "10.0.0.2", "Mininet numbering");
        expect(C0e1.ip == "10.1.0.1", "etcd address");
        expect(type_of(C0.get("e1")) == "EtcdNode", "get() returns an etcd member");
        expect(type_of(C0.get("w2")) == "Worker", "get() returns a worker");
        expect(C0.workers().len() == 2, "two workers");
        expect(node("C0w2").ip == C0.get("w2").ip, "node() by full name");
        let w3 = C0.add_worker();
        expect(w3.name == "C0w3" && C0w3.ip == "10.0.0.4", "a worker added before start");
        "#,
    );
    assert_eq!(s.expect_counts(), (9, 0));
    // A variable the script defines wins over the node of the same name.
    s.ran(
        "v2.rhai",
        "let C0w1 = 5; expect(C0w1 == 5, \"user variable wins\");",
    );
    let e = s.refused("v3.rhai", "node(\"C9w9\");");
    assert_holds(&e, &["there is no node 'C9w9'"]);
}

#[test]
fn namespace_names_carry_the_instance_for_hints() {
    let mut s = session("nsnames");
    s.ran(
        "n.rhai",
        r#"
        let C0 = cluster(0, #{ workers: 1, etcd: 1 });
        expect(C0w1.ns == "scr-nsnames-C0w1" && C0w1.ns() == C0w1.ns, "a worker's namespace");
        expect(C0e1.ns == "scr-nsnames-C0e1", "an etcd member's namespace");
        say(`Try "sudo ip netns exec ${C0w1.ns} ip route".`);
        "#,
    );
    assert_eq!(s.expect_counts(), (2, 0));
    let e = s.refused("n2.rhai", "C0w1.container_ns(\"c9\");");
    assert_holds(
        &e,
        &["there is no container 'c9' on C0w1 (containers there: none)"],
    );
    let e = s.refused("n3.rhai", "say(42);");
    assert_holds(&e, &["say"]);
}

#[test]
fn helpers_check_their_arguments() {
    let mut s = session("helpers");
    assert_eq!(
        s.run_source(
            "h.rhai",
            "sleep(0.01); sleep(0); set_exec_timeout(3); set_exec_timeout(0.5);"
        ),
        Outcome::Ok
    );
    assert_eq!(s.sim().exec_timeout().as_millis(), 500);
    assert_eq!(s.run_source("h.rhai", "sleep(-1.0);"), Outcome::ScriptError);
    assert!(
        s.err().contains("not a usable number of seconds"),
        "{}",
        s.err()
    );
    assert_eq!(
        s.run_source("h.rhai", "set_exec_timeout(-2);"),
        Outcome::ScriptError
    );
    assert_eq!(
        s.run_source(
            "h.rhai",
            "table([\"a\", \"b\"], [[1, 2], [\"x\", \"y\"]]); step(\"a step\");"
        ),
        Outcome::Ok
    );
    assert_eq!(
        s.run_source("h.rhai", "table([\"a\"], [1]);"),
        Outcome::ScriptError
    );
    assert!(s.err().contains("row 1 must be an array"), "{}", s.err());
}

#[test]
fn functions_persist_between_runs_and_exit_ends_a_script_normally() {
    let mut s = session("fns");
    assert_eq!(
        s.run_source("a.rhai", "fn double(x) { x * 2 }\nlet v = 21;"),
        Outcome::Ok
    );
    assert_eq!(
        s.run_source("b.rhai", "expect(double(v) == 42, \"shared\");"),
        Outcome::Ok
    );
    assert_eq!(
        s.run_source(
            "c.rhai",
            "expect(true, \"ok\"); exit(); expect(false, \"never\");"
        ),
        Outcome::Ok
    );
    assert_eq!(s.expect_counts(), (2, 0));
}

#[test]
fn error_inside_a_script_function_points_into_it() {
    let mut s = session("fnerr");
    let e = s.refused(
        "f.rhai",
        "fn boom() {\n    cluster(\"bad id\");\n}\nboom();\n",
    );
    assert_starts(&e, "error: f.rhai:2:5: cluster id 'bad id' is not valid");
    assert_holds(&e, &["note: in function 'boom', called at 4:1"]);
}

#[test]
fn missing_file_is_a_script_error_naming_it() {
    let mut s = session("nofile");
    let o = s.run_file(std::path::Path::new("lessons/does-not-exist.rhai"));
    assert_eq!(o, Outcome::ScriptError);
    assert!(
        s.err()
            .contains("cannot read the script lessons/does-not-exist.rhai"),
        "{}",
        s.err()
    );
}

#[test]
fn run_file_reads_relative_to_the_current_directory() {
    let mut s = session("relfile");
    // Tests run in the crate root; the default scenario file is there.
    let src = std::fs::read_to_string("scenarios/default.rhai").unwrap();
    assert_eq!(src, knetsim::script::DEFAULT_SCENARIO);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let p = dir.join("scr-relfile.rhai");
    std::fs::write(
        &p,
        "expect(1 + 1 == 2, \"arithmetic\");\nexpect(false, \"fails\");\n",
    )
    .unwrap();
    let o = s.run_file(&p);
    assert_eq!(o, Outcome::ExpectFailed(1));
    let _ = std::fs::remove_file(&p);
}
