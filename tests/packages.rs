//! One list of Debian packages, no drift. `scripts/packages.txt` (runtime) and
//! `scripts/build-packages.txt` (build only) are read by `scripts/setup` and by the
//! Dockerfile; these tests fail when the Dockerfile or setup stop reading them, when a listed
//! package does not exist, and when knetsim or a lesson runs a tool that no listed package
//! installs. The Docker image itself cannot be built on the project's machines (no base
//! image can be pulled), so the Dockerfile is checked by reading it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const RUNTIME_LIST: &str = "scripts/packages.txt";
const BUILD_LIST: &str = "scripts/build-packages.txt";
/// Where the image looks for programs, less /usr/local (where only knetsim itself goes).
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Package names of a list: one a line, comments after '#'.
fn package_list(rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in read(rel).lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.len(),
            1,
            "{rel}:{}: one package name a line, comments after '#'",
            i + 1
        );
        let name = words[0];
        assert!(
            valid_package_name(name),
            "{rel}:{}: '{name}' is not a Debian package name",
            i + 1
        );
        assert!(
            !out.iter().any(|p| p == name),
            "{rel}:{}: '{name}' is listed twice",
            i + 1
        );
        out.push(name.to_string());
    }
    assert!(!out.is_empty(), "{rel} lists no package");
    out
}

fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn sh(script: &str) -> (bool, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------
// A small Dockerfile reader: stages, each a list of instructions with continuation lines
// joined and comments dropped (as Docker does).

#[derive(Debug)]
struct Instruction {
    line: usize,
    op: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        if !acc.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body.trim());
        if continues {
            current = Some((start, acc));
        } else if !acc.trim().is_empty() {
            let (op, args) = acc
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((acc.trim(), ""));
            instructions.push(Instruction {
                line: start,
                op: op.to_ascii_uppercase(),
                args: args.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
    }
    assert!(
        current.is_none(),
        "Dockerfile: the last instruction ends with a line continuation"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        if ins.op == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_string()),
                [_] => None,
                _ => panic!("Dockerfile:{}: cannot read `FROM {}`", ins.line, ins.args),
            };
            stages.push(Stage {
                from: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            match stages.last_mut() {
                Some(s) => s.instructions.push(ins),
                None if ins.op == "ARG" => {}
                None => panic!("Dockerfile:{}: {} before the first FROM", ins.line, ins.op),
            }
        }
    }
    stages
}

fn dockerfile() -> Vec<Stage> {
    parse_dockerfile(&read("Dockerfile"))
}

/// `COPY [--from=X] SRC... DEST` of a stage: (from, sources, dest).
fn copies(stage: &Stage) -> Vec<(Option<String>, Vec<String>, String)> {
    stage
        .instructions
        .iter()
        .filter(|i| i.op == "COPY")
        .map(|i| {
            let mut from = None;
            let mut paths = Vec::new();
            for w in i.args.split_whitespace() {
                if let Some(f) = w.strip_prefix("--from=") {
                    from = Some(f.to_string());
                } else if !w.starts_with("--") {
                    paths.push(w.to_string());
                }
            }
            let dest = paths.pop().unwrap_or_default();
            (from, paths, dest)
        })
        .collect()
}

/// Where the stage copies a list to, and the RUN that installs from it: checks the RUN pipes
/// the list through `xargs apt-get install -y --no-install-recommends`, and returns the names
/// that RUN's own `sed` makes of the repository's list.
fn installed_by_stage(stage: &Stage, list: &str) -> Result<Vec<String>, String> {
    let dest = copies(stage)
        .into_iter()
        .find(|(from, srcs, _)| from.is_none() && srcs.iter().any(|s| s == list))
        .map(|(_, _, dest)| dest)
        .unwrap_or_else(|| {
            panic!(
                "the Dockerfile stage FROM {} does not COPY {list}",
                stage.from
            )
        });
    let workdir = stage
        .instructions
        .iter()
        .filter(|i| i.op == "WORKDIR")
        .map(|i| i.args.clone())
        .next();
    let dest_names: Vec<String> = {
        let mut v = vec![dest.clone()];
        if let Some(w) = &workdir {
            if !dest.starts_with('/') {
                v.push(format!("{}/{}", w.trim_end_matches('/'), dest));
            }
        }
        v
    };
    let runs: Vec<&Instruction> = stage
        .instructions
        .iter()
        .filter(|i| i.op == "RUN" && dest_names.iter().any(|d| i.args.contains(d.as_str())))
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "the stage FROM {} should read {list} (copied to {dest}) in exactly one RUN",
        stage.from
    );
    let run = runs[0];
    // The pipeline: `... && <reader> <dest> | xargs apt-get install ... && ...`
    let pipeline = run
        .args
        .split("&&")
        .map(str::trim)
        .find(|seg| seg.contains(&dest) && seg.contains('|'))
        .unwrap_or_else(|| {
            panic!(
                "Dockerfile:{}: expected `<sed ...> {dest} | xargs apt-get install ...` in `RUN {}`",
                run.line, run.args
            )
        });
    let (reader, consumer) = pipeline.split_once('|').unwrap();
    let consumer_words: Vec<&str> = consumer.split_whitespace().collect();
    assert!(
        consumer_words.starts_with(&["xargs", "apt-get", "install"])
            && consumer_words.contains(&"-y")
            && consumer_words.contains(&"--no-install-recommends"),
        "Dockerfile:{}: the list must feed `xargs apt-get install -y --no-install-recommends`, found `{}`",
        run.line,
        consumer.trim()
    );
    let extra: Vec<&str> = consumer_words[3..]
        .iter()
        .copied()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert!(
        extra.is_empty(),
        "Dockerfile:{}: `{}` adds package names of its own ({extra:?}): put them in {list}",
        run.line,
        consumer.trim()
    );
    let script = reader.replace(
        &dest,
        &shell_quote(&repo().join(list).display().to_string()),
    );
    let (ok, out, err) = sh(&format!("{script} | xargs -n1"));
    if !ok {
        return Err(format!(
            "Dockerfile:{}: its reader `{}` fails on {list}: {err}",
            run.line,
            reader.trim()
        ));
    }
    Ok(out.split_whitespace().map(String::from).collect())
}

#[test]
fn dockerfile_builds_in_one_stage_and_ships_a_slim_one() {
    let stages = dockerfile();
    assert!(
        stages.len() >= 2,
        "the Dockerfile should be multi-stage (build, then runtime)"
    );
    let build = &stages[0];
    let runtime = stages.last().unwrap();
    let build_name = build
        .name
        .clone()
        .expect("the build stage should be named (FROM ... AS build)");
    // The packages are checked against this machine's Debian release: the image must use it too.
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .unwrap_or("bookworm")
        .trim_matches('"')
        .to_string();
    for s in &stages {
        assert!(
            s.from.contains(&codename),
            "Dockerfile: FROM {} is not Debian {codename}, the release whose packages tests/packages.rs checks",
            s.from
        );
    }
    assert_eq!(
        runtime.from,
        format!("debian:{codename}-slim"),
        "the runtime stage should be Debian slim"
    );
    let build_runs: String = build
        .instructions
        .iter()
        .filter(|i| i.op == "RUN")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        build_runs.contains("cargo build --release --locked --bins"),
        "the build stage should run `cargo build --release --locked --bins`"
    );
    // No toolchain and no sources in the final image.
    for ins in &runtime.instructions {
        for tool in [
            "cargo",
            "rustup",
            "rustc",
            "build-packages.txt",
            "protobuf-compiler",
        ] {
            assert!(
                !ins.args.split_whitespace().any(|w| w.contains(tool)),
                "Dockerfile:{}: the runtime stage mentions {tool}: the toolchain belongs in the build stage",
                ins.line
            );
        }
    }
    let runtime_copies = copies(runtime);
    for (from, srcs, _) in &runtime_copies {
        assert!(
            !srcs
                .iter()
                .any(|s| s == "." || s == "./" || s == "src" || s == "src/"),
            "the runtime stage should not copy the sources (COPY {srcs:?})"
        );
        if let Some(f) = from {
            assert_eq!(
                f, &build_name,
                "the runtime stage copies only from the build stage"
            );
        }
    }
    let binary = runtime_copies
        .iter()
        .find(|(from, srcs, _)| {
            from.is_some() && srcs.iter().any(|s| s.ends_with("target/release/knetsim"))
        })
        .map(|(_, _, dest)| dest.clone())
        .expect("the runtime stage should COPY --from=<build> .../target/release/knetsim");
    let workdir = runtime
        .instructions
        .iter()
        .rev()
        .find(|i| i.op == "WORKDIR")
        .map(|i| i.args.clone())
        .expect("the runtime stage needs a WORKDIR: lesson paths like lessons/03-loadbalance.rhai are relative to it");
    for dir in ["lessons", "scenarios", "utils"] {
        assert!(
            runtime_copies
                .iter()
                .any(|(from, srcs, dest)| from.is_none()
                    && srcs.iter().any(|s| s.trim_end_matches('/') == dir)
                    && (dest.trim_end_matches('/') == dir
                        || dest.trim_end_matches('/')
                            == format!("{}/{dir}", workdir.trim_end_matches('/')))),
            "the runtime stage should COPY {dir}/ to {workdir}/{dir}"
        );
    }
    let entry = runtime
        .instructions
        .iter()
        .rev()
        .find(|i| i.op == "ENTRYPOINT")
        .expect("the runtime stage needs an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&entry.args).unwrap_or_else(|e| {
        panic!(
            "Dockerfile:{}: ENTRYPOINT should be JSON (exec form): {e}",
            entry.line
        )
    });
    // `docker run ... knetsim` (no arguments) runs the default scenario and the console; any
    // argument goes to `knetsim [SCRIPT]`. So the entrypoint is the binary, with no script.
    assert_eq!(
        argv.len(),
        1,
        "ENTRYPOINT {argv:?}: arguments after `docker run knetsim` must reach knetsim as SCRIPT"
    );
    let on_path = binary == "/usr/local/bin/knetsim" || binary == "/usr/local/bin/";
    assert!(
        argv[0] == "knetsim" && on_path || argv[0] == binary,
        "ENTRYPOINT {argv:?} does not run the binary copied to {binary}"
    );
    assert!(
        !runtime.instructions.iter().any(|i| i.op == "CMD"),
        "a CMD would be passed to knetsim as SCRIPT when docker run has no arguments; the default scenario needs none"
    );
}

#[test]
fn dockerfile_installs_exactly_the_lists() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    assert_eq!(
        installed_by_stage(runtime, RUNTIME_LIST).unwrap_or_else(|e| panic!("{e}")),
        package_list(RUNTIME_LIST),
        "the runtime stage does not install exactly {RUNTIME_LIST}"
    );
    assert_eq!(
        installed_by_stage(&stages[0], BUILD_LIST).unwrap_or_else(|e| panic!("{e}")),
        package_list(BUILD_LIST),
        "the build stage does not install exactly {BUILD_LIST}"
    );
    // Every apt-get install in the image is fed from a list: no inline package names.
    for s in &stages {
        for i in s
            .instructions
            .iter()
            .filter(|i| i.op == "RUN" && i.args.contains("apt-get install"))
        {
            assert!(
                i.args.contains("xargs apt-get install") && i.args.matches("apt-get install").count() == 1,
                "Dockerfile:{}: apt-get install with names of its own; add them to {RUNTIME_LIST} or {BUILD_LIST}",
                i.line
            );
        }
    }
    // And no listed name is repeated anywhere in the Dockerfile (a second, drifting list).
    let text: String = read("Dockerfile")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let words: BTreeSet<&str> = text
        .split(|c: char| c.is_whitespace() || "\"'[],;&|\\=".contains(c))
        .collect();
    for p in package_list(RUNTIME_LIST)
        .iter()
        .chain(package_list(BUILD_LIST).iter())
    {
        assert!(
            !words.contains(p.as_str()),
            "the Dockerfile names the package '{p}' itself: it should only read the lists"
        );
    }
    // The runtime list and the build list do not overlap (the image gets only the first).
    let runtime_set: BTreeSet<String> = package_list(RUNTIME_LIST).into_iter().collect();
    for p in package_list(BUILD_LIST) {
        assert!(
            !runtime_set.contains(&p),
            "'{p}' is in both {RUNTIME_LIST} and {BUILD_LIST}"
        );
    }
}

#[test]
fn dockerignore_keeps_build_output_out_of_the_context() {
    let text = read(".dockerignore");
    let entries: BTreeSet<&str> = text
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git", "node_modules"] {
        assert!(
            entries.contains(must),
            ".dockerignore should exclude {must}"
        );
    }
}

#[test]
fn setup_reads_the_same_lists() {
    let setup = read("scripts/setup");
    let want = setup
        .lines()
        .find(|l| l.trim_start().starts_with("want()"))
        .expect("scripts/setup should define want() to read the package lists");
    for list in [RUNTIME_LIST, BUILD_LIST] {
        assert!(
            setup
                .lines()
                .any(|l| l.contains("want ") && l.contains(list)),
            "scripts/setup does not install from {list}"
        );
        let (ok, out, err) = sh(&format!("{want}\nwant {} | xargs -n1", shell_quote(list)));
        assert!(ok, "scripts/setup's want() failed on {list}: {err}");
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            package_list(list),
            "scripts/setup's want() reads {list} differently from the Dockerfile"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The packages themselves, against this machine's Debian.

/// The names among `pkgs` that apt-cache has a record for (one call: each costs seconds).
fn apt_cache_known(pkgs: &[String]) -> BTreeSet<String> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(pkgs)
        .output()
        .expect("apt-cache was not found: these checks need Debian's apt (the project's machines are Debian 12)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(|p| p.trim().to_string())
        .filter(|p| pkgs.contains(p))
        .collect()
}

#[test]
fn every_listed_package_exists_in_debian() {
    assert!(
        Command::new("apt-cache").arg("--version").output().is_ok(),
        "apt-cache was not found: these checks need Debian's apt (the project's machines are Debian 12)"
    );
    let mut unknown = Vec::new();
    for list in [RUNTIME_LIST, BUILD_LIST] {
        let pkgs = package_list(list);
        let known = apt_cache_known(&pkgs);
        for p in pkgs.iter().filter(|p| !known.contains(*p)) {
            unknown.push(format!("{p} (in {list})"));
        }
    }
    assert!(
        unknown.is_empty(),
        "apt-cache does not know: {}. Fix the name, or run `apt-get update` (sudo scripts/setup does) if the lists are stale",
        unknown.join(", ")
    );
}

/// The programs a piece of code runs, with where each was found.
type Tools = BTreeMap<String, BTreeSet<String>>;

fn add_tool(tools: &mut Tools, name: &str, whence: &str) {
    tools
        .entry(name.to_string())
        .or_default()
        .insert(whence.to_string());
}

/// The string literal starting at `s` (after optional whitespace): "..." or `...`, with
/// the byte offset in `s` just past its closing quote.
fn literal_at(s: &str) -> Option<(String, usize)> {
    let lead = s.len() - s.trim_start().len();
    let body = &s[lead..];
    let quote = body.chars().next().filter(|c| *c == '"' || *c == '`')?;
    let mut out = String::new();
    let mut chars = body.char_indices().skip(1);
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            c if c == quote => {
                let end = chars.next().map(|(i, _)| i).unwrap_or(body.len());
                return Some((out, lead + end));
            }
            c => out.push(c),
        }
    }
    None
}

fn string_literal(s: &str) -> Option<String> {
    literal_at(s).map(|(l, _)| l)
}

/// The second argument of a call, when both are literals: `("c1", "cmd")`.
fn second_literal(s: &str) -> Option<String> {
    let (_, end) = literal_at(s)?;
    let after_comma = s[end..].trim_start().strip_prefix(',')?;
    string_literal(after_comma)
}

const SHELL_WORDS: [&str; 16] = [
    "cd", "export", "exit", "for", "do", "done", "if", "then", "else", "fi", "while", "read",
    "set", "!", "{", "}",
];

/// The programs a shell command line starts: the first word of each pipeline segment
/// (splitting on `|`, `;`, `&`, `(`, `)` outside quotes).
fn commands_of_shell_line(line: &str) -> Vec<String> {
    let mut segments = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '|' | ';' | '&' | '(' | ')') => segments.push(String::new()),
            (None, c) => segments.last_mut().unwrap().push(c),
        }
    }
    let mut out = Vec::new();
    for seg in segments {
        // `exec cmd` runs cmd in the shell's place: cmd is the program.
        let first = seg
            .split_whitespace()
            .skip_while(|w| *w == "exec")
            .find(|w| w.find('=').is_none_or(|i| i == 0) && !w.starts_with('-'));
        if let Some(w) = first {
            if w.contains('$')
                || w.contains('>')
                || w.contains('<')
                || w.chars().all(|c| c.is_ascii_digit())
            {
                continue;
            }
            if SHELL_WORDS.contains(&w) {
                continue;
            }
            out.push(w.to_string());
        }
    }
    out
}

/// Programs the Rust code starts by name, and the binary/package pairs it names in its
/// "install X" hints (`require_binary(bin, pkg)` and the doctor's table).
fn tools_in_source(tools: &mut Tools, hints: &mut Vec<(String, String, String)>) {
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for (pat, second) in [("Command::new(", false), ("command_in(", true)] {
            for (i, _) in text.match_indices(pat) {
                let args = &text[i + pat.len()..];
                let prog = if second {
                    args.split_once(',')
                        .and_then(|(_, rest)| string_literal(rest))
                } else {
                    string_literal(args)
                };
                if let Some(p) = prog {
                    if !p.is_empty() && !p.starts_with("/bin/sh") {
                        add_tool(tools, &p, &rel);
                    }
                }
            }
        }
        for (i, _) in text.match_indices("require_binary(") {
            let args = &text[i + "require_binary(".len()..];
            if let (Some(bin), Some(pkg)) = (string_literal(args), second_literal(args)) {
                hints.push((bin.clone(), pkg, rel.clone()));
                add_tool(tools, &bin, &rel);
            }
        }
        // The doctor's table: ("bin", "package", required, "why"),
        if let Some(start) = text.find("const BINARIES") {
            let block = &text[start
                ..text[start..]
                    .find("];")
                    .map(|e| start + e)
                    .unwrap_or(text.len())];
            let mut rest = block;
            while let Some(open) = rest.find('(') {
                let after = &rest[open + 1..];
                if let (Some(bin), Some(pkg)) = (string_literal(after), second_literal(after)) {
                    hints.push((bin.clone(), pkg, rel.clone()));
                    add_tool(tools, &bin, &rel);
                }
                rest = after;
            }
        }
    }
}

/// Programs the lessons and scenarios run through exec/exec_container (literal commands).
fn tools_in_scripts(tools: &mut Tools) {
    for dir in ["lessons", "scenarios"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(repo()).unwrap().display().to_string();
            let text = std::fs::read_to_string(&f).unwrap();
            for (pat, second) in [
                (".exec(", false),
                (".exec_async(", false),
                (".exec_container(", true),
                (".exec_container_async(", true),
            ] {
                for (i, _) in text.match_indices(pat) {
                    let args = &text[i + pat.len()..];
                    let cmd = if second {
                        second_literal(args)
                    } else {
                        string_literal(args)
                    };
                    for prog in cmd.iter().flat_map(|c| commands_of_shell_line(c)) {
                        add_tool(tools, &prog, &rel);
                    }
                }
            }
        }
    }
}

/// The installed file for a program name, in the directories the image searches.
fn locate(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return p.exists().then_some(p);
    }
    SYSTEM_DIRS
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The packages that own a program (usr-merged systems list /bin and /usr/bin apart).
fn owners(tool: &str, found: &Path) -> BTreeSet<String> {
    let name = found.file_name().unwrap().to_string_lossy().into_owned();
    let mut candidates: Vec<PathBuf> = vec![found.to_path_buf()];
    if !tool.contains('/') {
        candidates.extend(SYSTEM_DIRS.iter().map(|d| Path::new(d).join(&name)));
    }
    // A tool reached through Debian's alternatives (awk -> /etc/alternatives/awk -> mawk)
    // belongs to the package of the program the links end at.
    if let Ok(real) = std::fs::canonicalize(found) {
        candidates.push(real);
    }
    let mut pkgs = BTreeSet::new();
    // One call for all candidates: dpkg-query answers for those it knows.
    if let Ok(out) = Command::new("dpkg-query")
        .arg("-S")
        .args(&candidates)
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("diversion ") {
                continue;
            }
            if let Some((names, _)) = line.split_once(": ") {
                for n in names.split(',') {
                    pkgs.insert(n.trim().split(':').next().unwrap().to_string());
                }
            }
        }
    }
    pkgs
}

/// What an installed package depends on directly (dpkg's record: fast).
fn direct_depends(pkg: &str) -> BTreeSet<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Pre-Depends}, ${Depends}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(|d| d.split(':').next().unwrap().to_string())
        .collect()
}

/// The listed packages and everything they depend on: what an image built from the list has.
fn dependency_closure(list: &[String]) -> BTreeSet<String> {
    let out = Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(list)
        .output()
        .expect("apt-cache was not found: these checks need Debian's apt");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(|l| l.trim().split(':').next().unwrap().to_string())
        .chain(list.iter().cloned())
        .collect()
}

/// Required packages are in every Debian image, slim included.
fn in_every_debian(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Priority} ${Essential}", pkg])
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            s.starts_with("required") || s.ends_with("yes")
        })
        .unwrap_or(false)
}

#[test]
fn every_tool_comes_from_a_listed_package() {
    let list = package_list(RUNTIME_LIST);
    let listed: BTreeSet<String> = list.iter().cloned().collect();
    let mut tools = Tools::new();
    let mut hints = Vec::new();
    tools_in_source(&mut tools, &mut hints);
    tools_in_scripts(&mut tools);
    // The names this test exists for must be among what it found, or the scan is broken.
    for must in ["etcd", "nft", "ip", "etcdctl", "tcpdump", "tshark", "ping"] {
        assert!(
            tools.contains_key(must),
            "the scan of src/ and lessons/ did not find `{must}`: found {:?}",
            tools.keys()
        );
    }
    let closure = dependency_closure(&list);
    let mut problems = Vec::new();
    for (bin, pkg, whence) in &hints {
        if !listed.contains(pkg) {
            problems.push(format!(
                "{whence} tells users to install '{pkg}' for {bin}, but {RUNTIME_LIST} does not list it"
            ));
        }
    }
    for (tool, whence) in &tools {
        let whence = whence.iter().cloned().collect::<Vec<_>>().join(", ");
        let Some(found) = locate(tool) else {
            problems.push(format!(
                "`{tool}` (run by {whence}) is not installed in {}: add its package to {RUNTIME_LIST} and run sudo scripts/setup",
                SYSTEM_DIRS.join(", ")
            ));
            continue;
        };
        let pkgs = owners(tool, &found);
        if pkgs.is_empty() {
            problems.push(format!(
                "`{tool}` (run by {whence}) is {} but no Debian package owns it: the image would not have it",
                found.display()
            ));
            continue;
        }
        if !pkgs
            .iter()
            .any(|p| closure.contains(p) || in_every_debian(p))
        {
            problems.push(format!(
                "`{tool}` (run by {whence}) comes from {pkgs:?}, which {RUNTIME_LIST} neither lists nor pulls in: add it there"
            ));
        }
        for (bin, pkg, hint_at) in hints.iter().filter(|(b, _, _)| b == tool) {
            // The hint may name a package that pulls the owner in (nginx-light -> nginx).
            if !pkgs.contains(pkg) && !pkgs.iter().any(|p| direct_depends(pkg).contains(p)) {
                problems.push(format!(
                    "{hint_at} says `{bin}` comes from '{pkg}', but dpkg says {pkgs:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "package list drift:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The checks above must be able to fail: feed them broken inputs.

#[test]
fn the_dockerfile_reader_sees_stages_and_continuations() {
    let stages = parse_dockerfile(
        "ARG X=1\nFROM rust:1-bookworm AS build\n# a comment\nRUN a \\\n  # inside\n  && b\nFROM debian:bookworm-slim\nCOPY --from=build /x /y\nENTRYPOINT [\"knetsim\"]\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[0].instructions[0].args, "a && b");
    assert_eq!(stages[1].from, "debian:bookworm-slim");
    assert_eq!(
        copies(&stages[1])[0],
        (Some("build".into()), vec!["/x".into()], "/y".into())
    );
}

#[test]
#[should_panic(expected = "adds package names of its own")]
fn an_inline_package_next_to_the_list_is_caught() {
    let stages = parse_dockerfile(&format!(
        "FROM debian:bookworm-slim\nCOPY {RUNTIME_LIST} /tmp/p.txt\nRUN apt-get update && sed -e 's/#.*//' /tmp/p.txt | xargs apt-get install -y --no-install-recommends vim\n"
    ));
    let _ = installed_by_stage(&stages[0], RUNTIME_LIST);
}

#[test]
fn a_reader_that_keeps_comments_yields_a_different_list() {
    // A Dockerfile whose sed forgot the comments would install "#", "the", "cluster", ...
    let stages = parse_dockerfile(&format!(
        "FROM debian:bookworm-slim\nCOPY {RUNTIME_LIST} /tmp/p.txt\nRUN apt-get update && cat /tmp/p.txt | xargs apt-get install -y --no-install-recommends\n"
    ));
    let got = installed_by_stage(&stages[0], RUNTIME_LIST);
    assert!(got != Ok(package_list(RUNTIME_LIST)), "{got:?}");
}

#[test]
fn commands_are_split_as_the_shell_would() {
    assert_eq!(
        commands_of_shell_line(
            "ETCDCTL_API=2 etcdctl cluster-health | grep -E 'a|b' && test -e /y || echo no"
        ),
        ["etcdctl", "grep", "test", "echo"]
    );
    assert_eq!(
        commands_of_shell_line("mkdir -p ${www} && echo ${c} > ${www}/index.html"),
        ["mkdir", "echo"]
    );
    assert_eq!(
        commands_of_shell_line("exec timeout 10 tcpdump -i eth0; exec nc -l 80"),
        ["timeout", "nc"],
        "exec runs its command in the shell's place"
    );
    assert_eq!(
        string_literal(r#" "a \"b\"" rest"#).as_deref(),
        Some(r#"a "b""#)
    );
    assert_eq!(
        second_literal(r#""é\"x", "ls""#).as_deref(),
        Some("ls"),
        "offsets count bytes of the source, escapes and all"
    );
    assert_eq!(
        second_literal(r#""c1", `ping -c 3 ${ip}`)"#).as_deref(),
        Some("ping -c 3 ${ip}")
    );
}

#[test]
fn a_tool_from_an_unlisted_package_is_reported() {
    // gcc is on the build list, not the runtime list: a lesson running it must be caught.
    let list = package_list(RUNTIME_LIST);
    let closure = dependency_closure(&list);
    let Some(found) = locate("gcc") else {
        println!(
            "skipped: gcc is not installed here (it is on {BUILD_LIST}; run sudo scripts/setup)"
        );
        return;
    };
    let pkgs = owners("gcc", &found);
    assert!(!pkgs.is_empty(), "dpkg owns {}", found.display());
    assert!(
        !pkgs
            .iter()
            .any(|p| closure.contains(p) || in_every_debian(p)),
        "gcc should not be reachable from the runtime list, found {pkgs:?}"
    );
    let asked = ["curl".to_string(), "knetsim-no-such-package".to_string()];
    assert_eq!(
        apt_cache_known(&asked).into_iter().collect::<Vec<_>>(),
        ["curl"],
        "apt-cache should know curl and not a made-up name"
    );
}
