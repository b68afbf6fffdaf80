//! The agent's log on stdout (a file under the run directory). A line is written at once,
//! except inside a [`LogBatch`]: a batch of work (one watch response, the first sync) logs
//! hundreds of lines, and one write per line cost more than the work itself at scale. A
//! batch's lines are written together when it ends, so `tail -f` still shows each batch as
//! soon as it is done, and when it is dropped early (SIGTERM, an error) nothing is lost.

use std::sync::{Mutex, OnceLock};

/// Past this many buffered bytes a batch writes what it holds (a huge first sync must not
/// grow without bound).
const MAX_HELD: usize = 64 * 1024;

struct Held {
    batches: usize,
    text: String,
    /// `HH:MM:SS.mmm flanneld[PID]: `, made for the first line of a batch and used for
    /// all of its lines (a batch is one turn of work: its lines are written together).
    prefix: String,
    prefix_valid: bool,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    batches: 0,
    text: String::new(),
    prefix: String::new(),
    prefix_valid: false,
});

fn held() -> std::sync::MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_out(text: &str) {
    // Straight to the file: std's stdout would first look for the last line end in the
    // batch (it buffers by lines), and nothing else of the agent's goes to stdout.
    let out = std::io::stdout();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(&out, rest) {
            Ok(n) if n > 0 => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            // A log that cannot be written (stdout closed) must not stop the agent.
            _ => return,
        }
    }
}

/// This process's id, read once (a line used to ask the kernel for it each time).
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Writes the timestamp and name that start a line (UTC wall clock) into `prefix`.
fn make_prefix(prefix: &mut String) {
    use std::fmt::Write as _;
    prefix.clear();
    let _ = write!(prefix, "{} flanneld[{}]: ", crate::ui::wall_clock(), pid());
}

/// Logs one timestamped line: at once, or at the end of the current batch.
pub fn log_line(msg: std::fmt::Arguments) {
    use std::fmt::Write as _;
    let mut h = held();
    let Held {
        batches,
        text,
        prefix,
        prefix_valid,
    } = &mut *h;
    if !*prefix_valid {
        make_prefix(prefix);
        *prefix_valid = *batches > 0;
    }
    text.push_str(prefix);
    // A message of literal text only needs no formatting.
    match msg.as_str() {
        Some(literal) => text.push_str(literal),
        None => {
            let _ = text.write_fmt(msg);
        }
    }
    text.push('\n');
    if *batches == 0 || text.len() >= MAX_HELD {
        let out = std::mem::take(text);
        drop(h);
        write_out(&out);
    }
}

/// Holds the log lines back while it lives; the last batch to end writes them in one go.
#[must_use = "a batch holds lines only while it is alive"]
pub struct LogBatch(());

impl LogBatch {
    pub fn begin() -> LogBatch {
        held().batches += 1;
        LogBatch(())
    }
}

impl Drop for LogBatch {
    fn drop(&mut self) {
        let mut h = held();
        h.batches -= 1;
        if h.batches == 0 {
            h.prefix_valid = false;
        }
        if h.batches == 0 && !h.text.is_empty() {
            let text = std::mem::take(&mut h.text);
            drop(h);
            write_out(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_lines_until_its_end() {
        let outer = LogBatch::begin();
        let inner = LogBatch::begin();
        log_line(format_args!("one"));
        log_line(format_args!("two"));
        drop(inner);
        assert!(
            held().text.contains(": one\n") && held().text.contains(": two\n"),
            "an inner batch's end does not write while an outer one lives"
        );
        let text = held().text.clone();
        let stamp = |line: &str| line.split(' ').next().unwrap_or_default().to_string();
        let stamps: Vec<String> = text.lines().map(stamp).collect();
        assert_eq!(stamps.len(), 2, "{text}");
        assert_eq!(
            stamps[0], stamps[1],
            "one timestamp for a batch's lines: {text}"
        );
        let pid = format!(" flanneld[{}]: ", std::process::id());
        assert!(text.lines().all(|l| l.contains(&pid)), "{text}");
        drop(outer);
        assert!(held().text.is_empty(), "the last batch's end writes them");
        assert!(!held().prefix_valid, "the next batch takes its own time");
    }
}
