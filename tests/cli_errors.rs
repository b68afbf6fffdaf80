//! Bad input through the real binary: each case gives one clear message, a meaningful
//! non-zero exit status, no panic, and leaves nothing behind.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, knetsim_exe, knetsim_script, recorded_processes, Run};
use std::process::Command;

fn script_file(name: &str, src: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("knetsim-cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, src).unwrap();
    p
}

fn run(instance: &str, name: &str, src: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let path = script_file(name, src);
    let mut cmd = Command::new(knetsim_exe());
    cmd.args(["--no-pause", "--instance", instance])
        .args(extra)
        .arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::of(cmd.output().unwrap())
}

/// `knetsim cleanup --instance INSTANCE`, which must succeed.
fn cleanup(instance: &str) -> Run {
    let r = Run::of(
        Command::new(knetsim_exe())
            .args(["cleanup", "--instance", instance])
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 0, "{}", r.text);
    r
}

const SMALL: &str =
    "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nlet w1 = C0.get(\"w1\");\n";

/// Runs `src` as script `file` of `instance`: it ends with `code`, saying each of `says`,
/// and leaves nothing behind (`gone`: namespaces it made).
fn ends_with(instance: &str, file: &str, src: &str, code: i32, says: &[&str], gone: &[&str]) {
    let r = run(instance, file, src, &[], &[]);
    assert_eq!(r.code, code, "{}", r.text);
    assert_holds(&r.text, says);
    assert_nothing_left(instance, gone);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let src = "let a = 1;\nlet b = ;\n";
    ends_with("cli1", "syntax.rhai", src, 2, &["syntax.rhai:2:"], &[]);
}

#[test]
fn failed_expect_says_which_and_exits_1() {
    let src = "expect(1 == 1, \"one is one\");\nexpect(1 == 2, \"one is two\");\n";
    let says = ["one is two", "expect.rhai:2:"];
    ends_with("cli2", "expect.rhai", src, 1, &says, &[]);
}

#[test]
fn unknown_worker_and_container_are_named() {
    let src = format!("{SMALL}C0.get(\"w9\");\n");
    let says = ["no node 'w9'", "unknown.rhai:4:"];
    ends_with(
        "cli3",
        "unknown.rhai",
        &src,
        2,
        &says,
        &["cli3-C0w1", "cli3-C0e1"],
    );
    let src = format!("{SMALL}w1.exec_container(\"nope\", \"true\");\n");
    ends_with(
        "cli3b",
        "unknown_c.rhai",
        &src,
        2,
        &["no container 'nope'"],
        &[],
    );
}

#[test]
fn duplicate_container_is_refused() {
    let src = format!("{SMALL}w1.create_container(\"c1\");\nw1.create_container(\"c1\");\n");
    ends_with(
        "cli4",
        "dup.rhai",
        &src,
        2,
        &["already exists"],
        &["cli4-C0-c1"],
    );
}

#[test]
fn exec_timeout_stops_the_command_and_says_how_to_fix_it() {
    let src = format!("{SMALL}w1.exec(\"sleep 30\");\n");
    let r = run(
        "cli5",
        "timeout.rhai",
        &src,
        &["--exec-timeout", "0.5"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.text);
    assert_holds(
        &r.text,
        &["did not finish within 0.5 s", "set_exec_timeout"],
    );
    assert_nothing_left("cli5", &[]);
}

/// SMALL run as `instance` with `var` pointing nowhere fails, saying each of `says`.
fn without_tool(instance: &str, var: &str, says: &[&str]) {
    let file = format!("{instance}.rhai");
    let r = run(instance, &file, SMALL, &[], &[(var, "/nonexistent")]);
    assert_ne!(r.code, 0, "{}", r.text);
    assert_holds(&r.text, says);
    assert_nothing_left(instance, &[]);
}

#[test]
fn missing_etcd_binary_names_the_package() {
    without_tool("cli6", "PATH", &["'etcd' was not found", "etcd-server"]);
}

#[test]
fn missing_cni_plugin_names_the_package() {
    without_tool("cli7", "KNETSIM_CNI_PATH", &["containernetworking-plugins"]);
}

#[test]
fn missing_script_file_is_a_usage_error() {
    let missing = std::path::Path::new("/nonexistent/lesson.rhai");
    let r = Run::of(knetsim_script("cli8", missing).output().unwrap());
    assert_eq!(r.code, 2, "{}", r.text);
    assert_holds(&r.text, &["was not found"]);
    assert_nothing_left("cli8", &[]);
}

#[test]
fn ctrl_c_stops_the_script_and_tears_down() {
    let path = script_file("sigint.rhai", &format!("{SMALL}sleep(60.0);\n"));
    let child = knetsim_script("cli9", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = knetsim::netns::record::run_dir("cli9").join("C0w1/subnet.env");
    let t0 = std::time::Instant::now();
    while !ready.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    common::signal(child.id(), nix::sys::signal::Signal::SIGINT);
    let r = Run::of(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.text);
    assert_nothing_left("cli9", &["cli9-C0w1"]);
}

/// Starts a run and waits until its worker is up; returns the child.
fn start_and_wait(instance: &str, name: &str) -> std::process::Child {
    let path = script_file(name, &format!("{SMALL}sleep(60.0);\n"));
    let child = knetsim_script(instance, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = knetsim::netns::record::run_dir(instance).join("C0w1/subnet.env");
    let t0 = std::time::Instant::now();
    while !ready.exists() && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

#[test]
fn cleanup_after_a_crash_removes_exactly_what_the_run_made() {
    let mut child = start_and_wait("cli11", "crash.rhai");
    let _ = child.kill(); // SIGKILL: no teardown runs
    let _ = child.wait();
    assert!(
        knetsim::netns::exists("cli11-C0w1"),
        "the crashed run should have left its namespaces"
    );
    let pids = recorded_processes("cli11", "");
    assert!(!pids.is_empty(), "the record lists the daemons");
    let r = cleanup("cli11");
    assert_holds(&r.text, &["removed"]);
    assert_nothing_left("cli11", &["cli11-C0w1", "cli11-C0e1", "cli11-underlay"]);
    std::thread::sleep(std::time::Duration::from_millis(100));
    for (pid, start) in pids {
        assert!(
            !knetsim::netns::process::is_same_process(pid, start),
            "recorded process {pid} is still running after cleanup"
        );
    }
}

#[test]
fn a_stale_record_is_cleaned_before_a_new_run() {
    let mut child = start_and_wait("cli12", "stale.rhai");
    let _ = child.kill();
    let _ = child.wait();
    let r = run("cli12", "fresh.rhai", SMALL, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_nothing_left("cli12", &["cli12-C0w1"]);
}

#[test]
fn cleanup_is_idempotent() {
    for _ in 0..2 {
        cleanup("cli10");
    }
}
