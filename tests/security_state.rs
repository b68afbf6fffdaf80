//! knetsim runs as root on machines other people use: it must trust nothing another user
//! can write (issue 9, findings 1 and 2). Here `nobody` stands in for that other user: it
//! owns a directory and a process that knetsim must leave alone, whatever names, records,
//! directories or symlinks are put in its way.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, assert_only_logs, knetsim_exe, options, root_or_skip, Run};
use knetsim::netns::{self, process, record, state};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

const NOBODY: u32 = 65534;

/// Undoes what a test set up, in reverse order, even when an assertion failed.
#[derive(Default)]
struct Undo(Vec<Box<dyn FnOnce()>>);

impl Undo {
    /// Nothing to undo yet, for a test that needs root: None, the skip said, without it.
    fn as_root() -> Option<Undo> {
        root_or_skip().then(Undo::default)
    }

    fn add(&mut self, f: impl FnOnce() + 'static) {
        self.0.push(Box::new(f));
    }
    /// Removes `path` (a directory, file or symlink this test made) at the end.
    fn remove(&mut self, path: &Path) {
        let p = path.to_path_buf();
        self.add(move || {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).unwrap_or_default(),
                Ok(_) => std::fs::remove_file(&p).unwrap_or_default(),
                Err(_) => {}
            };
        });
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

/// A `sleep` of this test, ended (by its pid) at the end.
struct Sleeper(Child);

impl Sleeper {
    /// Another user's process: `sleep` running as `uid`.
    fn foreign(uid: u32) -> Sleeper {
        let child = Command::new("sleep")
            .arg("600")
            .uid(uid)
            .gid(uid)
            .spawn()
            .expect("starting sleep");
        Sleeper(child)
    }

    /// `sleep` inside a named namespace (root's).
    fn in_namespace(ns: &str) -> Sleeper {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sleep", "600"])
            .spawn()
            .expect("starting sleep in a namespace");
        // ip execs sleep in the same process once it has entered the namespace.
        let t0 = std::time::Instant::now();
        while process::cmdline(child.id()).as_deref() != Some("sleep 600") {
            assert!(t0.elapsed().as_secs() < 10, "sleep did not start in {ns}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Sleeper(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// A record entry naming this process as etcd C0e1, with `cmdline` (or its own).
    fn entry(&self, cmdline: Option<&str>) -> serde_json::Value {
        let pid = self.pid();
        serde_json::json!({
            "pid": pid,
            "start_time": process::start_time(pid).unwrap(),
            "cmdline": cmdline.map(String::from).unwrap_or_else(|| process::cmdline(pid).unwrap()),
            "what": "etcd C0e1",
        })
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of nobody's holding a file: what must survive every test.
struct Victim {
    dir: PathBuf,
}

impl Victim {
    fn new(parent: &str, tag: &str, undo: &mut Undo) -> Victim {
        let dir = Path::new(parent).join(format!("knetsim-victim-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        undo.remove(&dir);
        std::fs::write(dir.join("precious"), "keep me").unwrap();
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(dir.join("precious"), Some(NOBODY), Some(NOBODY)).unwrap();
        Victim { dir }
    }
    fn assert_intact(&self, context: &str) {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap_or_else(|e| panic!("{context}: victim {} is gone: {e}", self.dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected = if self.dir.join("record.json").exists() {
            vec!["precious", "record.json"]
        } else {
            vec!["precious"]
        };
        assert_eq!(
            names,
            expected,
            "{context}: victim {} changed",
            self.dir.display()
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("precious")).unwrap(),
            "keep me",
            "{context}"
        );
    }
}

fn knetsim(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(knetsim_exe());
    cmd.args(args).env_remove("KNETSIM_INSTANCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::of(cmd.output().unwrap())
}

fn write_record(path: &Path, instance: &str, body: serde_json::Value) {
    let mut rec = serde_json::json!({
        "instance": instance,
        "owner_pid": 4_000_000u32,
        "owner_start_time": 1,
        "owner_cmdline": "knetsim",
        "namespaces": [],
        "processes": [],
        "paths": [],
    });
    for (k, v) in body.as_object().unwrap() {
        rec[k] = v.clone();
    }
    std::fs::write(path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
}

fn run_base() -> &'static Path {
    let base = state::run_base();
    state::ensure_private_dir(base).expect("the run base");
    base
}

#[test]
fn bad_instance_names_exit_2_before_touching_anything() {
    let Some(mut undo) = Undo::as_root() else {
        return;
    };
    // `../NAME` from /run/knetsim is /run/NAME; an absolute name is itself.
    let up = Victim::new("/run", "up", &mut undo);
    let abs = Victim::new("/tmp", "abs", &mut undo);
    let up_name = format!("../{}", up.dir.file_name().unwrap().to_string_lossy());
    let abs_name = abs.dir.display().to_string();
    let long = "x".repeat(33);
    let bad = [
        up_name.as_str(),
        abs_name.as_str(),
        ".",
        "..",
        "",
        "a/b",
        "-x",
        long.as_str(),
    ];
    for name in bad {
        let by_flag = knetsim(&["cleanup", &format!("--instance={name}")], &[]);
        let by_env = knetsim(&["cleanup"], &[("KNETSIM_INSTANCE", name)]);
        for (how, r) in [("--instance", by_flag), ("KNETSIM_INSTANCE", by_env)] {
            assert_eq!(r.code, 2, "cleanup, {how} {name:?}: {}", r.text);
            assert!(
                r.text.contains("letters, digits, '-' or '_'"),
                "{how} {name:?}: the message names the allowed form: {}",
                r.text
            );
        }
        up.assert_intact(name);
        abs.assert_intact(name);
    }
    // Every other subcommand that takes an instance checks it the same way.
    for args in [
        vec!["exec", "--instance", &up_name, "0", "w1", "--", "true"],
        vec!["--no-pause", "--instance", &up_name, "/nonexistent.rhai"],
        vec!["cleanup", "--all", "--instance", &up_name],
    ] {
        let r = knetsim(&args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {}", r.text);
    }
    let r = knetsim(&["exec", "0", "w1"], &[("KNETSIM_INSTANCE", "..")]);
    assert_eq!(r.code, 2, "{}", r.text);
    // The library refuses it too, with the same words.
    let err = knetsim::sim::Sim::new(options(&up_name)).err().unwrap();
    assert!(format!("{err:#}").contains("letters, digits"), "{err:#}");
    up.assert_intact("after every subcommand");
    abs.assert_intact("after every subcommand");
}

#[test]
fn exec_refuses_node_names_that_are_paths() {
    let r = knetsim(&["exec", "0", "/../../proc/1/ns/net", "--", "true"], &[]);
    assert_eq!(r.code, 2, "{}", r.text);
    assert_holds(&r.text, &["is not a node name"]);
    let r = knetsim(&["exec", "0", "w1", "../x", "--", "true"], &[]);
    assert_eq!(r.code, 2, "{}", r.text);
}

#[test]
fn a_run_directory_planted_by_another_user_is_refused_and_left_alone() {
    let Some(mut undo) = Undo::as_root() else {
        return;
    };
    let victim = Victim::new("/tmp", "planted", &mut undo);
    let mut sleeper = Sleeper::foreign(NOBODY);
    let hostile = serde_json::json!({
        "namespaces": ["../../proc/1/ns/net"],
        "processes": [sleeper.entry(None)],
        "paths": [victim.dir.display().to_string()],
    });
    let base = run_base();

    // 1. A directory of nobody's, holding nobody's record.
    let dir = base.join("secb1");
    std::fs::create_dir(&dir).unwrap();
    undo.remove(&dir);
    write_record(&dir.join("record.json"), "secb1", hostile.clone());
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(dir.join("record.json"), Some(NOBODY), Some(NOBODY)).unwrap();
    let r = knetsim(&["cleanup", "--instance", "secb1"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert!(
        r.text.contains("belongs to uid 65534")
            && r.text
                .contains(&format!("rm -r {}", base.join("secb1").display())),
        "the message says what, why and the fix: {}",
        r.text
    );
    let err = knetsim::sim::Sim::new(options("secb1")).err().unwrap();
    assert!(format!("{err:#}").contains("uid 65534"), "{err:#}");
    assert!(
        dir.join("record.json").exists(),
        "a foreign directory is never removed"
    );

    // 2. Root's directory, but the record in it is nobody's.
    let dir = base.join("secb2");
    std::fs::create_dir(&dir).unwrap();
    undo.remove(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_record(&dir.join("record.json"), "secb2", hostile.clone());
    std::os::unix::fs::chown(dir.join("record.json"), Some(NOBODY), Some(NOBODY)).unwrap();
    let r = knetsim(&["cleanup", "--instance", "secb2"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert_holds(&r.text, &["will not obey it"]);
    assert!(dir.join("record.json").exists());

    // 3. Root's directory and record, but anyone may write the directory.
    let dir = base.join("secb3");
    std::fs::create_dir(&dir).unwrap();
    undo.remove(&dir);
    write_record(&dir.join("record.json"), "secb3", hostile.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = knetsim(&["cleanup", "--instance", "secb3"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert_holds(&r.text, &["writable by other users"]);

    // 4. A symlink in place of the run directory, pointing at nobody's directory, which
    //    holds a record (root's, even).
    let link = base.join("secb4");
    std::os::unix::fs::symlink(&victim.dir, &link).unwrap();
    undo.remove(&link);
    write_record(&victim.dir.join("record.json"), "secb4", hostile.clone());
    let r = knetsim(&["cleanup", "--instance", "secb4"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert_holds(
        &r.text,
        &["is a symbolic link", &format!("rm {}", link.display())],
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let err = knetsim::sim::Sim::new(options("secb4")).err().unwrap();
    assert!(format!("{err:#}").contains("symbolic link"), "{err:#}");

    // 5. A symlink in place of the record itself.
    let dir = base.join("secb5");
    std::fs::create_dir(&dir).unwrap();
    undo.remove(&dir);
    std::os::unix::fs::symlink(victim.dir.join("record.json"), dir.join("record.json")).unwrap();
    let r = knetsim(&["cleanup", "--instance", "secb5"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert_holds(&r.text, &["record.json is a symbolic link"]);

    assert!(sleeper.alive(), "nobody's process was killed");
    victim.assert_intact("after the planted records");
    std::fs::remove_file(victim.dir.join("record.json")).unwrap();
}

#[test]
fn hostile_entries_in_roots_own_record_are_not_obeyed() {
    let Some(mut undo) = Undo::as_root() else {
        return;
    };
    let victim = Victim::new("/tmp", "entries", &mut undo);
    let mut foreign = Sleeper::foreign(NOBODY);
    // Ours, so cleanup must end it: root's process with the recorded command line.
    let mut ours = Sleeper::foreign(0);
    let dir = state::ensure_instance_dir(run_base(), "secc").unwrap();
    undo.remove(&dir);
    for ns in ["secc-n1", "secx-other"] {
        let _ = netns::delete(ns);
        netns::create(ns).unwrap();
        undo.add(move || netns::delete(ns).unwrap_or_default());
    }
    // Not in the record: ended only because it is inside one of the run's namespaces.
    let mut inside_ours = Sleeper::in_namespace("secc-n1");
    let mut inside_other = Sleeper::in_namespace("secx-other");
    // (pid 0 and 1 are covered by unit tests: a regression there would signal every
    // process on the machine, so no integration test puts them in a record.)
    let escape = format!(
        "/dev/shm/knetsim/secc/../../../tmp/{}",
        victim.dir.file_name().unwrap().to_string_lossy()
    );
    write_record(
        &dir.join("record.json"),
        "secc",
        serde_json::json!({
            "namespaces": ["../../proc/1/ns/net", "secx-other", "secc-n1"],
            "processes": [
                foreign.entry(Some("etcd --name C0e1")),
                ours.entry(None),
            ],
            "paths": [victim.dir.display().to_string(), escape, "/run/knetsim/other/x"],
        }),
    );
    let r = knetsim(&["cleanup", "--instance", "secc"], &[]);
    assert_eq!(r.code, 0, "{}", r.text);
    for named in [
        "'../../proc/1/ns/net'",
        "'secx-other'",
        &format!(
            "process {} runs 'sleep 600', not the recorded 'etcd --name C0e1'",
            foreign.pid()
        ),
        &format!("'{}'", victim.dir.display()),
        "/dev/shm/knetsim/secc/../../../tmp/",
        "'/run/knetsim/other/x'",
    ] {
        assert!(
            r.text.contains(named),
            "no warning naming {named}:\n{}",
            r.text
        );
    }
    assert!(
        foreign.alive(),
        "a process whose command line differs was killed"
    );
    assert!(
        inside_other.alive(),
        "a process in another instance's namespace was killed"
    );
    assert!(
        netns::exists("secx-other"),
        "another instance's namespace was removed"
    );
    victim.assert_intact("after cleanup");
    // The entries that are this run's own were obeyed.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !ours.alive(),
        "the recorded process of this run was not ended"
    );
    assert!(
        !inside_ours.alive(),
        "a process inside this run's namespace was not ended"
    );
    assert!(
        !netns::exists("secc-n1"),
        "this run's namespace was not removed"
    );
    assert!(!dir.exists(), "the run directory was not removed");
}

#[test]
fn a_symlink_for_etcds_data_is_refused_and_its_target_untouched() {
    if !root_or_skip() {
        return;
    }
    if state::etcd_data_base().is_none() {
        eprintln!(
            "SKIPPED: etcd's data goes in the run directory on this machine ({}): /dev/shm has \
             less than 1 GiB free, or the run directory is in /dev/shm already",
            state::run_base().display()
        );
        return;
    }
    let mut undo = Undo::default();
    let victim = Victim::new("/tmp", "shm", &mut undo);
    let shm_base = Path::new(state::SHM_BASE);
    state::ensure_private_dir(shm_base).unwrap();
    let link = shm_base.join("secd");
    std::os::unix::fs::symlink(&victim.dir, &link).unwrap();
    undo.remove(&link);
    let foreign_dir = shm_base.join("secd2");
    std::fs::create_dir(&foreign_dir).unwrap();
    undo.remove(&foreign_dir);
    std::os::unix::fs::chown(&foreign_dir, Some(NOBODY), Some(NOBODY)).unwrap();

    for (instance, why) in [("secd", "symbolic link"), ("secd2", "belongs to uid 65534")] {
        let sim = knetsim::sim::Sim::new(options(instance)).unwrap();
        sim.cluster(
            "0",
            knetsim::sim::ClusterSpec {
                workers: 1,
                etcd: 1,
            },
        )
        .unwrap();
        let err = format!("{:#}", sim.start().expect_err("bring-up must refuse"));
        assert!(
            err.contains(why) && err.contains("rm "),
            "{instance}: {err}"
        );
        sim.teardown().unwrap();
        let listed = netns::list();
        assert!(
            !listed
                .iter()
                .any(|n| n.starts_with(&format!("{instance}-"))),
            "{listed:?}"
        );
        assert!(!record::run_dir(instance).exists());
    }
    // cleanup refuses them as well, and removes neither.
    let r = knetsim(&["cleanup", "--instance", "secd"], &[]);
    assert_eq!(r.code, 3, "{}", r.text);
    assert_holds(&r.text, &["symbolic link"]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(foreign_dir.is_dir());
    victim.assert_intact("after bring-up and cleanup");
}

#[test]
fn private_directories_are_checked_before_use() {
    let Some(mut undo) = Undo::as_root() else {
        return;
    };
    let top = std::env::temp_dir().join(format!("knetsim-secdirs-{}", std::process::id()));
    std::fs::create_dir(&top).unwrap();
    undo.remove(&top);

    let fresh = top.join("fresh");
    state::ensure_private_dir(&fresh).unwrap();
    let m = std::fs::symlink_metadata(&fresh).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));

    let loose = top.join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    state::verify_private_dir(&loose).unwrap();
    let mode = std::fs::symlink_metadata(&loose).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "root's own directory is made private");

    let open = top.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let e = state::ensure_private_dir(&open).unwrap_err().to_string();
    assert_holds(&e, &["writable by other users", "rm -r"]);

    let theirs = top.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let e = state::ensure_private_dir(&theirs).unwrap_err().to_string();
    assert_holds(&e, &["uid 65534"]);
    let mode = std::fs::symlink_metadata(&theirs).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "a foreign directory is not changed");

    let link = top.join("link");
    std::os::unix::fs::symlink(&fresh, &link).unwrap();
    let e = state::ensure_private_dir(&link).unwrap_err().to_string();
    assert_holds(&e, &["symbolic link"]);

    let file = top.join("file");
    std::fs::write(&file, "").unwrap();
    let e = state::ensure_private_dir(&file).unwrap_err().to_string();
    assert_holds(&e, &["not a directory"]);

    // Removal happens only inside knetsim's bases.
    let e = state::remove_private_dir(&fresh).unwrap_err().to_string();
    assert_holds(&e, &["not inside knetsim's own directories"]);
    assert!(fresh.is_dir());
}

#[test]
fn a_failed_run_keeps_its_logs_until_cleanup() {
    if !root_or_skip() {
        return;
    }
    let script = std::env::temp_dir().join(format!("knetsim-seclogs-{}.rhai", std::process::id()));
    let mut undo = Undo::default();
    undo.remove(&script);
    undo.add(|| {
        let _ = record::cleanup("secl");
    });
    std::fs::write(
        &script,
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nexpect(false, \"fails on purpose\");\n",
    )
    .unwrap();
    let path = script.display().to_string();
    let r = knetsim(&["--no-pause", "--instance", "secl", &path], &[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let dir = record::run_dir("secl");
    assert!(
        r.text.contains(&format!("kept in {}", dir.display()))
            && r.text.contains("knetsim cleanup --instance secl"),
        "the message says where the logs are and how to remove them: {}",
        r.text
    );
    let others = assert_only_logs(&dir);
    assert!(others.is_empty(), "more than logs kept: {others:?}");
    for log in ["C0w1/flanneld.log", "C0e1/etcd.log"] {
        assert!(dir.join(log).is_file(), "{log} was not kept");
    }
    assert!(!record::shm_dir("secl").exists(), "etcd's data was kept");
    assert!(
        !netns::list().iter().any(|n| n.starts_with("secl-")),
        "a failed run still tears down"
    );
    let r = knetsim(&["cleanup", "--instance", "secl"], &[]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(!dir.exists(), "cleanup did not remove the kept logs");

    // A run that succeeds keeps nothing.
    std::fs::write(
        &script,
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nexpect(true, \"fine\");\n",
    )
    .unwrap();
    let r = knetsim(&["--no-pause", "--instance", "secl", &path], &[]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(!dir.exists(), "a successful run left {}", dir.display());
    assert_nothing_left("secl", &["secl-C0w1", "secl-C0e1"]);
}
