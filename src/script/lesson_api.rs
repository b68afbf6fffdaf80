//! The lesson helpers: `step` (a titled, numbered pause), `say` (narration), `expect`
//! (a checked claim), `sleep` and `table`.

use super::registry::{Env, RResult, Registry};
use crate::ui;
use rhai::{Array, Dynamic, EvalAltResult, NativeCallContext, Position};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
}

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
            let _ = std::io::stdin().read_line(&mut line);
            return Ok(());
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

fn step(ctx: &NativeCallContext, title: &str) -> RResult<()> {
    let lesson = Env::of(ctx)?.lesson;
    let n = lesson.steps.fetch_add(1, Ordering::SeqCst) + 1;
    println!("\n{}", ui::bold(&step_header(n, title)));
    let _ = std::io::stdout().flush();
    if lesson.interactive.load(Ordering::SeqCst)
        && !lesson.in_console.load(Ordering::SeqCst)
        && std::io::stdin().is_terminal()
    {
        wait_for_enter()?;
    }
    Ok(())
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
