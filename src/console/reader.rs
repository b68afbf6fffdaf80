//! The console's line reader, on a thread of its own, so that SIGTERM ends a console
//! waiting for a line.
//!
//! rustyline waits for keys in select() and gives up early only for the signals it
//! handles itself (SIGINT and SIGWINCH, and only on a terminal it drives); on a dumb
//! terminal or a pipe it reads with std, which retries an interrupted read. Either way a
//! `kill`, or a container runtime stopping the run, was acted on only after the next
//! Enter, and a runtime that then gave up sent SIGKILL: the simulation was not torn down.
//! The console now waits for the reader's answer and looks at the signal flag meanwhile;
//! on SIGTERM it leaves the reader waiting (the process ends after teardown) and puts the
//! terminal back the way it found it.

use super::complete::ConsoleHelper;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

pub type ConsoleEditor = Editor<ConsoleHelper, DefaultHistory>;

/// What a read gave.
pub enum Read {
    /// rustyline's answer: a line, Ctrl-C, Ctrl-D or an error.
    Line(rustyline::Result<String>),
    /// SIGTERM arrived while the console waited for a line.
    Terminated,
}

pub struct LineReader {
    editor: Arc<Mutex<ConsoleEditor>>,
    asks: Sender<&'static str>,
    answers: Receiver<rustyline::Result<String>>,
    /// The terminal's mode when the console began, when stdin is a terminal.
    terminal: Option<nix::sys::termios::Termios>,
}

impl LineReader {
    pub fn new(editor: ConsoleEditor) -> std::io::Result<LineReader> {
        let editor = Arc::new(Mutex::new(editor));
        let (asks, asked) = channel::<&'static str>();
        let (answer, answers) = channel();
        let ed = editor.clone();
        std::thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || {
                for prompt in asked {
                    let line = lock(&ed).readline(prompt);
                    if answer.send(line).is_err() {
                        return;
                    }
                }
            })?;
        Ok(LineReader {
            editor,
            asks,
            answers,
            terminal: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        })
    }

    /// The editor, between reads (its helper, its history).
    pub fn editor(&self) -> MutexGuard<'_, ConsoleEditor> {
        lock(&self.editor)
    }

    /// Reads one line with `prompt`, or returns [`Read::Terminated`] once SIGTERM arrived.
    pub fn read(&self, prompt: &'static str) -> Read {
        if self.asks.send(prompt).is_err() {
            return Read::Line(Err(ReadlineError::Eof));
        }
        loop {
            match self.answers.recv_timeout(crate::wait::SLICE) {
                Ok(line) => return Read::Line(line),
                Err(RecvTimeoutError::Disconnected) => return Read::Line(Err(ReadlineError::Eof)),
                Err(RecvTimeoutError::Timeout) if crate::interrupt::terminated() => {
                    self.restore_terminal();
                    return Read::Terminated;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Puts the terminal back as the console found it (rustyline, still waiting, holds it
    /// in raw mode) and ends the prompt's line.
    fn restore_terminal(&self) {
        use std::io::Write;
        let Some(mode) = &self.terminal else {
            return;
        };
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            mode,
        );
        let mut out = std::io::stdout();
        let _ = writeln!(out);
        let _ = out.flush();
    }
}

fn lock(editor: &Mutex<ConsoleEditor>) -> MutexGuard<'_, ConsoleEditor> {
    // A panic in the reader leaves the editor usable: it holds no half-made state of ours.
    editor.lock().unwrap_or_else(|p| p.into_inner())
}
