//! `knetsim echo-server` as a process, in a namespace of this test's own: it answers GET
//! with its message, refuses a port already taken and bad flags with clear messages.

mod common;

use common::{knetsim_exe, root_or_skip, sh_any, Guard};
use knetsim::netns::process;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "echo-cli-t1";

fn sh(cmd: &str) -> String {
    sh_any(NS, cmd).1
}

#[test]
fn echo_server_answers_get_and_refuses_a_taken_port() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    g.ns(NS);
    let log = g.dir("echo-cli").join("echo.log");
    let exe = knetsim_exe().display().to_string();
    let args: Vec<String> = ["echo-server", "--port", "18080", "--message", "S1-W2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    g.children
        .push(process::spawn_daemon(Some(NS), &exe, &args, &log).unwrap());
    let until = Instant::now() + Duration::from_secs(5);
    let mut reply = String::new();
    while Instant::now() < until {
        reply = sh("curl -s -m 1 http://127.0.0.1:18080/svc1");
        if !reply.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(reply, "S1-W2\n");
    let head = sh("curl -s -I -m 1 http://127.0.0.1:18080/");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let post = sh("curl -s -o /dev/null -w '%{http_code}' -X POST -m 1 http://127.0.0.1:18080/");
    assert_eq!(post, "405");

    // The same port again: exits 1 naming the port and the fix.
    let out = sh(&format!(
        "{exe} echo-server --port 18080 --message other; echo exit=$?"
    ));
    assert!(
        out.contains("port 18080 is already in use") && out.contains("another --port"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("exit=1"), "{out}");

    // Bad flags: usage errors (exit 2) from clap, a bad message exit 1.
    for (flags, want, code) in [
        ("--port 0 --message x", "--port", 2),
        ("--port 70000 --message x", "--port", 2),
        ("--port 18081", "--message", 2),
        ("--port 18081 --message ''", "message is empty", 1),
    ] {
        let out = Command::new(knetsim_exe())
            .arg("echo-server")
            .args(shell_words(flags))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{flags}: {text}");
        assert!(text.contains(want), "{flags}: {text}");
    }
}

fn shell_words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            if w == "''" {
                String::new()
            } else {
                w.to_string()
            }
        })
        .collect()
}
