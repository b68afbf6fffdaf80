//! The console end to end through the binary, with its input piped (as in a workshop
//! script or CI): a script runs first, the console sees its variables, multi-line input is
//! collected, the history file is written, and `quit` tears everything down.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, console_after};

#[test]
fn piped_console_session_after_a_script() {
    let setup = "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nlet n = 40;\n";
    let input = "n + 2\nfor i in 0..3 {\n  n += 1;\n}\nprint(`n is ${n}`);\nC0w1.name\nC0w1 ip a\nlet bad = (;\nnodes\nquit\nprint(\"not reached\")\n";
    let (out, dir) = console_after("con-pipe", setup, input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"42"), "{text}");
    assert!(lines.contains(&"n is 43"), "{text}");
    assert!(lines.contains(&"C0w1"), "{text}");
    assert_holds(&text, &["C0w1 is not running yet"]);
    assert_holds(&text, &["error: console:1:"]);
    assert_holds(&text, &["etcd member"]);
    assert!(!text.contains("not reached"), "{text}");
    let history = std::fs::read_to_string(dir.join(".knetsim_history")).unwrap();
    assert_holds(&history, &["C0w1 ip a", "quit"]);
    assert_nothing_left("con-pipe", &[]);
}
