//! Ctrl-C (the interrupt flag) stops a script: between statements, in sleep(), and in an
//! exec. The flag is process-wide, so these tests take turns.

mod common;

use common::session::Session;
use knetsim::script::Outcome;
use std::sync::Mutex;
use std::time::Duration;

static TURN: Mutex<()> = Mutex::new(());

/// A script session of its own per test.
fn session(test: &str) -> Session {
    Session::new(&format!("scr-{test}"), false)
}

/// Raises the flag (as the SIGINT handler does) after `ms` milliseconds.
fn ctrl_c_after(ms: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        knetsim::interrupt::raise();
    })
}

/// This test's turn with the process-wide flag, which starts cleared.
fn my_turn() -> std::sync::MutexGuard<'static, ()> {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    knetsim::interrupt::take();
    turn
}

/// Runs `src` as script `name` in `s`, with a Ctrl-C after `ms` milliseconds.
fn run_interrupted(s: &mut Session, ms: u64, name: &str, src: &str) -> Outcome {
    let ctrl_c = ctrl_c_after(ms);
    let o = s.run_source(name, src);
    ctrl_c.join().unwrap();
    o
}

#[test]
fn ctrl_c_stops_a_busy_script_between_statements() {
    let _t = my_turn();
    let mut s = session("intloop");
    let o = run_interrupted(&mut s, 200, "loop.rhai", "let i = 0;\nloop { i += 1; }\n");
    assert_eq!(o, Outcome::Interrupted);
    assert_eq!(o.exit_code(), 130);
    assert!(
        s.last_error().unwrap().contains("interrupted"),
        "{:?}",
        s.last_error()
    );
    assert!(
        !knetsim::interrupt::is_set(),
        "the flag is cleared for what comes next"
    );
    // The session still works afterwards (the console goes on after a Ctrl-C).
    assert_eq!(
        s.run_source("after.rhai", "expect(true, \"still alive\");"),
        Outcome::Ok
    );
}

#[test]
fn ctrl_c_ends_sleep() {
    let _t = my_turn();
    let mut s = session("intsleep");
    // Without the interrupt this would take a minute and then fail an expect.
    let o = run_interrupted(
        &mut s,
        200,
        "sleep.rhai",
        "sleep(60.0);\nexpect(false, \"never reached\");\n",
    );
    assert_eq!(o, Outcome::Interrupted);
    assert_eq!(s.expect_counts(), (0, 0));
}

#[test]
fn ctrl_c_ends_an_exec_and_stops_the_script() {
    let _t = my_turn();
    let mut s = session("intexec");
    let o = s.run_source(
        "up.rhai",
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nlet w1 = C0.get(\"w1\");\nset_exec_timeout(20);\n",
    );
    assert_eq!(o, Outcome::Ok, "{:?}", s.last_error());
    // Without Ctrl-C: a timeout after 20 s, which is a script error, not an interrupt.
    let o = run_interrupted(
        &mut s,
        300,
        "exec.rhai",
        "w1.exec(\"echo started; sleep 30\");\nexpect(false, \"never reached\");\n",
    );
    assert_eq!(o, Outcome::Interrupted, "{:?}", s.last_error());
    assert_eq!(s.expect_counts(), (0, 0));
    assert!(!knetsim::interrupt::is_set());
    // The worker still answers afterwards.
    let o = s.run_source(
        "again.rhai",
        "expect(w1.exec(\"echo hi\") == \"hi\\n\", \"exec works after Ctrl-C\");",
    );
    assert_eq!(o, Outcome::Ok, "{:?}", s.last_error());
}

#[test]
fn ctrl_c_before_a_pod_is_wired_makes_none() {
    if !common::root_or_skip() {
        return;
    }
    let _t = my_turn();
    let instance = "scr-intpod";
    let (sim, c) = common::started(instance, 1, 1);
    let w1 = c.worker("w1").unwrap();
    knetsim::interrupt::raise();
    let one = common::err_text(w1.create_container("p", Default::default()));
    let plan = std::collections::BTreeMap::from([("w1".to_string(), vec!["q".to_string()])]);
    let bulk = common::err_text(c.create_containers(&plan, &Default::default()));
    knetsim::interrupt::take();
    assert!(
        one.contains("interrupted before container 'p' was made"),
        "{one}"
    );
    assert!(
        bulk.contains("interrupted while creating pods: 0 of 1 made"),
        "{bulk}"
    );
    assert!(w1.containers().is_empty());
    let pods: Vec<String> = common::namespaces_of(instance)
        .into_iter()
        .filter(|n| n.contains("-C0-"))
        .collect();
    assert!(pods.is_empty(), "namespaces made after Ctrl-C: {pods:?}");
    let record = knetsim::netns::record::read_record(instance)
        .unwrap()
        .expect("a record");
    let record = serde_json::to_string(&record).unwrap();
    assert!(
        !record.contains("-C0-"),
        "the record keeps no pod: {record}"
    );
    sim.teardown().unwrap();
    common::assert_nothing_left(instance, &[]);
}
