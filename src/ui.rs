//! Terminal output: colours (off with NO_COLOR or when not a terminal), progress bars.

use std::io::IsTerminal;

pub fn color_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color_enabled() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn bold(s: &str) -> String {
    paint("1", s)
}
pub fn red(s: &str) -> String {
    paint("31", s)
}
pub fn green(s: &str) -> String {
    paint("32", s)
}
pub fn yellow(s: &str) -> String {
    paint("33", s)
}
pub fn dim(s: &str) -> String {
    paint("2", s)
}

/// Prints a line that is not the answer to anything the user did (the supervisor's
/// "! flanneld on C0w1 exited ..."): above the console's prompt while it waits for a line,
/// else to stderr.
pub fn notice(line: &str) {
    use std::io::Write;
    let mut printer = NOTICES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(print) = printer.as_mut() {
        if print(line) {
            return;
        }
    }
    // Not eprintln!: a closed stderr must not take the caller down with it.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A printer for [`notice`]: takes a line, returns whether it printed it.
pub type NoticePrinter = Box<dyn FnMut(&str) -> bool + Send>;

static NOTICES: std::sync::Mutex<Option<NoticePrinter>> = std::sync::Mutex::new(None);

/// Sends [`notice`]s to `printer` (the console, while it runs), or back to stderr (None).
pub fn set_notice_printer(printer: Option<NoticePrinter>) {
    *NOTICES.lock().unwrap_or_else(|p| p.into_inner()) = printer;
}

/// The UTC wall clock as the agents' log lines begin (`14:03:07.412`): [`wall_clock`].
pub struct WallClock(std::time::Duration);

/// Now, to print as the agents' logs and `KNETSIM_PHASES` do (one format, so their lines
/// can be lined up).
pub fn wall_clock() -> WallClock {
    WallClock(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

impl std::fmt::Display for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.as_secs() % 86400;
        write!(
            f,
            "{:02}:{:02}:{:02}.{:03}",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            self.0.subsec_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wall_clock_prints_hours_minutes_seconds_and_milliseconds() {
        let t = super::WallClock(std::time::Duration::from_millis(
            3 * 86_400_000 + 14 * 3_600_000 + 3 * 60_000 + 7_412,
        ));
        assert_eq!(t.to_string(), "14:03:07.412");
        assert_eq!(
            super::WallClock(std::time::Duration::ZERO).to_string(),
            "00:00:00.000"
        );
    }
}
