//! Every lesson is a test: run non-interactively it must exit 0 (every `expect` held) and
//! leave nothing behind.

mod common;

use common::{assert_nothing_left, knetsim_script, HostSnapshot, Run};
use std::path::Path;

/// Lessons run one at a time, as a learner runs them: each brings up whole clusters and
/// reads timing-sensitive output (tcpdump captures, tshark, load-balanced requests), and
/// two at once on a 2-core machine starved them into timeouts that say nothing about the
/// lesson.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_lesson(file: &str, instance: &str) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = HostSnapshot::take();
    let lesson = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lessons")
        .join(file);
    let out = knetsim_script(instance, &lesson)
        .env("NO_COLOR", "1")
        .output();
    let Run { code, text } = Run::of(out.unwrap());
    assert_eq!(code, 0, "lesson {file} failed:\n{text}");
    assert!(!text.contains('✗'), "a failed expect in {file}:\n{text}");
    assert_nothing_left(instance, &[]);
    assert_eq!(
        before,
        HostSnapshot::take(),
        "lesson {file} changed the root network namespace"
    );
}

#[test]
fn lesson_01_flannel() {
    run_lesson("01-flannel.rhai", "lesson01");
}

#[test]
fn lesson_02_cni() {
    run_lesson("02-cni.rhai", "lesson02");
}

#[test]
fn lesson_03_loadbalance() {
    run_lesson("03-loadbalance.rhai", "lesson03");
}

#[test]
fn lesson_04_ingress() {
    run_lesson("04-ingress.rhai", "lesson04");
}

#[test]
fn lesson_05_skupper() {
    run_lesson("05-skupper.rhai", "lesson05");
}

#[test]
fn lesson_06_packet_walk() {
    run_lesson("06-packet-walk.rhai", "tr-lesson06");
}

#[test]
fn lesson_07_troubleshoot() {
    run_lesson("07-troubleshoot.rhai", "tr-lesson07");
}

#[test]
fn lesson_08_backends() {
    run_lesson("08-backends.rhai", "fl-lesson08");
}

#[test]
fn lesson_00_namespaces() {
    run_lesson("00-namespaces.rhai", "fl-lesson00");
}
