//! Bad input, table-driven, through the real binary. Every case asserts its exit status,
//! the words of its message, the script's file:line:column when a script is at fault, that
//! no panic reached the user, and that nothing of its instance is left behind. Each case
//! has its own instance (`bad-...`). Most fail before bring-up, so the table stays fast;
//! a few fail after start() to exercise teardown.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, knetsim_exe, Run};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Script files of this test, removed when it ends (even when it fails).
struct ScriptDir(PathBuf);

impl ScriptDir {
    fn new(test: &str) -> ScriptDir {
        let d =
            std::env::temp_dir().join(format!("knetsim-bad-input-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        ScriptDir(d)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Input {
    /// A script; `at` is the line the error must point at (with a column), if any.
    Script { src: &'static str, at: Option<u32> },
    /// Raw bytes as the script file (not text).
    Bytes(&'static [u8]),
    /// A command line (no script), with extra environment.
    Args(
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
}

struct Case {
    name: &'static str,
    input: Input,
    code: i32,
    says: &'static [&'static str],
}

const fn script(
    name: &'static str,
    src: &'static str,
    at: u32,
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        input: Input::Script { src, at: Some(at) },
        code: 2,
        says,
    }
}

const fn args(
    name: &'static str,
    a: &'static [&'static str],
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        input: Input::Args(a, &[]),
        code: 2,
        says,
    }
}

const C0: &str = "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\n";

/// Cases that fail before anything is brought up.
fn before_bring_up() -> Vec<Case> {
    vec![
        script("syntax", "let a = 1;\nlet b = ;\n", 2, &["syntax error"]),
        script(
            "nofn",
            "let a = 1;\nnosuch(a);\n",
            2,
            &["there is no function nosuch"],
        ),
        script("novar", "print(zz);\n", 1, &["no variable 'zz'", "let zz"]),
        script(
            "idzeros",
            "cluster(\"007\");\n",
            1,
            &["leading zeros", "did you mean \"7\""],
        ),
        script(
            "idzeros2",
            "cluster(\"7\");\ncluster(\"007\");\n",
            2,
            &["'007'", "C7", "already declared"],
        ),
        script(
            "idwrap",
            "cluster(\"1\");\ncluster(\"257\");\n",
            2,
            &["'257'", "C1's etcd", "0 to 254"],
        ),
        script(
            "id255",
            "cluster(\"0\");\ncluster(\"255\");\n",
            2,
            &["'255'", "workers' addresses", "C0's workers"],
        ),
        script(
            "idneg",
            "cluster(-1);\n",
            1,
            &["'-1' is not valid", "0 to 254"],
        ),
        script("idword", "cluster(\"abc\");\n", 1, &["'abc' is not valid"]),
        script("idempty", "cluster(\"\");\n", 1, &["'' is not valid"]),
        script("idname", "cluster(\"C0\");\n", 1, &["write cluster(\"0\")"]),
        script(
            "iddup",
            "cluster(\"0\");\ncluster(\"0\");\n",
            2,
            &["C0 is already declared"],
        ),
        script(
            "wmax",
            "cluster(\"0\", #{ workers: 9223372036854775807 });\n",
            1,
            &["workers must be between 1 and 200 (got 9223372036854775807)"],
        ),
        script(
            "wzero",
            "cluster(\"0\", #{ workers: 0 });\n",
            1,
            &["workers must be between 1 and 200 (got 0)"],
        ),
        script(
            "wneg",
            "cluster(\"0\", #{ workers: -3 });\n",
            1,
            &["workers must be between 1 and 200 (got -3)"],
        ),
        script(
            "emax",
            "cluster(\"0\", #{ etcd: 9223372036854775807 });\n",
            1,
            &["etcd must be between 1 and 5"],
        ),
        script(
            "ezero",
            "cluster(\"0\", #{ etcd: 0 });\n",
            1,
            &["etcd must be between 1 and 5 (got 0)"],
        ),
        script(
            "wtype",
            "cluster(\"0\", #{ workers: \"three\" });\n",
            1,
            &["must be a whole number"],
        ),
        script(
            "optname",
            "cluster(\"0\", #{ nodes: 3 });\n",
            1,
            &["unknown option 'nodes'"],
        ),
        script(
            "runstr",
            "let s = \"x\";\nloop { s += s; }\n",
            2,
            &["a string grew past the limit of 64 MiB", "give it an end"],
        ),
        script(
            "runarr",
            "let a = [1];\nloop { a += a; }\n",
            2,
            &["an array grew past the limit"],
        ),
        script(
            "runrec",
            "fn f(n) { f(n + 1) }\nf(0);\n",
            2,
            &["more than 64 levels deep"],
        ),
        script(
            "runpad",
            "let s = \"x\".pad(100000000, \"y\");\n",
            1,
            &["a string grew past the limit"],
        ),
        script(
            "tozero",
            "set_exec_timeout(0);\n",
            1,
            &["above 0", "set_exec_timeout(30)"],
        ),
        script("toneg", "set_exec_timeout(-1.5);\n", 1, &["above 0"]),
        script(
            "tonan",
            "set_exec_timeout(parse_float(\"NaN\"));\n",
            1,
            &["above 0"],
        ),
        script("tohuge", "set_exec_timeout(1e12);\n", 1, &["at most 86400"]),
        script(
            "sleepneg",
            "sleep(-1.0);\n",
            1,
            &["not a usable number of seconds"],
        ),
        script(
            "nostart",
            "start();\n",
            1,
            &["nothing to start: declare a cluster first"],
        ),
        script(
            "expectty",
            "expect(\"yes\", \"a string\");\n",
            1,
            &["needs true or false"],
        ),
        script(
            "tablerow",
            "table([\"a\"], [1]);\n",
            1,
            &["row 1 must be an array"],
        ),
        script("nonode", "node(\"C9w1\");\n", 1, &["no node 'C9w1'"]),
        script(
            "nocluster",
            "get_cluster(\"C5\");\n",
            1,
            &["there is no cluster 'C5'"],
        ),
        script(
            "throw",
            "let x = 1;\nthrow \"custom failure\";\n",
            2,
            &["custom failure"],
        ),
        script(
            "import",
            "import \"no_such_module\" as m;\n",
            1,
            &["there is no module 'no_such_module'", "no_such_module.rhai"],
        ),
        Case {
            name: "deep",
            input: Input::Script {
                src: Box::leak(
                    format!("let x = {}1{};\n", "(".repeat(300), ")".repeat(300)).into_boxed_str(),
                ),
                at: Some(1),
            },
            code: 2,
            says: &["syntax error"],
        },
        Case {
            name: "nodeget",
            input: Input::Script {
                src: concat!(
                    "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\n",
                    "C0.get(\"w9\");\n"
                ),
                at: Some(2),
            },
            code: 2,
            says: &["C0 has no node 'w9'", "w1"],
        },
        Case {
            name: "execearly",
            input: Input::Script {
                src: concat!(
                    "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\n",
                    "C0.get(\"w1\").exec(\"true\");\n"
                ),
                at: Some(2),
            },
            code: 2,
            says: &["C0w1 is not running yet: call start()"],
        },
        ingress("ingdotdot", "/../x", &["'..' segment"]),
        ingress("ingdots", "..", &["does not start with '/'"]),
        ingress("ingslash", "//x", &["empty segment"]),
        ingress("ingspace", "/a b", &["contains ' '"]),
        ingress("ingsemi", "/a;b", &["contains ';'"]),
        ingress("ingbrace", "/a{", &["contains '{'"]),
        Case {
            name: "notutf8",
            input: Input::Bytes(b"let a = \"\xff\xfe\";\n"),
            code: 2,
            says: &["cannot read the script"],
        },
        args("nofile", &["/nonexistent/lesson.rhai"], &["was not found"]),
        args(
            "tozeroarg",
            &["--exec-timeout", "0"],
            &["--exec-timeout", "above 0 and at most 86400"],
        ),
        args(
            "tonanarg",
            &["--exec-timeout", "nan"],
            &["--exec-timeout", "above 0 and at most 86400"],
        ),
        args(
            "tonegarg",
            &["--exec-timeout=-1"],
            &["--exec-timeout", "above 0 and at most 86400"],
        ),
        args(
            "tohugearg",
            &["--exec-timeout", "1e300"],
            &["--exec-timeout: ", "(got 1e300;", "at most 86400"],
        ),
        args("bogusflag", &["--bogus"], &["--bogus"]),
        args(
            "instpath",
            &["--instance", "../victim", "/dev/null"],
            &["an instance name is"],
        ),
        args(
            "instempty",
            &["--instance", "", "/dev/null"],
            &["an instance name is"],
        ),
        Case {
            name: "instenv",
            input: Input::Args(&["/dev/null"], &[("KNETSIM_INSTANCE", "..")]),
            code: 2,
            says: &["an instance name is"],
        },
        args(
            "cleanpath",
            &["cleanup", "--instance", "../victim"],
            &["an instance name is"],
        ),
        args(
            "execnone",
            &["exec", "0", "w1", "--instance", "bad-execnone"],
            &["no node 'C0w1'"],
        ),
        args(
            "echoport",
            &["echo-server", "--port", "0", "--message", "x"],
            &["--port"],
        ),
    ]
}

fn ingress(name: &'static str, path: &'static str, says: &'static [&'static str]) -> Case {
    let src = format!(
        "{C0}C0.get(\"w1\").run_ingress(\"grp1\", 8001, [#{{ path: \"{path}\", endpoint: \"100.64.11.1:8000\" }}]);\n"
    );
    Case {
        name,
        input: Input::Script {
            src: Box::leak(src.into_boxed_str()),
            at: Some(2),
        },
        code: 2,
        says,
    }
}

/// A cluster declared with flannel option `opt`, refused on line 1.
fn flannel(name: &'static str, opt: &str, says: &'static [&'static str]) -> Case {
    let src = format!("cluster(\"0\", #{{ workers: 1, etcd: 1, flannel: {opt} }});\n");
    script(name, Box::leak(src.into_boxed_str()), 1, says)
}

/// Bad flannel network configs: each refused before anything starts.
fn flannel_configs() -> Vec<Case> {
    vec![
        script(
            "ingsvc",
            "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nC0.get(\"w1\").run_ingress(\"grp1\", 8001, [#{ path: \"/a\", service: \"nosvc\", port: 80 }]);\n",
            2,
            &["there is no Service 'nosvc' in C0", "C0.service(\"nosvc\""],
        ),
        flannel(
            "flsublen",
            r#"#{ network: "12.0.0.0/16", subnet_len: 16 }"#,
            &[
                "SubnetLen /16 is too short for network 12.0.0.0/16",
                "/18 to /30",
            ],
        ),
        flannel(
            "flmin",
            r#"#{ subnet_min: "12.0.0.0" }"#,
            &["SubnetMin 12.0.0.0 is not in the range of the Network 11.0.0.0/8"],
        ),
        flannel(
            "flmax",
            r#"#{ subnet_max: "9.0.0.0" }"#,
            &[
                "SubnetMax 9.0.0.0 is not in the range",
                "leave SubnetMax out",
            ],
        ),
        flannel(
            "flminmax",
            r#"#{ subnet_min: "11.99.0.0", subnet_max: "11.10.0.0" }"#,
            &[
                "SubnetMin 11.99.0.0 is above SubnetMax 11.10.0.0",
                "swap them",
            ],
        ),
        flannel(
            "flvni",
            "#{ vni: 16777216 }",
            &["VNI 16777216", "give 1 to 16777215"],
        ),
        flannel("flvni0", "#{ vni: 0 }", &["VNI 0", "give 1 to 16777215"]),
        flannel(
            "flport",
            "#{ port: 65536 }",
            &["Port 65536", "a UDP port is 1 to 65535"],
        ),
        flannel(
            "flunder",
            r#"#{ network: "10.244.0.0/16" }"#,
            &[
                "C0's flannel network 10.244.0.0/16 overlaps 10.0.0.0/8, the underlay",
                "pick a pod network outside",
            ],
        ),
        flannel(
            "flsvc",
            r#"#{ network: "100.64.0.0/10" }"#,
            &["overlaps 100.64.0.0/16, the Service range"],
        ),
        flannel(
            "flbackend",
            r#"#{ backend: "udp" }"#,
            &["backend type \"udp\"", "vxlan and host-gw"],
        ),
        flannel(
            "flkey",
            "#{ vxlan_port: 4789 }",
            &["unknown flannel option 'vxlan_port'", "subnet_len"],
        ),
        flannel(
            "flhostvni",
            r#"#{ backend: "host-gw", vni: 7 }"#,
            &["'vni' is the vxlan backend's", "leave 'vni' out"],
        ),
        flannel("fltype", "42", &["'flannel' must be a map", "JSON file"]),
        flannel(
            "flnofile",
            r#""no-such-dir/flannel.json""#,
            &[
                "cannot read the flannel config file no-such-dir/flannel.json",
                "current directory",
            ],
        ),
        flannel(
            "fljson",
            r#""Cargo.toml""#,
            &["the flannel config file Cargo.toml is not valid JSON"],
        ),
    ]
}

#[test]
fn bad_flannel_configs_are_refused_before_anything_starts() {
    let cases = flannel_configs();
    run_table("flannel", &cases);
    for c in &cases {
        let dir = knetsim::netns::record::run_dir(&format!("bad-{}", c.name));
        assert!(!dir.exists(), "{} left {}", c.name, dir.display());
    }
}

/// Cases that fail after start(): teardown runs with a cluster up.
fn after_start() -> Vec<Case> {
    const UP: &str =
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nlet w1 = C0.get(\"w1\");\n";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        Case {
            name: "twice",
            input: Input::Script {
                src: leak(format!("{UP}start();\n")),
                at: Some(4),
            },
            code: 2,
            says: &[
                "already started",
                "C0 is running",
                "cluster(\"1\"",
                "C0.add_worker()",
            ],
        },
        Case {
            name: "waitlog",
            input: Input::Script {
                src: leak(format!("{UP}w1.wait_log(\"never printed\", 1, 1);\n")),
                at: Some(4),
            },
            code: 2,
            says: &[
                "timed out",
                "C0w1's async.log to hold 1 line(s) with \"never printed\"",
                "commands started with exec_async write there",
            ],
        },
        Case {
            name: "waitlogcount",
            input: Input::Script {
                src: leak(format!("{UP}w1.wait_log(\"x\", 0);\n")),
                at: Some(4),
            },
            code: 2,
            says: &["wait_log: count 0", "give 1 or more"],
        },
        Case {
            name: "waitlogsecs",
            input: Input::Script {
                src: leak(format!("{UP}w1.wait_log(\"x\", 1, 0);\n")),
                at: Some(4),
            },
            code: 2,
            says: &["wait_log: 0 s is no time limit", "1 to 3600 seconds"],
        },
        Case {
            name: "runaway",
            input: Input::Script {
                src: leak(format!("{UP}let s = \"x\";\nloop {{ s += s; }}\n")),
                at: Some(5),
            },
            code: 2,
            says: &["a string grew past the limit"],
        },
        Case {
            name: "netnsleft",
            input: Input::Script {
                src: "netns(\"ip netns add myns\");\nnetns(\"ip netns exec myns ip link set lo up\");\nnosuch();\n",
                at: Some(3),
            },
            code: 2,
            says: &["there is no function nosuch"],
        },
        Case {
            name: "netnsother",
            input: Input::Script {
                src: "netns(\"ip netns exec nosuchns true\");\n",
                at: Some(1),
            },
            code: 2,
            says: &["no namespace nosuchns made by hand", "ip netns add nosuchns"],
        },
        Case {
            name: "netnscmd",
            input: Input::Script {
                src: "netns(\"ip link add x type veth\");\n",
                at: Some(1),
            },
            code: 2,
            says: &["netns() runs `ip netns add NAME`", "C0w1.exec"],
        },
        Case {
            name: "netnsnode",
            input: Input::Script {
                src: leak(format!("{UP}netns(\"ip netns add C0w1\");\n")),
                at: Some(4),
            },
            code: 2,
            says: &["already one of this run's"],
        },
        Case {
            name: "badpod",
            input: Input::Script {
                src: leak(format!("{UP}w1.create_container(\"no good\");\n")),
                at: Some(4),
            },
            code: 2,
            says: &["no good"],
        },
        Case {
            name: "bulkpods",
            input: Input::Script {
                src: leak(format!("{UP}C0.create_containers(#{{ w1: \"a\" }});\n")),
                at: Some(4),
            },
            code: 2,
            says: &["create_containers: 'w1' must map to a list of pod names"],
        },
        Case {
            name: "bulklabels",
            input: Input::Script {
                src: leak(format!(
                    "{UP}C0.create_containers(#{{ w1: [\"a\"] }}, #{{ label: 1 }});\n"
                )),
                at: Some(4),
            },
            code: 2,
            says: &["create_containers(...): unknown option 'label'"],
        },
        Case {
            name: "planpods",
            input: Input::Script {
                src: "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1, pods: [\"a\"] });\n",
                at: Some(1),
            },
            code: 2,
            says: &["'pods' must map workers to pod names", "#{ w1: [\"c1\"]"],
        },
        Case {
            name: "planworker",
            input: Input::Script {
                src: "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1, pods: #{ w2: [\"a\"] } });\n",
                at: Some(1),
            },
            code: 2,
            says: &["C0's pods: C0 has no node 'w2'"],
        },
        Case {
            name: "planname",
            input: Input::Script {
                src: "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1, pods: #{ w1: [\"no good\"] } });\n",
                at: Some(1),
            },
            code: 2,
            says: &["'no good' is not a valid container name"],
        },
        Case {
            // A refused `pods` option declares nothing: the same cluster can be declared
            // again (the console's habit of retrying a line), and only a third try clashes.
            name: "planretry",
            input: Input::Script {
                src: "try { cluster(\"0\", #{ workers: 1, etcd: 1, pods: #{ w2: [\"a\"] } }); } catch (e) { }\nlet C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\ncluster(\"0\");\n",
                at: Some(3),
            },
            code: 2,
            says: &["already declared"],
        },
        Case {
            name: "plantwice",
            input: Input::Script {
                src: "let C0 = cluster(\"0\", #{ workers: 2, etcd: 1, pods: #{ w1: [\"a\"], w2: [\"a\"] } });\n",
                at: Some(1),
            },
            code: 2,
            says: &["pod 'a' is named twice"],
        },
    ]
}

/// Runs one case and returns what went wrong with it, if anything.
fn check(dir: &ScriptDir, case: &Case) -> Option<String> {
    let instance = format!("bad-{}", case.name);
    let mut cmd = Command::new(knetsim_exe());
    cmd.stdin(Stdio::null());
    let mut file = None;
    match &case.input {
        Input::Script { src, .. } => {
            let p = dir.write(&format!("{}.rhai", case.name), src.as_bytes());
            cmd.args(["--no-pause", "--instance", &instance]).arg(&p);
            file = Some(p);
        }
        Input::Bytes(b) => {
            let p = dir.write(&format!("{}.rhai", case.name), b);
            cmd.args(["--no-pause", "--instance", &instance]).arg(&p);
        }
        Input::Args(a, env) => {
            cmd.env_remove("KNETSIM_INSTANCE").args(*a);
            for (k, v) in *env {
                cmd.env(k, v);
            }
        }
    }
    let r = Run::of(cmd.output().unwrap());
    let mut wrong = Vec::new();
    if r.code != case.code {
        wrong.push(format!("exit status {} (want {})", r.code, case.code));
    }
    for want in case.says {
        if !r.text.contains(want) {
            wrong.push(format!("no {want:?} in the message"));
        }
    }
    if let (Input::Script { at: Some(line), .. }, Some(p)) = (&case.input, &file) {
        let prefix = format!("{}:{line}:", p.display());
        let has_col = r.text.match_indices(&prefix).any(|(i, _)| {
            r.text[i + prefix.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        });
        if !has_col {
            wrong.push(format!("no {prefix}COLUMN in the message"));
        }
    }
    if r.text.contains("panicked") || r.text.contains("RUST_BACKTRACE") {
        wrong.push("a panic reached the user".into());
    }
    // Nothing left: checked here without panicking, so one report lists every bad case.
    let left = std::panic::catch_unwind(|| assert_nothing_left(&instance, &[]));
    if let Err(e) = left {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "something was left".into());
        wrong.push(why);
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!(
            "case {}: {}\n---\n{}---",
            case.name,
            wrong.join("; "),
            r.text
        ))
    }
}

fn run_table(test: &str, cases: &[Case]) {
    let dir = ScriptDir::new(test);
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "two cases share an instance name");
    let failures: Vec<String> = cases.iter().filter_map(|c| check(&dir, c)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_input_before_bring_up() {
    let cases = before_bring_up();
    assert!(
        cases.len() + after_start().len() >= 40,
        "the table has {} cases",
        cases.len()
    );
    let t0 = Instant::now();
    run_table("before", &cases);
    eprintln!(
        "{} cases before bring-up in {:.1} s",
        cases.len(),
        t0.elapsed().as_secs_f64()
    );
    // Nothing at all was created for them: no run directory, not even kept logs.
    for c in &cases {
        let dir = knetsim::netns::record::run_dir(&format!("bad-{}", c.name));
        assert!(!dir.exists(), "{} left {}", c.name, dir.display());
    }
}

#[test]
fn bad_input_after_start() {
    run_table("after", &after_start());
}

#[test]
fn an_exec_printing_without_end_is_cut_with_a_note() {
    let dir = ScriptDir::new("cut");
    let src = "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\n\
               let out = C0.get(\"w1\").exec(\"head -c 40000000 /dev/zero | tr '\\\\0' x\");\n\
               expect(out.contains(\"[output cut at 16 MiB: the command printed 38 MiB\"), \"the cut is noted\");\n\
               expect(out.len() < 17000000, \"only 16 MiB are kept\");\n";
    let p = dir.write("cut.rhai", src.as_bytes());
    let out = Command::new(knetsim_exe())
        .args(["--no-pause", "--instance", "bad-cut"])
        .arg(&p)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let r = Run::of(out);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_holds(&r.text, &["all 2 expectations held"]);
    assert_nothing_left("bad-cut", &[]);
}

/// Starts `src` and sends `signal` once `ready` exists (or at once when `ready` is None).
fn signalled(instance: &str, src: &str, ready: Option<&Path>, signal: Signal) -> Run {
    let dir = ScriptDir::new(instance);
    let p = dir.write("sig.rhai", src.as_bytes());
    let child = Command::new(knetsim_exe())
        .args(["--no-pause", "--instance", instance])
        .arg(&p)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = knetsim::netns::record::run_dir(instance).join("record.json");
    let t0 = Instant::now();
    let wait_for = ready.map(Path::to_path_buf).unwrap_or(record);
    while !wait_for.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    common::signal(child.id(), signal);
    let sent = Instant::now();
    let r = Run::of(child.wait_with_output().unwrap());
    eprintln!(
        "{instance}: exited {:.2} s after the signal (teardown included):\n{}",
        sent.elapsed().as_secs_f64(),
        r.text
    );
    r
}

#[test]
fn sigterm_and_ctrl_c_are_told_apart() {
    let r = signalled("bad-sigint", "sleep(60.0);\n", None, Signal::SIGINT);
    assert_eq!(r.code, 130, "{}", r.text);
    assert_holds(&r.text, &["interrupted (Ctrl-C)"]);
    assert_nothing_left("bad-sigint", &[]);

    let r = signalled("bad-sigterm", "sleep(60.0);\n", None, Signal::SIGTERM);
    assert_eq!(r.code, 143, "{}", r.text);
    assert!(
        r.text.contains("terminated (SIGTERM)") && !r.text.contains("Ctrl-C"),
        "{}",
        r.text
    );
    assert_nothing_left("bad-sigterm", &[]);
}

#[test]
fn sigterm_during_bring_up_stops_the_waits_and_tears_down() {
    // The signal lands while start() waits (for etcd, subnet.env or the routes): the wait
    // gives up, the script stops, and everything made so far is removed.
    let src = "let C0 = cluster(\"0\", #{ workers: 2, etcd: 1 });\nstart();\nsleep(60.0);\n";
    let etcd_log = knetsim::netns::record::run_dir("bad-sigwait").join("C0e1/etcd.log");
    let r = signalled("bad-sigwait", src, Some(&etcd_log), Signal::SIGTERM);
    assert_eq!(r.code, 143, "{}", r.text);
    assert_holds(&r.text, &["terminated (SIGTERM)"]);
    assert!(!r.text.contains("panicked"), "{}", r.text);
    assert_nothing_left("bad-sigwait", &["bad-sigwait-C0w1", "bad-sigwait-C0e1"]);
}

#[test]
fn ctrl_c_ends_the_ingress_wait() {
    // A stand-in nginx that passes `nginx -t` and then never listens: run_ingress waits
    // for it (10 s at most). Ctrl-C during that wait must end it and the run at once.
    use std::os::unix::fs::PermissionsExt;
    let dir = ScriptDir::new("ingwait");
    let fake = dir.write(
        "nginx",
        b"#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = \"-t\" ] && exit 0; done\nexec sleep 600\n",
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\n\
               C0.get(\"w1\").run_ingress(\"grp1\", 8001, [#{ path: \"/svc1\", endpoint: \"100.64.11.1:8000\" }]);\n";
    let p = dir.write("ing.rhai", src.as_bytes());
    let child = Command::new(knetsim_exe())
        .args(["--no-pause", "--instance", "bad-ingwait"])
        .arg(&p)
        .env("KNETSIM_NGINX", &fake)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stand-in is running (its log exists) once the wait has begun.
    let log = knetsim::netns::record::run_dir("bad-ingwait").join("C0w1/ingress/grp1/nginx.log");
    let t0 = Instant::now();
    while !log.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.exists(), "the ingress never started");
    std::thread::sleep(Duration::from_millis(300));
    common::signal(child.id(), Signal::SIGINT);
    let sent = Instant::now();
    let r = Run::of(child.wait_with_output().unwrap());
    eprintln!(
        "Ctrl-C in the ingress wait: exited {:.2} s later (teardown included)",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(r.code, 130, "{}", r.text);
    assert!(
        r.text.contains("interrupted (Ctrl-C)") && !r.text.contains("timed out"),
        "{}",
        r.text
    );
    assert_nothing_left("bad-ingwait", &["bad-ingwait-C0w1"]);
}
