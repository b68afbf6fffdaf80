//! `scripts/bench-compare`: bad arguments are refused with a clear message and exit 2
//! before anything is built, and its table (`--table`) reads both output shapes of the
//! benchmarks, takes medians and their spread, and flags a figure more than 10% slower.
//! `--clean` removes only the worktree it made. Nothing here builds
//! or runs a simulation.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-compare")
}

/// Exit code and stdout + stderr of the script with `args`.
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("running bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A folder of fake run outputs, removed when dropped (also when an assertion fails).
struct RunDir(PathBuf);

impl RunDir {
    fn new(name: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!(
            "knetsim-bench-compare-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        RunDir(dir)
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_refused(args: &[&str], says: &str) {
    let (code, text) = run(args);
    assert_eq!(code, 2, "{args:?} should exit 2, said: {text}");
    assert!(
        text.contains(says),
        "{args:?} should say {says:?}, said: {text}"
    );
    assert!(
        text.contains("usage:"),
        "{args:?} should show the usage: {text}"
    );
    assert!(
        !text.contains("building"),
        "{args:?} started a build: {text}"
    );
}

#[test]
fn bad_arguments_exit_2_with_the_cause() {
    assert_refused(
        &["no-such-rev-anywhere"],
        "'no-such-rev-anywhere' is not a commit of this repository",
    );
    for rounds in ["0", "abc", "-1", "2x", ""] {
        assert_refused(
            &["HEAD", rounds],
            &format!("ROUNDS '{rounds}' is not a positive whole number"),
        );
    }
    assert_refused(&["HEAD", "3", "extra"], "too many arguments");
    assert_refused(&["--clean", "HEAD", "3"], "too many arguments");
    assert_refused(&["--build", "HEAD", "3"], "too many arguments");
    assert_refused(&["--clean", "--build"], "--clean and --build together");
    assert_refused(&["--fast"], "unknown option '--fast'");
    assert_refused(&["--table"], "--table needs the folder of a finished run");
    let empty = RunDir::new("empty");
    assert_refused(
        &["--table", empty.0.to_str().unwrap()],
        "holds no benchmark outputs",
    );
    assert_refused(
        &["--table", empty.0.to_str().unwrap(), "HEAD"],
        "--table takes no other arguments",
    );
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The path the script gives HEAD's worktree; removed when dropped if something is left
/// there (a failed assertion), the way the script would remove it.
struct HeadWorktree(PathBuf);

impl Drop for HeadWorktree {
    fn drop(&mut self) {
        if self.0.exists() {
            let path = self.0.to_str().unwrap();
            let listed = git(&["worktree", "list", "--porcelain"]);
            if listed.lines().any(|l| l == format!("worktree {path}")) {
                let _ = git(&["worktree", "remove", "--force", path]);
            } else {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

/// `--clean` removes the worktree it would have made, with the build output inside it;
/// a plain folder in its place is not a worktree it made, and is left alone (exit 3).
#[test]
fn clean_removes_only_a_worktree_it_made() {
    let sha = git(&["rev-parse", "HEAD"]);
    let dir = HeadWorktree(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-compare")
            .join(&sha[..12]),
    );
    assert!(
        !dir.0.exists(),
        "{} exists before the test",
        dir.0.display()
    );
    let (code, text) = run(&["--clean", "HEAD"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("nothing to remove"), "{text}");

    git(&["worktree", "add", "--detach", dir.0.to_str().unwrap(), &sha]);
    std::fs::create_dir_all(dir.0.join("target/release")).unwrap();
    std::fs::write(dir.0.join("target/release/knetsim"), "built").unwrap();
    let (code, text) = run(&["--clean", "HEAD"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("removed the worktree"), "{text}");
    assert!(!dir.0.exists(), "--clean left {}", dir.0.display());
    let listed = git(&["worktree", "list", "--porcelain"]);
    let entry = format!("worktree {}", dir.0.display());
    assert!(
        !listed.lines().any(|l| l == entry),
        "still listed: {listed}"
    );

    // A worktree whose folder is gone (target/ cleaned): git's note of it goes too.
    git(&["worktree", "add", "--detach", dir.0.to_str().unwrap(), &sha]);
    std::fs::remove_dir_all(&dir.0).unwrap();
    let (code, text) = run(&["--clean", "HEAD"]);
    assert_eq!(code, 0, "{text}");
    let listed = git(&["worktree", "list", "--porcelain"]);
    assert!(
        !listed.lines().any(|l| l == entry),
        "still listed: {listed}"
    );

    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("mine"), "not the script's").unwrap();
    let (code, text) = run(&["--clean", "HEAD"]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("is not a git worktree of this repository; not removing it"),
        "{text}"
    );
    assert!(
        dir.0.join("mine").exists(),
        "--clean removed a folder it did not make"
    );
}

const EXEC: &str = "| measure (median of 200, interleaved) | ms |
| --- | --- |
| exec_container(\"c1\", \"true\") | EXEC |
| ip netns exec benchexec-C0w1-c1 true (baseline) | IP |
| ratio | 0.67 |
";

const SERVICES: &str = "(a) programming time (first sync into a fresh namespace)
  kube-proxy layout, 10,000 services, netlink bulk, TXN transactions (median of 3)  PROG ms

(b) first-packet TCP connect latency, median of 1000 connects per case
  kube-proxy layout, 10 services                              62.0 us
  ratio 10,000/10: kube-proxy layout KPx, linear layout 4.03x
";

fn row<'a>(table: &'a str, bench: &str, figure: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("| {bench} | {figure} |")))
        .unwrap_or_else(|| panic!("no row for {bench} / {figure} in:\n{table}"))
}

#[test]
fn table_gives_medians_ratios_and_flags_from_both_output_shapes() {
    let d = RunDir::new("table");
    // old: exec 1.00 1.20 1.10 (median 1.10); new: 1.40 1.20 1.30 (median 1.30, +18%).
    // The baseline moves +20% too; the pod's namespace name differs between the two.
    for (side, execs, ip) in [
        ("old", ["1.00", "1.20", "1.10"], "1.00"),
        ("new", ["1.40", "1.20", "1.30"], "1.20"),
    ] {
        for (round, e) in execs.iter().enumerate() {
            let text = EXEC.replace("EXEC", e).replace("IP", ip);
            let text = if side == "new" {
                text.replace("benchexec-C0w1-c1", "C0w1-c1")
            } else {
                text
            };
            d.write(&format!("bench_exec.{side}.{}.out", round + 1), &text);
        }
    }
    // The services' programming got faster, in another number of transactions; the
    // 10,000/10 ratio is 5% worse (not flagged); the new side has one run less.
    d.write(
        "bench_services.old.1.out",
        &SERVICES
            .replace("TXN", "42")
            .replace("PROG", "9400.0")
            .replace("KP", "1.10"),
    );
    d.write(
        "bench_services.old.2.out",
        &SERVICES
            .replace("TXN", "42")
            .replace("PROG", "9600.0")
            .replace("KP", "1.10"),
    );
    d.write(
        "bench_services.new.1.out",
        &SERVICES
            .replace("TXN", "40")
            .replace("PROG", "7000.0")
            .replace("KP", "1.16"),
    );
    let (code, table) = run(&["--table", d.0.to_str().unwrap()]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("| benchmark | figure | old median | new median | new/old | flag |"),
        "{table}"
    );

    // (benchmark, figure, what its row must say from the old median on)
    let expected = [
        (
            "bench_exec",
            "exec_container(\"c1\", \"true\") (ms)",
            "| 1.10 ±9% | 1.30 ±8% | 1.18 | **slower by 18%** |",
        ),
        (
            "bench_exec",
            "ip netns exec POD true (baseline) (ms)",
            "| 1.00 ±0% | 1.20 ±0% | 1.20 | baseline moved +20% |",
        ),
        (
            "bench_exec",
            "ratio (x)",
            "| 0.670 ±0% | 0.670 ±0% | 1.00 |  |",
        ),
        (
            "bench_services",
            "kube-proxy layout, 10,000 services, netlink bulk (median of 3) (ms)",
            "| 9500 ±1% | 7000 | 0.74 |  (runs: 2 old, 1 new) |",
        ),
        (
            "bench_services",
            "kube-proxy layout, 10 services (us)",
            "| 62.00 ±0% | 62.00 | 1.00 |",
        ),
        (
            "bench_services",
            "connect latency 10,000/10, kube-proxy layout (x)",
            "| 1.10 ±0% | 1.16 | 1.05 |  (runs",
        ),
        (
            "bench_services",
            "connect latency 10,000/10, linear layout (x)",
            "| 4.03 ±0% | 4.03 | 1.00 |",
        ),
    ];
    for (bench, figure, says) in expected {
        let line = row(&table, bench, figure);
        assert!(line.contains(says), "{line} should say {says}");
    }
}
