//! The workshop's slide deck, presentation.md: it renders to HTML with the Marp CLI pinned
//! in package-lock.json (installed by `scripts/setup --slides`, which scripts/test runs),
//! every image it shows is a file in the repository, and every command in its code blocks
//! is one that a lesson or a test also runs.
//!
//! Code blocks: ```sh lines are shell commands on the host; ```console lines starting with
//! `knetsim> ` are console lines (the rest is output); ```rhai lines are script code;
//! ```text is output and is not checked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DECK: &str = "presentation.md";
const PROMPT: &str = "knetsim> ";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Reading the deck.

#[derive(Debug, Clone, PartialEq)]
struct Block {
    lang: String,
    line: usize,
    lines: Vec<String>,
}

#[derive(Debug)]
struct Deck {
    slides: usize,
    blocks: Vec<Block>,
    /// (line, target) of every `![...](target)`.
    images: Vec<(usize, String)>,
}

fn parse_deck(md: &str) -> Result<Deck, String> {
    let lines: Vec<&str> = md.lines().collect();
    if lines.first().map(|l| l.trim()) != Some("---") {
        return Err("no front matter: a Marp deck starts with ---, marp: true, ---".into());
    }
    let end = lines[1..]
        .iter()
        .position(|l| l.trim() == "---")
        .ok_or("the front matter (---) is not closed")?;
    if !lines[1..end + 1].iter().any(|l| l.trim() == "marp: true") {
        return Err("the front matter lacks `marp: true`".into());
    }
    let mut i = end + 2;
    let mut deck = Deck {
        slides: 1,
        blocks: Vec::new(),
        images: Vec::new(),
    };
    let mut open: Option<Block> = None;
    while i < lines.len() {
        let line = lines[i];
        let n = i + 1;
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (Some(b), true) if line.trim() == "```" => {
                deck.blocks.push(b.clone());
                open = None;
            }
            (Some(b), _) => b.lines.push(line.to_string()),
            (None, true) => {
                open = Some(Block {
                    lang: line.trim().trim_start_matches('`').trim().to_string(),
                    line: n,
                    lines: Vec::new(),
                })
            }
            (None, false) => {
                if line.trim_end() == "---" {
                    deck.slides += 1;
                }
                let mut rest = line;
                while let Some(p) = rest.find("![") {
                    rest = &rest[p + 2..];
                    if let Some(q) = rest.find("](") {
                        let target = &rest[q + 2..];
                        let end = target.find(')').unwrap_or(target.len());
                        let url = target[..end].split_whitespace().next().unwrap_or("");
                        deck.images.push((n, url.to_string()));
                        rest = &target[end..];
                    }
                }
            }
        }
        i += 1;
    }
    if let Some(b) = open {
        return Err(format!("{DECK}:{}: a code block is never closed", b.line));
    }
    Ok(deck)
}

/// Image targets must be files in the repository: no hot-linked or inline images.
fn check_images(deck: &Deck, base: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, url) in &deck.images {
        if url.contains("://") || url.starts_with("//") || url.starts_with("data:") {
            problems.push(format!(
                "{DECK}:{line}: image {url} is not a file in the repository"
            ));
            continue;
        }
        let path = base.join(url);
        match std::fs::read_to_string(&path) {
            Err(e) => problems.push(format!("{DECK}:{line}: image {url}: {e}")),
            Ok(text) if url.ends_with(".svg") => {
                if !(text.contains("<svg") && text.trim_end().ends_with("</svg>")) {
                    problems.push(format!("{DECK}:{line}: {url} is not a whole SVG document"));
                }
                if text.contains("href=\"http") || text.contains("url(http") {
                    problems.push(format!(
                        "{DECK}:{line}: {url} links to something outside the repository"
                    ));
                }
            }
            Ok(_) => {}
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Rendering.

fn marp() -> Result<PathBuf, String> {
    let bin = repo().join("node_modules/.bin/marp");
    if !bin.exists() {
        return Err(format!(
            "the Marp CLI is not installed ({} is missing): run `sudo scripts/setup --slides` \
             (scripts/test does), which installs Node if needed and the version pinned in package-lock.json",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Renders `md` to HTML with the pinned Marp CLI and checks the result against the source:
/// one section per slide, one <pre> per code block, every image present.
fn render(md: &Path, out: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(md).map_err(|e| format!("{}: {e}", md.display()))?;
    let deck = parse_deck(&text)?;
    let base = md.parent().unwrap();
    let problems = check_images(&deck, base);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let _ = std::fs::remove_file(out);
    let mut child = Command::new(marp()?)
        .arg("--no-stdin")
        .arg(md)
        .arg("-o")
        .arg(out)
        .current_dir(base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run the Marp CLI: {e} (is Node installed? run `sudo scripts/setup --slides`)")
        })?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the Marp CLI did not finish within 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !status.success() {
        return Err(format!("marp exited with {status}:\n{log}"));
    }
    let html = std::fs::read_to_string(out)
        .map_err(|e| format!("marp wrote no {}: {e}\n{log}", out.display()))?;
    if html.trim().is_empty() {
        return Err(format!("marp wrote an empty {}", out.display()));
    }
    let sections = (1..=deck.slides + 1)
        .take_while(|n| html.contains(&format!("<section id=\"{n}\"")))
        .count();
    if sections != deck.slides {
        return Err(format!(
            "{} has {} slide separators for {} slides, but the HTML has {sections} slides",
            md.display(),
            deck.slides - 1,
            deck.slides
        ));
    }
    let pres = html.matches("<pre").count();
    if pres != deck.blocks.len() {
        return Err(format!(
            "{} has {} code blocks, the HTML {pres}",
            md.display(),
            deck.blocks.len()
        ));
    }
    for (_, url) in &deck.images {
        if !html.contains(url.as_str()) {
            return Err(format!("the HTML does not show the image {url}"));
        }
    }
    Ok(html)
}

#[test]
fn the_deck_renders_to_html() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("presentation.html");
    let html = render(&repo().join(DECK), &out).unwrap_or_else(|e| panic!("{e}"));
    let deck = parse_deck(&read(DECK)).unwrap();
    assert!(
        deck.slides >= 20,
        "the deck has only {} slides",
        deck.slides
    );
    for chapter in ["flannel", "kube-proxy", "nginx", "Skupper", "namespace"] {
        assert!(
            html.contains(chapter),
            "the rendered deck never mentions {chapter}"
        );
    }
    println!("rendered {} slides to {}", deck.slides, out.display());
}

#[test]
fn every_chapter_ends_with_its_lesson() {
    let deck = parse_deck(&read(DECK)).unwrap();
    let lessons: Vec<String> = deck
        .blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .flat_map(|b| b.lines.iter())
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("lessons/0")))
        .map(String::from)
        .collect();
    // Every lesson in lessons/ has its chapter: the deck runs each one.
    let mut files: Vec<String> = std::fs::read_dir(repo().join("lessons"))
        .expect("lessons/")
        .filter_map(|e| e.ok())
        .map(|e| format!("lessons/{}", e.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".rhai"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "lessons/ holds {files:?}");
    for f in &files {
        assert!(
            lessons.iter().any(|l| l == f),
            "no chapter of the deck runs {f}: found {lessons:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Every command in the deck is one a lesson or a test runs.

/// String literals of a source file ("...", `...`, r#"..."#), unescaped, comments skipped.
fn literals(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // a char literal such as '"'
            continue;
        }
        if c == '\'' && chars.get(i + 1) == Some(&'\\') && chars.get(i + 3) == Some(&'\'') {
            i += 4; // an escaped char literal such as '\"'
            continue;
        }
        if c == 'r' && matches!(chars.get(i + 1), Some('#') | Some('"')) {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = chars[j + 1..].iter().collect();
                if let Some(end) = rest.find(&close) {
                    out.push(rest[..end].to_string());
                    i = j + 1 + rest[..end].chars().count() + close.chars().count();
                    continue;
                }
            }
        }
        if c == '"' || c == '`' {
            let mut s = String::new();
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' && j + 1 < chars.len() {
                    j += 1;
                    s.push(match chars[j] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    s.push(chars[j]);
                }
                j += 1;
            }
            out.push(s);
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn no_space(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// What lessons and tests run: their string literals, and the lessons' code.
struct Corpus {
    /// Whitespace-normalised string literals of lessons/*.rhai and tests/*.rs.
    literals: Vec<(String, String)>,
    /// Whitespace-free text of each lesson, and of each string literal of the tests.
    code: Vec<(String, String)>,
    /// Lesson files that tests/lessons.rs runs.
    tested_lessons: BTreeSet<String>,
    /// Some test runs the default scenario.
    default_scenario_tested: bool,
    knetsim_help: String,
}

fn source_files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == ext));
    files.sort();
    files
}

fn corpus() -> Corpus {
    let mut c = Corpus {
        literals: Vec::new(),
        code: Vec::new(),
        tested_lessons: BTreeSet::new(),
        default_scenario_tested: false,
        knetsim_help: String::new(),
    };
    for f in source_files("lessons", "rhai")
        .into_iter()
        .chain(source_files("tests", "rs"))
    {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        if rel == "tests/deck.rs" {
            continue; // this file names the commands it looks for
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let lits = literals(&text);
        if rel.ends_with(".rhai") {
            c.code.push((rel.clone(), no_space(&text)));
        } else {
            c.code
                .extend(lits.iter().map(|l| (rel.clone(), no_space(l))));
            if text.contains("DEFAULT_SCENARIO") && text.contains("run_source") {
                c.default_scenario_tested = true;
            }
        }
        if rel == "tests/lessons.rs" {
            c.tested_lessons
                .extend(lits.iter().filter(|l| l.ends_with(".rhai")).cloned());
        }
        c.literals
            .extend(lits.into_iter().map(|l| (rel.clone(), squash(&l))));
    }
    let help = Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .arg("--help")
        .output()
        .unwrap();
    c.knetsim_help = String::from_utf8_lossy(&help.stdout).into_owned();
    c
}

impl Corpus {
    /// A shell command a lesson or test runs: a literal that is the command, or starts with
    /// it and goes on with a pipe, a list or a redirection.
    fn runs_shell(&self, cmd: &str) -> Option<&str> {
        let cmd = squash(cmd);
        self.literals
            .iter()
            .find(|(_, l)| {
                l == &cmd
                    || l.strip_prefix(&cmd).is_some_and(|rest| {
                        [" |", " &&", " ||", " ;", " 2>", " >"]
                            .iter()
                            .any(|p| rest.starts_with(p))
                    })
            })
            .map(|(f, _)| f.as_str())
    }

    /// A console line a test feeds the console exactly.
    fn has_line(&self, line: &str) -> Option<&str> {
        let line = squash(line);
        self.literals
            .iter()
            .find(|(_, l)| l == &line)
            .map(|(f, _)| f.as_str())
    }

    /// Script code a lesson or test contains (whitespace ignored).
    fn has_code(&self, code: &str) -> Option<&str> {
        let code = no_space(code);
        if code.is_empty() {
            return None;
        }
        self.code
            .iter()
            .find(|(_, t)| t.contains(&code))
            .map(|(f, _)| f.as_str())
    }

    /// `knetsim [--flag ...] [SCRIPT]`: the flags exist and SCRIPT is a lesson a test runs.
    fn check_knetsim_args(&self, args: &[&str]) -> Result<String, String> {
        let mut script = None;
        for a in args {
            if a.starts_with("--") {
                if !self.knetsim_help.contains(a) {
                    return Err(format!("knetsim has no option {a}"));
                }
            } else if script.replace(*a).is_some() {
                return Err(format!("knetsim takes one SCRIPT, given {args:?}"));
            }
        }
        match script {
            None if self.default_scenario_tested => {
                Ok("the default scenario, run by a test".into())
            }
            None => Err("no test runs the default scenario".into()),
            Some(s) => {
                if !repo().join(s).is_file() {
                    return Err(format!("{s} does not exist"));
                }
                let name = Path::new(s)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if !s.starts_with("lessons/") || !self.tested_lessons.contains(&name) {
                    return Err(format!("{s} is not a lesson that tests/lessons.rs runs"));
                }
                Ok(format!("{s}, run by tests/lessons.rs"))
            }
        }
    }
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(p) => &line[..p],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    }
}

fn is_node(word: &str) -> bool {
    let rest = match word.strip_prefix('C') {
        Some(r) => r,
        None => return false,
    };
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    let kind = rest[digits..].chars().next();
    digits > 0
        && matches!(kind, Some('w') | Some('e'))
        && rest[digits + 1..].chars().all(|c| c.is_ascii_digit())
        && rest.len() > digits + 1
}

/// Checks one command of the deck; Ok names what runs it.
fn check_command(c: &Corpus, lang: &str, line: &str) -> Result<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match lang {
        "sh" => {
            let words: Vec<&str> = if words.first() == Some(&"sudo") {
                words[1..].to_vec()
            } else {
                words
            };
            let Some(first) = words.first() else {
                return Err("empty".into());
            };
            let bin = first
                .trim_start_matches("target/release/")
                .trim_start_matches("target/debug/");
            match (bin, words.get(1).copied()) {
                ("knetsim", _) => c.check_knetsim_args(&words[1..]),
                ("docker", Some("build")) => {
                    let tag = words.windows(2).find(|w| w[0] == "-t").map(|w| w[1]);
                    if tag != Some("knetsim")
                        || words.last() != Some(&".")
                        || !repo().join("Dockerfile").is_file()
                    {
                        return Err(
                            "expected `docker build -t knetsim .` with the top-level Dockerfile"
                                .into(),
                        );
                    }
                    Ok(
                        "the Dockerfile, checked by tests/packages.rs (no image can be built here)"
                            .into(),
                    )
                }
                ("docker", Some("run")) => {
                    let image = words
                        .iter()
                        .position(|w| *w == "knetsim")
                        .ok_or("docker run should run the image `knetsim`")?;
                    if !words[..image].contains(&"--privileged") {
                        return Err(
                            "docker run needs --privileged (namespaces, links, nftables)".into(),
                        );
                    }
                    let rest = &words[image + 1..];
                    if let Some(script) = rest.first() {
                        let top = script.split('/').next().unwrap();
                        if !read("Dockerfile").contains(&format!("COPY {top}/")) {
                            return Err(format!(
                                "the Dockerfile does not copy {top}/ into the image"
                            ));
                        }
                    }
                    c.check_knetsim_args(rest)
                        .map(|w| format!("the image's ENTRYPOINT knetsim with {w}"))
                }
                // A lesson's netns("ip netns ...") runs the very line.
                ("ip", Some("netns")) if c.runs_shell(&words.join(" ")).is_some() => {
                    let f = c.runs_shell(&words.join(" ")).unwrap_or_default();
                    Ok(format!("{f} runs it with netns()"))
                }
                ("ip", Some("netns")) if words.get(2) == Some(&"exec") && words.len() > 4 => {
                    let cmd = words[4..].join(" ");
                    c.runs_shell(&cmd)
                        .map(|f| format!("{f} runs `{cmd}`"))
                        .ok_or(format!("no lesson or test runs `{cmd}`"))
                }
                (s, _) if s.starts_with("scripts/") => {
                    // CI runs .ci/run, which runs scripts/test, which runs scripts/setup.
                    let ci = read(".ci/run");
                    let test = read("scripts/test");
                    let reached = ci.contains(s)
                        || (ci.contains("scripts/test")
                            && (s == "scripts/test" || test.contains(s)));
                    if !repo().join(s).is_file() || !reached {
                        return Err(format!("{s} is not run by .ci/run"));
                    }
                    Ok(format!("{s}, run by .ci/run"))
                }
                _ => Err("not a command that a lesson or test runs".into()),
            }
        }
        "console" => {
            if let Some(f) = c.has_line(line) {
                return Ok(format!("{f} feeds the console this line"));
            }
            let first = words.first().copied().unwrap_or("");
            if is_node(first) && words.len() > 1 {
                let cmd = words[1..].join(" ");
                return c
                    .runs_shell(&cmd)
                    .map(|f| format!("{f} runs `{cmd}`"))
                    .ok_or(format!(
                        "no lesson or test runs `{cmd}` (on a node or in a pod)"
                    ));
            }
            let expr = line.trim().strip_prefix("py ").unwrap_or(line.trim());
            // `C0w1.exec_container(...)`: lessons call the same method on their own variables.
            let call = match expr.find('.') {
                Some(p)
                    if is_node(&expr[..p])
                        || expr[..p].chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    &expr[p..]
                }
                _ => expr,
            };
            c.has_code(call)
                .map(|f| format!("{f} contains `{call}`"))
                .ok_or(format!("no lesson or test contains `{call}`"))
        }
        "rhai" => {
            let code = line.trim().trim_end_matches(';');
            c.has_code(code)
                .map(|f| format!("{f} contains it"))
                .ok_or(format!("no lesson or test contains `{code}`"))
        }
        other => Err(format!(
            "code block language {other}: use sh, console, rhai or text"
        )),
    }
}

/// The commands of the deck's code blocks, with their line numbers. A ```rhai statement
/// may span lines; it ends with `;` at depth 0.
fn deck_commands(deck: &Deck) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for b in &deck.blocks {
        if b.lang == "text" {
            continue;
        }
        let mut pending: Option<(usize, String)> = None;
        for (k, raw) in b.lines.iter().enumerate() {
            let n = b.line + 1 + k;
            match b.lang.as_str() {
                "console" => {
                    if let Some(cmd) = raw.strip_prefix(PROMPT) {
                        out.push((n, b.lang.clone(), cmd.trim().to_string()));
                    }
                }
                "rhai" => {
                    let line = raw.split("//").next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let (start, mut text) = pending.take().unwrap_or((n, String::new()));
                    text.push(' ');
                    text.push_str(line);
                    let depth: i32 = text
                        .chars()
                        .map(|c| match c {
                            '(' | '[' | '{' => 1,
                            ')' | ']' | '}' => -1,
                            _ => 0,
                        })
                        .sum();
                    if depth == 0 && text.trim_end().ends_with(';') {
                        out.push((start, b.lang.clone(), text.trim().to_string()));
                    } else {
                        pending = Some((start, text));
                    }
                }
                _ => {
                    let line = strip_comment(raw).trim();
                    if !line.is_empty() {
                        out.push((n, b.lang.clone(), line.to_string()));
                    }
                }
            }
        }
        if let Some((start, text)) = pending {
            out.push((start, b.lang.clone(), text.trim().to_string()));
        }
    }
    out
}

#[test]
fn every_command_in_the_deck_is_run_by_a_lesson_or_test() {
    let deck = parse_deck(&read(DECK)).unwrap_or_else(|e| panic!("{e}"));
    let c = corpus();
    let commands = deck_commands(&deck);
    assert!(
        commands.len() >= 20,
        "only {} commands found in the deck",
        commands.len()
    );
    let mut problems = Vec::new();
    for (line, lang, cmd) in &commands {
        match check_command(&c, lang, cmd) {
            Ok(why) => println!("{DECK}:{line}: `{cmd}` <- {why}"),
            Err(e) => problems.push(format!("{DECK}:{line}: ```{lang} `{cmd}`: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} commands in the deck are not run by any lesson or test:\n  {}",
        problems.len(),
        commands.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The checks can fail.

/// Renders `md` as a scratch deck `name` (beside an image img/ok.svg):
/// what rendering said.
fn render_scratch(name: &str, md: &str) -> Result<String, String> {
    let dir = scratch(name, md);
    render(&dir.join("deck.md"), &dir.join("deck.html"))
}

fn scratch(name: &str, md: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deck-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("img")).unwrap();
    std::fs::write(
        dir.join("img/ok.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><rect width=\"10\" height=\"10\"/></svg>\n",
    )
    .unwrap();
    std::fs::write(dir.join("deck.md"), md).unwrap();
    dir
}

#[test]
fn a_missing_or_hot_linked_image_is_a_broken_deck() {
    let rendered = render_scratch("images", "---\nmarp: true\n---\n\n# one\n\n![bg right](img/ok.svg)\n\n---\n\n![](img/missing.svg)\n![w:100](https://example.invalid/x.png)\n");
    let err = rendered.unwrap_err();
    assert!(
        err.contains("img/missing.svg") && err.contains("https://example.invalid/x.png"),
        "{err}"
    );
    assert!(!err.contains("img/ok.svg"), "{err}");
}

#[test]
fn an_unclosed_code_block_is_a_broken_deck() {
    let rendered = render_scratch(
        "fence",
        "---\nmarp: true\n---\n\n# one\n\n```sh\nip route\n\n---\n\n# two\n",
    );
    let err = rendered.unwrap_err();
    assert!(err.contains("never closed"), "{err}");
    let err = parse_deck("# no front matter\n").unwrap_err();
    assert!(err.contains("front matter"), "{err}");
}

#[test]
fn a_good_scratch_deck_renders_and_its_slides_are_counted() {
    let rendered = render_scratch("good", "---\nmarp: true\n---\n\n# one\n\n![](img/ok.svg)\n\n---\n\n# two\n\n```sh\nip route\n```\n");
    let html = rendered.unwrap_or_else(|e| panic!("{e}"));
    assert!(html.contains("<section id=\"2\"") && !html.contains("<section id=\"3\""));
}

#[test]
fn commands_no_lesson_runs_are_reported() {
    let c = corpus();
    // (language, command, whether it passes)
    for (lang, cmd, passes) in [
        ("console", "C0w1 ip link set eth0 down", false),
        (
            "console",
            "py C0w1.exec_container(\"c1\", \"rm -rf /\")",
            false,
        ),
        ("sh", "sudo knetsim lessons/99-nothing.rhai", false),
        (
            "sh",
            "sudo knetsim --no-such-flag lessons/01-flannel.rhai",
            false,
        ),
        ("sh", "docker run -it --rm knetsim", false),
        ("sh", "curl 10.0.0.3", false),
        ("rhai", "C0.teleport(\"c1\");", false),
        ("json", "{}", false),
        ("console", "C0w1 ip -br addr", true),
        ("console", "C0w1 nft list ruleset", true),
        (
            "sh",
            "ip netns exec C0w1 ip route show dev flannel.100",
            true,
        ),
        (
            "sh",
            "sudo knetsim --no-pause lessons/01-flannel.rhai",
            true,
        ),
        (
            "rhai",
            "C0.kp_vip_add(\"100.64.10.1\", [\"c2\", \"c3\"]);",
            true,
        ),
    ] {
        let got = check_command(&c, lang, cmd);
        assert_eq!(got.is_ok(), passes, "```{lang} `{cmd}`: {got:?}");
    }
    assert!(
        is_node("C0w1")
            && is_node("C12e3")
            && !is_node("C0")
            && !is_node("C0-c1")
            && !is_node("Cw1")
    );
    assert_eq!(
        literals(r#"f("a \"b\"", r"c\d", `e`) // "no""#),
        ["a \"b\"", r"c\d", "e"]
    );
}
