//! The Rhai lesson runner.
//!
//! A [`ScriptSession`] owns one Rhai engine and one scope bound to a [`Sim`]. Scripts run
//! in it one after another (a lesson, then console lines) and share their variables and
//! functions. [`Outcome`] says how a run ended; the CLI maps it to an exit status.

pub mod api;
pub mod errors;
pub mod flannel_api;
pub mod help;
pub mod ingress_api;
pub mod lesson_api;
pub mod netns_api;
pub mod registry;
pub mod services_api;
pub mod skupper_api;
pub mod trace_api;

use crate::interrupt::Signal;
use crate::sim::Sim;
use crate::ui;
use rhai::{Dynamic, Engine, EvalAltResult, Scope, AST};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The original simulator's default scenario (two clusters with containers).
pub const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/default.rhai");
/// The name errors in the default scenario are reported under.
pub const DEFAULT_SCENARIO_NAME: &str = "scenarios/default.rhai";

/// Limits that stop a runaway script with an error instead of exhausting memory or the
/// stack. Generous: an exec's output (capped at 16 MiB) fits in a string many times over,
/// and lessons never nest calls deeply. The number of operations is not limited: lessons
/// loop for a long time around waits, and Ctrl-C ends any loop.
///
/// With any size limit set, rhai re-measures an array after each call that changes it
/// (`push` costs time proportional to the array's length), so the array limit is kept
/// where a runaway `push` loop still ends within seconds. rhai does not measure a map
/// grown by `m[key] = value` until the map is passed to a function.
pub mod limits {
    /// Longest string, in bytes.
    pub const STRING_BYTES: usize = 64 << 20;
    /// Most elements in one array (nested arrays count their elements too).
    pub const ARRAY_ITEMS: usize = 100_000;
    /// Most entries in one object map.
    pub const MAP_ENTRIES: usize = 100_000;
    /// Deepest nesting of function calls.
    pub const CALL_LEVELS: usize = 64;
}

/// How a script run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to the end and every `expect` held.
    Ok,
    /// Ran to the end, but this many `expect`s failed.
    ExpectFailed(usize),
    /// A syntax or runtime error stopped it (already reported on stderr).
    ScriptError,
    /// Ctrl-C stopped it.
    Interrupted,
    /// SIGTERM stopped it.
    Terminated,
}

impl Outcome {
    /// 0 all expects held; 1 some expect failed; 2 script error; 130 Ctrl-C; 143 SIGTERM.
    pub fn exit_code(&self) -> i32 {
        use crate::interrupt::Signal;
        match self {
            Outcome::Ok => 0,
            Outcome::ExpectFailed(_) => 1,
            Outcome::ScriptError => 2,
            Outcome::Interrupted => Signal::Interrupt.exit_code(),
            Outcome::Terminated => Signal::Terminate.exit_code(),
        }
    }
}

/// The result of evaluating one console line.
pub(crate) enum LineResult {
    Value(Dynamic),
    Error(String),
    Interrupted(Option<String>),
}

/// One Rhai engine + scope bound to a simulation.
pub struct ScriptSession {
    sim: Sim,
    engine: Engine,
    scope: Scope<'static>,
    /// Functions defined by earlier runs, so the console can call a lesson's functions.
    functions: AST,
    lesson: Arc<api::Lesson>,
    last_error: Option<String>,
}

impl ScriptSession {
    /// `interactive`: `step()` waits for Enter (still never when stdin is not a terminal).
    pub fn new(sim: Sim, interactive: bool) -> ScriptSession {
        let lesson = Arc::new(api::Lesson::default());
        lesson.interactive.store(interactive, Ordering::SeqCst);
        let mut engine = Engine::new();
        engine.set_max_expr_depths(256, 256);
        engine
            .set_max_string_size(limits::STRING_BYTES)
            .set_max_array_size(limits::ARRAY_ITEMS)
            .set_max_map_size(limits::MAP_ENTRIES)
            .set_max_call_levels(limits::CALL_LEVELS);
        api::register(&mut engine);
        registry::Env {
            sim: sim.clone(),
            lesson: lesson.clone(),
        }
        .install(&mut engine);
        // Ctrl-C outside an exec stops the script between operations.
        engine.on_progress(|_| crate::interrupt::is_set().then_some(Dynamic::UNIT));
        // Node names (`C0`, `C0w1`, `C0e1`) are variables unless the script defines them.
        let s = sim.clone();
        #[allow(deprecated)] // rhai marks on_var as volatile, not as going away
        engine.on_var(move |name, _, ctx| {
            if ctx.scope().contains(name) {
                return Ok(None);
            }
            Ok(api::resolve_name(&s, name))
        });
        ScriptSession {
            sim,
            engine,
            scope: Scope::new(),
            functions: AST::empty(),
            lesson,
            last_error: None,
        }
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Console words a lesson's `challenge` prompt understands besides Rhai.
    pub fn set_side_console(&mut self, console: lesson_api::SideConsole) {
        let _ = self.lesson.side_console.set(console);
    }

    pub fn set_interactive(&mut self, on: bool) {
        self.lesson.interactive.store(on, Ordering::SeqCst);
    }

    /// The last error message printed (without colours), for tests and tools.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Expectations held and failed so far in this session.
    pub fn expect_counts(&self) -> (usize, usize) {
        (
            self.lesson.passed.load(Ordering::SeqCst),
            self.lesson.failed.load(Ordering::SeqCst),
        )
    }

    /// Names of the variables in scope (for console completion).
    pub fn variable_names(&self) -> Vec<String> {
        self.scope
            .iter_raw()
            .map(|(n, _, _)| n.to_string())
            .collect()
    }

    /// Binds every cluster and node as a variable (`C0`, `C0w1`, `C0e1`).
    pub fn refresh_node_variables(&mut self) {
        for name in self.sim.node_names() {
            if let Some(v) = api::resolve_name(&self.sim, &name) {
                self.scope.set_or_push(name, v);
            }
        }
    }

    /// Runs a script file, read relative to the current directory.
    pub fn run_file(&mut self, path: &Path) -> Outcome {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(src) => self.run_source(&name, &src),
            Err(e) => {
                let msg = format!(
                    "error: cannot read the script {name}: {e} (paths are relative to {})",
                    std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|_| "the current directory".into())
                );
                eprintln!("{}", ui::red(&msg));
                self.last_error = Some(msg);
                Outcome::ScriptError
            }
        }
    }

    /// Runs script text; `name` is what error messages call it.
    pub fn run_source(&mut self, name: &str, src: &str) -> Outcome {
        let (p0, f0) = self.expect_counts();
        let res = self.eval(name, src);
        let (p1, f1) = self.expect_counts();
        let (passed, failed) = (p1 - p0, f1 - f0);
        let outcome = match res {
            Ok(_) => {
                if failed > 0 {
                    Outcome::ExpectFailed(failed)
                } else {
                    Outcome::Ok
                }
            }
            Err(Stop::Error(msg)) => {
                eprint!("{}", color_error(&msg));
                self.last_error = Some(msg);
                Outcome::ScriptError
            }
            Err(Stop::Interrupted(signal, partial, at)) => {
                if let Some(p) = partial {
                    print!("{p}");
                }
                let msg = format!(
                    "{name}: {}{}",
                    signal.describe(),
                    at.map(|a| format!(" at {a}")).unwrap_or_default()
                );
                eprintln!("{}", ui::yellow(&msg));
                self.last_error = Some(msg);
                match signal {
                    Signal::Interrupt => Outcome::Interrupted,
                    Signal::Terminate => Outcome::Terminated,
                }
            }
        };
        if passed + failed > 0 {
            let total = passed + failed;
            let noun = if total == 1 {
                "expectation"
            } else {
                "expectations"
            };
            if !matches!(outcome, Outcome::Ok | Outcome::ExpectFailed(_)) {
                // The script stopped early: say so, rather than a reassuring total.
                println!(
                    "{}",
                    ui::yellow(&format!(
                        "{passed} of {total} {noun} held before the script stopped ({failed} failed)"
                    ))
                );
            } else if failed == 0 {
                let all = if total == 1 { "" } else { "all " };
                println!("{}", ui::green(&format!("✓ {all}{total} {noun} held")));
            } else {
                println!(
                    "{}",
                    ui::red(&format!("✗ {failed} of {total} {noun} failed"))
                );
            }
        }
        outcome
    }

    /// Evaluates one console line (already classified as Rhai).
    pub(crate) fn eval_line(&mut self, src: &str) -> LineResult {
        self.lesson.in_console.store(true, Ordering::SeqCst);
        let r = self.eval("console", src);
        self.lesson.in_console.store(false, Ordering::SeqCst);
        match r {
            Ok(v) => LineResult::Value(v),
            Err(Stop::Error(m)) => LineResult::Error(m),
            Err(Stop::Interrupted(_, p, _)) => LineResult::Interrupted(p),
        }
    }

    fn eval(&mut self, name: &str, src: &str) -> Result<Dynamic, Stop> {
        let mut ast = match self.engine.compile(src) {
            Ok(a) => a,
            Err(e) => {
                return Err(Stop::Error(errors::render(
                    name,
                    src,
                    &errors::parse_error_report(&e),
                )))
            }
        };
        ast.set_source(name);
        let full = self.functions.merge(&ast);
        let res = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &full);
        self.functions += ast.clone_functions_only();
        match res {
            Ok(v) => Ok(v),
            // `exit()` and a top-level `return` end a script normally.
            Err(e) if matches!(*e, EvalAltResult::Exit(..) | EvalAltResult::Return(..)) => {
                Ok(Dynamic::UNIT)
            }
            Err(e) => Err(self.classify(name, src, *e)),
        }
    }

    fn classify(&self, name: &str, src: &str, e: EvalAltResult) -> Stop {
        let inner = e.unwrap_inner();
        if let EvalAltResult::ErrorTerminated(tok, pos) = inner {
            let signal = crate::interrupt::take_signal().unwrap_or(Signal::Interrupt);
            let partial = tok.clone().into_string().ok();
            let at = pos.line().map(|l| format!("{name}:{l}"));
            return Stop::Interrupted(signal, partial, at);
        }
        if let Some(signal) = crate::interrupt::take_signal() {
            // A Rust call (e.g. start()) gave up because of Ctrl-C or SIGTERM.
            return Stop::Interrupted(
                signal,
                None,
                e.position().line().map(|l| format!("{name}:{l}")),
            );
        }
        Stop::Error(errors::render(name, src, &errors::eval_error_report(&e)))
    }
}

/// Why an evaluation stopped early.
enum Stop {
    Error(String),
    /// The signal, an exec's output so far, and where the script was.
    Interrupted(Signal, Option<String>, Option<String>),
}

/// Colours the `error:` prefix red and leaves the source lines plain.
fn color_error(msg: &str) -> String {
    let mut out = String::new();
    for (i, line) in msg.lines().enumerate() {
        if i == 0 {
            out.push_str(&ui::red(line));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// How the console shows a value: strings as they are (command output reads naturally),
/// the simulator's handles by name and address, arrays and maps element by element.
pub fn show(v: &Dynamic) -> String {
    show_inner(v, true)
}

fn show_inner(v: &Dynamic, top: bool) -> String {
    use crate::sim::{Cluster, EtcdNode, Worker};
    if let Some(w) = v.clone().try_cast::<Worker>() {
        return format!("worker {} ({})", w.name(), w.ip());
    }
    if let Some(e) = v.clone().try_cast::<EtcdNode>() {
        return format!("etcd member {} ({})", e.name(), e.ip());
    }
    if let Some(c) = v.clone().try_cast::<Cluster>() {
        return format!("cluster {}", c.name());
    }
    if v.is_string() {
        let s = v.to_string();
        return if top { s } else { format!("{s:?}") };
    }
    if v.is_array() {
        let a = v.clone().into_array().unwrap_or_default();
        let items: Vec<String> = a.iter().map(|x| show_inner(x, false)).collect();
        return format!("[{}]", items.join(", "));
    }
    if v.is_map() {
        if let Some(m) = v.read_lock::<rhai::Map>() {
            let items: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}: {}", show_inner(x, false)))
                .collect();
            return format!("#{{{}}}", items.join(", "));
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Ok.exit_code(), 0);
        assert_eq!(Outcome::ExpectFailed(3).exit_code(), 1);
        assert_eq!(Outcome::ScriptError.exit_code(), 2);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
        assert_eq!(Outcome::Terminated.exit_code(), 143);
    }

    #[test]
    fn default_scenario_parses_and_builds_the_original_topology() {
        let ast = Engine::new()
            .compile(DEFAULT_SCENARIO)
            .expect("default scenario parses");
        assert!(
            ast.iter_functions().count() == 0,
            "the scenario defines no functions"
        );
        for want in [
            "cluster(\"0\", #{ workers: 3, etcd: 2,",
            "pods: #{ w1: [\"c1\"], w2: [\"c2\"], w3: [\"c3\", \"c4\"] } });",
            "cluster(\"1\", #{ workers: 3, etcd: 2,",
            "pods: #{ w1: [\"c1\"], w2: [\"c2\"], w3: [\"c3\"] } });",
        ] {
            assert!(DEFAULT_SCENARIO.contains(want), "{want}");
        }
    }

    #[test]
    fn values_are_shown_readably() {
        let v: Dynamic = vec![Dynamic::from("a"), Dynamic::from(1_i64)].into();
        assert_eq!(show(&v), "[\"a\", 1]");
        assert_eq!(show(&Dynamic::from("out\n")), "out\n");
        let mut m = rhai::Map::new();
        m.insert("ip".into(), "11.10.0.2".into());
        assert_eq!(show(&m.into()), "#{ip: \"11.10.0.2\"}");
    }
}
