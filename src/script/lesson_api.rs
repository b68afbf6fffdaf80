//! The lesson helpers: `step` (a titled, numbered pause), `say` (narration), `expect`
//! (a checked claim), `challenge` (break, diagnose, repair), `sleep` and `table`.

use super::registry::{Env, RResult, Registry};
use crate::sim::Sim;
use crate::ui;
use rhai::{Array, Dynamic, EvalAltResult, FnPtr, NativeCallContext, Position};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// State the lesson helpers share with the session.
#[derive(Default)]
pub struct Lesson {
    pub passed: AtomicUsize,
    pub failed: AtomicUsize,
    pub steps: AtomicUsize,
    /// `step()` waits for Enter (only if stdin is also a terminal).
    pub interactive: AtomicBool,
    /// Set while the console evaluates a line: `step()` never waits there.
    pub in_console: AtomicBool,
    /// Console words (`trace`, `topo`, `C0w1 ip route`, ...) for a challenge's prompt; the
    /// CLI installs them, since the console sits above the script layer.
    pub side_console: OnceLock<SideConsole>,
}

/// Runs one console line that needs no script scope; false when the line is not one.
pub type SideConsole = fn(&Sim, &str, &mut dyn Write) -> bool;

pub(crate) fn terminated(partial: impl Into<Dynamic>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(partial.into(), Position::NONE).into()
}

fn secs(what: &str, s: f64) -> RResult<Duration> {
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(format!(
            "{what}: {s} is not a usable number of seconds (use 0 to 86400, e.g. 0.5)"
        )
        .into());
    }
    Ok(Duration::from_secs_f64(s))
}

/// Sleeps in short slices so Ctrl-C ends it at once.
pub fn interruptible_sleep(d: Duration) -> RResult<()> {
    crate::wait::sleep_until(Instant::now() + d, &crate::interrupt::is_set);
    if crate::interrupt::is_set() {
        return Err(terminated(Dynamic::UNIT));
    }
    Ok(())
}

/// Waits for Enter on stdin; Ctrl-C stops the script. EOF stops waiting.
fn wait_for_enter() -> RResult<()> {
    print!("{}", ui::dim("  (Enter to continue, Ctrl-C to stop) "));
    read_line_interruptibly().map(|_| ())
}

/// One line from stdin (None at its end); Ctrl-C stops the script.
fn read_line_interruptibly() -> RResult<Option<String>> {
    let _ = std::io::stdout().flush();
    loop {
        if crate::interrupt::is_set() {
            println!();
            return Err(terminated(Dynamic::UNIT));
        }
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `fds` is one live pollfd for the whole call.
        let n = unsafe { libc::poll(&mut fds, 1, 100) };
        if n > 0 {
            let mut line = String::new();
            return Ok(match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            });
        }
    }
}

/// True when the title carries the lesson's own number: `3. Ping`, `3) Ping`, `3: Ping`.
/// A title that merely starts with a count (`2 pods`, `20 pings`) does not.
fn numbered_by_lesson(title: &str) -> bool {
    let rest = title.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.len() < title.len()
        && rest
            .strip_prefix(['.', ')', ':'])
            .is_some_and(|r| r.is_empty() || r.starts_with(' '))
}

/// `━━ Step 2: title ━━`, or `━━ 2. title ━━` when the lesson numbers its steps itself.
pub fn step_header(n: usize, title: &str) -> String {
    if numbered_by_lesson(title) {
        format!("━━ {title} ━━")
    } else {
        format!("━━ Step {n}: {title} ━━")
    }
}

/// True when the lesson may wait for the learner: interactive, not inside a console
/// line, and stdin is a terminal.
fn may_pause(lesson: &super::api::Lesson) -> bool {
    lesson.interactive.load(Ordering::SeqCst)
        && !lesson.in_console.load(Ordering::SeqCst)
        && std::io::stdin().is_terminal()
}

fn step(ctx: &NativeCallContext, title: &str) -> RResult<()> {
    let lesson = Env::of(ctx)?.lesson;
    let n = lesson.steps.fetch_add(1, Ordering::SeqCst) + 1;
    println!("\n{}", ui::bold(&step_header(n, title)));
    let _ = std::io::stdout().flush();
    if may_pause(&lesson) {
        wait_for_enter()?;
    }
    Ok(())
}

/// Runs a challenge's check: it must answer true (repaired) or false (still broken).
fn run_check(ctx: &NativeCallContext, title: &str, check: &FnPtr) -> RResult<bool> {
    let v: Dynamic = check.call_within_context(ctx, ())?;
    v.as_bool().map_err(|t| {
        format!("challenge(\"{title}\", ...): the check must return true (repaired) or false (broken), got {t}; end it with a comparison, e.g. || C0w1.exec_container(\"c1\", \"ping -c1 -W1 11.10.0.2\").contains(\" 0% packet loss\")").into()
    })
}

/// How often, and how far apart, a check is retried after the reference repair: some
/// repairs (an agent started again) take a moment to show.
const REPAIR_CHECKS: usize = 10;
const REPAIR_CHECK_GAP: Duration = Duration::from_millis(500);

/// `challenge(title, hint, check, repair)`: the lesson has just broken something. The
/// check must fail now (the fault shows). Interactively the learner gets the hint and a
/// prompt for console words and Rhai until the check passes (`solution` applies the
/// lesson's repair); otherwise the lesson's repair runs at once. Either way the check
/// must pass afterwards. Both are counted as expectations, so a lesson run as a test
/// proves every fault is detected and repaired.
fn challenge(
    ctx: &NativeCallContext,
    title: &str,
    hint: &str,
    check: FnPtr,
    repair: FnPtr,
) -> RResult<bool> {
    let lesson = Env::of(ctx)?.lesson;
    let sim = Env::of(ctx)?.sim;
    let n = lesson.steps.fetch_add(1, Ordering::SeqCst) + 1;
    println!("\n{}", ui::bold(&format!("━━ Challenge {n}: {title} ━━")));
    let broken = !run_check(ctx, title, &check)?;
    expect(
        ctx,
        broken.into(),
        &format!("the fault shows: the check fails before the repair ({title})"),
    )?;
    say(hint);
    if may_pause(&lesson) {
        say("Find it and repair it here: console words (`trace C0w1 c1 IP`, `C0w1 ip route`, `topo`) or Rhai. Enter runs the check again; `solution` applies the lesson's repair.");
        loop {
            print!("{}", ui::bold("challenge> "));
            let Some(line) = read_line_interruptibly()? else {
                break;
            };
            let line = line.trim();
            if line.is_empty() || line == "check" {
                if run_check(ctx, title, &check)? {
                    break;
                }
                println!("{}", ui::yellow("  not yet: the check still fails"));
            } else if line == "solution" {
                let _: Dynamic = repair.call_within_context(ctx, ())?;
                break;
            } else {
                side_line(ctx, &lesson, &sim, line);
                // A Ctrl-C that ended the command (tcpdump, ping) ends only the command, as in
                // the console; one at the prompt itself stops the lesson.
                crate::interrupt::take();
            }
        }
    } else {
        println!(
            "{}",
            ui::dim("  (no pause: the lesson applies its own repair)")
        );
        let _: Dynamic = repair.call_within_context(ctx, ())?;
    }
    let mut fixed = false;
    for i in 0..REPAIR_CHECKS {
        if i > 0 {
            interruptible_sleep(REPAIR_CHECK_GAP)?;
        }
        if run_check(ctx, title, &check)? {
            fixed = true;
            break;
        }
    }
    expect(
        ctx,
        fixed.into(),
        &format!("repaired: the check passes ({title})"),
    )
}

/// One line at a challenge's prompt: a console word, else Rhai (node names are variables).
fn side_line(ctx: &NativeCallContext, lesson: &super::api::Lesson, sim: &Sim, line: &str) {
    let mut out = std::io::stdout();
    if let Some(console) = lesson.side_console.get() {
        if console(sim, line, &mut out) {
            return;
        }
    }
    match ctx.engine().eval::<Dynamic>(line) {
        Ok(v) if v.is_unit() => {}
        Ok(v) => println!("{}", super::show(&v).trim_end()),
        Err(e) => println!("{}", ui::red(&format!("error: {e}"))),
    }
}

/// Narration is indented under the step headers.
const SAY_INDENT: &str = "  ";
/// Prose wider than this is hard to read, however wide the terminal.
const SAY_MAX_WIDTH: usize = 100;

/// The terminal's width in columns (stdout's, else `COLUMNS`, else 80).
fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only fills `ws`, which lives across the call; it fails harmlessly
    // when stdout is not a terminal.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0;
    if ok {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(80)
}

/// Lays narration out in lines of at most `width` columns (indent included). Paragraphs
/// are separated by blank lines; the lines of a paragraph are joined and wrapped at word
/// boundaries, except lines that start with a space, which are kept as written (diagrams,
/// commands). A word longer than a line gets a line of its own.
pub fn narration(text: &str, width: usize) -> Vec<String> {
    let room = width.saturating_sub(SAY_INDENT.len()).max(20);
    let mut out: Vec<String> = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    let flush = |words: &mut Vec<&str>, out: &mut Vec<String>| {
        let mut line = String::new();
        for w in words.drain(..) {
            if !line.is_empty() && line.chars().count() + 1 + w.chars().count() > room {
                out.push(format!("{SAY_INDENT}{line}"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(w);
        }
        if !line.is_empty() {
            out.push(format!("{SAY_INDENT}{line}"));
        }
    };
    for raw in text.trim_matches('\n').lines() {
        if raw.trim().is_empty() {
            flush(&mut words, &mut out);
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push(String::new());
            }
        } else if raw.starts_with([' ', '\t']) {
            flush(&mut words, &mut out);
            out.push(format!("{SAY_INDENT}{}", raw.trim_end()));
        } else {
            words.extend(raw.split_whitespace());
        }
    }
    flush(&mut words, &mut out);
    out
}

fn say(text: &str) {
    let width = terminal_width().min(SAY_MAX_WIDTH);
    for line in narration(text, width) {
        println!("{}", ui::dim(&line));
    }
    let _ = std::io::stdout().flush();
}

fn expect(ctx: &NativeCallContext, cond: Dynamic, what: &str) -> RResult<bool> {
    let lesson = Env::of(ctx)?.lesson;
    let ok = cond.as_bool().map_err(|t| {
        format!("expect() needs true or false as its first argument, got {t}: compare something, e.g. expect(out.contains(\"0% packet loss\"), \"{what}\")")
    })?;
    if ok {
        lesson.passed.fetch_add(1, Ordering::SeqCst);
        println!("  {} {what}", ui::green("✓"));
    } else {
        lesson.failed.fetch_add(1, Ordering::SeqCst);
        let pos = ctx.call_position();
        let src = ctx.call_source().unwrap_or("script");
        let at = match (pos.line(), pos.position()) {
            (Some(l), Some(c)) => format!("{src}:{l}:{c}"),
            (Some(l), None) => format!("{src}:{l}"),
            _ => src.to_string(),
        };
        println!(
            "  {} {what}  {}",
            ui::red("✗"),
            ui::dim(&format!("(expectation failed at {at})"))
        );
    }
    let _ = std::io::stdout().flush();
    Ok(ok)
}

/// A small table: `table(["name", "ip"], [["c1", "11.10.0.2"], ...])`.
pub fn render_table(headers: &Array, rows: &Array) -> RResult<String> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(headers.iter().map(|h| h.to_string()));
    for (i, r) in rows.iter().enumerate() {
        let cells = r.read_lock::<Array>().ok_or_else(|| {
            format!(
                "table(): row {} must be an array such as [\"c1\", \"11.10.0.2\"], got {}",
                i + 1,
                r.type_name()
            )
        })?;
        t.add_row(cells.iter().map(|c| c.to_string()));
    }
    Ok(t.to_string())
}

pub fn register(reg: &mut Registry) {
    reg.func(
        "step",
        "step(title)",
        "Starts a numbered step; waits for Enter when the lesson runs interactively",
        r#"step("Ping across workers");"#,
        |ctx: NativeCallContext, title: &str| step(&ctx, title),
    )
    .func(
        "say",
        "say(text)",
        "Narration for the learner: dim, indented, wrapped at the terminal's width",
        r#"say("Each worker leased its own subnet from etcd; flannel routes between them.");"#,
        say,
    )
    .func(
        "expect",
        "expect(condition, what) -> bool",
        "Checks a claim and prints ✓ or ✗ what; any ✗ makes the run exit 1",
        r#"expect(out.contains(" 0% packet loss"), "c1 reaches c2");"#,
        |ctx: NativeCallContext, cond: Dynamic, what: &str| expect(&ctx, cond, what),
    )
    .func(
        "challenge",
        "challenge(title, hint, check, repair) -> bool",
        "A fault to find: check() must fail now; the learner repairs it at a prompt (with --no-pause, repair() runs); then check() must pass",
        r#"challenge("c1 cannot reach c2", "Look at C0w1's routes", || C0w1.exec_container("c1", "ping -c1 -W1 11.10.16.2").contains(" 0% packet loss"), || C0w1.start_agent("flanneld"));"#,
        |ctx: NativeCallContext, title: &str, hint: &str, check: FnPtr, repair: FnPtr| {
            challenge(&ctx, title, hint, check, repair)
        },
    )
    .func(
        "sleep",
        "sleep(seconds)",
        "Waits (0 to 86400 s, fractions allowed); Ctrl-C ends it at once",
        "sleep(0.5);",
        |t: f64| interruptible_sleep(secs("sleep", t)?),
    )
    .overload(|t: i64| interruptible_sleep(secs("sleep", t as f64)?))
    .func(
        "table",
        "table(headers, rows)",
        "Prints a table: headers is a list, rows a list of lists",
        r#"table(["name", "ip"], [["c1", C0w1.container_ip("c1")]]);"#,
        |h: Array, rows: Array| -> RResult<()> {
            println!("{}", render_table(&h, &rows)?);
            Ok(())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_headers_number_steps_unless_the_lesson_does() {
        assert_eq!(step_header(3, "Ping"), "━━ Step 3: Ping ━━");
        for own in ["3. Ping", "3) Ping", "3: Ping", "12. Twelve", "3."] {
            assert_eq!(step_header(3, own), format!("━━ {own} ━━"), "{own}");
        }
        // A title that starts with a count keeps the step's number.
        assert_eq!(step_header(2, "2 pods"), "━━ Step 2: 2 pods ━━");
        assert_eq!(
            step_header(3, "20 separate pings to the VIP"),
            "━━ Step 3: 20 separate pings to the VIP ━━"
        );
        assert_eq!(
            step_header(4, "1.5 s of traffic"),
            "━━ Step 4: 1.5 s of traffic ━━"
        );
    }

    #[test]
    fn narration_wraps_prose_and_keeps_indented_lines() {
        let text = "One two three four five six seven eight nine ten eleven twelve.\n\
                    Joined to the paragraph.\n\n  curl C0w1:8001/svc1  ->  nginx\nAfter.";
        let lines = narration(text, 30);
        for l in &lines {
            if !l.contains("->") {
                assert!(l.chars().count() <= 30, "{l:?} is wider than 30");
            }
            assert!(l.is_empty() || l.starts_with(SAY_INDENT), "{l:?}");
        }
        let joined = lines.join("\n");
        assert!(joined.contains("twelve. Joined"), "{joined}");
        assert!(
            lines.iter().any(|l| l.is_empty()),
            "paragraph break kept: {lines:?}"
        );
        assert!(
            lines.contains(&"    curl C0w1:8001/svc1  ->  nginx".to_string()),
            "{lines:?}"
        );
        assert_eq!(lines.last().map(String::as_str), Some("  After."));
        // A word longer than the line is not cut.
        let long = narration(&"x".repeat(50), 30);
        assert_eq!(long, vec![format!("  {}", "x".repeat(50))]);
        assert!(narration("", 80).is_empty());
    }

    #[test]
    fn tables_render_and_reject_bad_rows() {
        let h: Array = vec!["name".into(), "ip".into()];
        let rows: Array = vec![Dynamic::from_array(vec!["c1".into(), "11.10.0.2".into()])];
        let t = render_table(&h, &rows).unwrap();
        assert!(t.contains("name") && t.contains("11.10.0.2"), "{t}");
        let bad: Array = vec![Dynamic::from(1_i64)];
        let e = render_table(&h, &bad).unwrap_err().to_string();
        assert!(e.contains("row 1 must be an array"), "{e}");
    }

    #[test]
    fn sleep_refuses_unusable_seconds() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e9] {
            let e = secs("sleep", bad).unwrap_err().to_string();
            assert!(e.contains("not a usable number of seconds"), "{bad}: {e}");
        }
    }
}
