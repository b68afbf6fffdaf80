//! Every workshop helper in utils/ answers --help (and -h) with usage text and exit 0,
//! and refuses to run without its arguments (exit 2, usage on stderr).

mod common;

use common::root_or_skip;

use std::process::Command;

fn utils() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("utils");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_util_has_help_and_refuses_no_arguments() {
    let all = utils();
    assert!(all.len() >= 2, "utils/ holds exec and ss at least: {all:?}");
    for u in &all {
        let name = u.file_name().unwrap().to_string_lossy().to_string();
        for flag in ["--help", "-h"] {
            let out = Command::new(u).arg(flag).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "utils/{name} {flag}: {text}");
            assert!(
                text.starts_with(&format!("Usage: utils/{name}")),
                "utils/{name} {flag} shows no usage line:\n{text}"
            );
        }
        let out = Command::new(u).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "utils/{name} without arguments: {err}"
        );
        assert!(
            !err.trim().is_empty(),
            "utils/{name} without arguments says nothing"
        );
    }
}

#[test]
fn utils_ss_serves_its_message_through_knetsim_echo_server() {
    use knetsim::netns::{self, process};
    use std::time::{Duration, Instant};
    const NS: &str = "utils-ss-t1";
    struct Guard(Vec<std::process::Child>, std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = netns::delete(NS);
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let ss = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("utils/ss");
    let exe = env!("CARGO_BIN_EXE_knetsim");
    // A bad port is reported by knetsim itself (clap), before anything listens.
    let out = Command::new(&ss)
        .args(["--port", "0", "hello"])
        .env("KNETSIM", exe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
    if !root_or_skip() {
        return;
    }
    let log = std::env::temp_dir().join(format!("knetsim-utils-ss-{}.log", std::process::id()));
    let _ = netns::delete(NS);
    netns::create(NS).unwrap();
    let mut g = Guard(vec![], log.clone());
    let sh = |cmd: &str| {
        process::run_shell(
            Some(NS),
            cmd,
            &[("KNETSIM", exe)],
            Duration::from_secs(5),
            None,
        )
        .unwrap()
        .text
    };
    sh("ip link set lo up");
    let mut cmd = process::command_in(Some(NS), ss.to_str().unwrap()).unwrap();
    cmd.args(["--port", "18090", "S2-W3"])
        .env("KNETSIM", exe)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null());
    g.0.push(cmd.spawn().unwrap());
    let until = Instant::now() + Duration::from_secs(5);
    let mut reply = String::new();
    while reply.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        reply = sh("curl -s -m 1 http://127.0.0.1:18090/");
    }
    assert_eq!(reply, "S2-W3\n");
}
