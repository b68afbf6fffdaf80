//! The agent's log on stdout (a file under the run directory). A line is written at once,
//! except inside a [`LogBatch`]: a batch of work (one watch response, the first sync) logs
//! hundreds of lines, and one write per line cost more than the work itself at scale. A
//! batch's lines are written together when it ends, so `tail -f` still shows each batch as
//! soon as it is done, and when it is dropped early (SIGTERM, an error) nothing is lost.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Past this many buffered bytes a batch writes what it holds (a huge first sync must not
/// grow without bound).
const MAX_HELD: usize = 64 * 1024;

struct Held {
    batches: usize,
    text: String,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    batches: 0,
    text: String::new(),
});

fn held() -> std::sync::MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_out(text: &str) {
    // A log that cannot be written (stdout closed) must not stop the agent.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// This process's id, read once (a line used to ask the kernel for it each time).
fn pid() -> u32 {
    static PID: OnceLock<u32> = OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Logs one timestamped line (UTC wall clock): at once, or at the end of the current batch.
pub fn log_line(msg: std::fmt::Arguments) {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs();
    let mut h = held();
    let _ = writeln!(
        h.text,
        "{:02}:{:02}:{:02}.{:03} flanneld[{}]: {msg}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        now.subsec_millis(),
        pid()
    );
    if h.batches == 0 || h.text.len() >= MAX_HELD {
        let text = std::mem::take(&mut h.text);
        drop(h);
        write_out(&text);
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
        drop(outer);
        assert!(held().text.is_empty(), "the last batch's end writes them");
    }
}
