//! `knetsim [SCRIPT]`: build a simulation, run a script (or the default scenario), open
//! the console when asked, and always tear down.

use super::{exit, RunArgs};
use crate::script::{Outcome, ScriptSession};
use crate::sim::{Options, Sim};
use std::io::IsTerminal;

pub fn run(args: RunArgs) -> i32 {
    crate::interrupt::install();
    if let Some(path) = &args.script {
        if !path.is_file() {
            eprintln!(
                "{} script '{}' was not found (the path is relative to {}); lessons live in lessons/, e.g. lessons/01-flannel.rhai",
                crate::ui::red("error:"),
                path.display(),
                std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
            );
            return exit::USAGE;
        }
    }
    let exec_timeout = match crate::sim::exec_timeout_from_secs(args.exec_timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "{} --exec-timeout: {e}, e.g. --exec-timeout 30",
                crate::ui::red("error:")
            );
            return exit::USAGE;
        }
    };
    let opts = Options {
        instance: args.instance.clone(),
        exec_timeout,
        ..Options::default()
    };
    let sim = match Sim::new(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{} {e:#}", crate::ui::red("error:"));
            return exit::ENVIRONMENT;
        }
    };
    let interactive = !args.no_pause && std::io::stdin().is_terminal();
    let mut session = ScriptSession::new(sim.clone(), interactive);
    session.set_side_console(crate::console::side_line);
    let (outcome, open_console) = match &args.script {
        Some(path) => (session.run_file(path), args.console),
        None => (
            session.run_source("default scenario", crate::script::DEFAULT_SCENARIO),
            true,
        ),
    };
    let mut code = outcome.exit_code();
    if open_console && matches!(outcome, Outcome::Ok | Outcome::ExpectFailed(_)) {
        if let Err(e) = crate::console::run(&mut session) {
            eprintln!("{} console: {e:#}", crate::ui::red("error:"));
        }
    }
    if crate::interrupt::hung_up() {
        // The terminal closed; the shell reads 129 as "hung up".
        code = exit::HUNG_UP;
    } else if crate::interrupt::terminated() {
        // SIGTERM ends the run however far it got; the shell reads 143 as "terminated".
        code = exit::TERMINATED;
    }
    drop(session);
    // A failed run keeps its logs (an error may point at one); a stopped one does not.
    let keep_logs = !matches!(
        code,
        exit::OK | exit::INTERRUPTED | exit::TERMINATED | exit::HUNG_UP
    );
    match sim.teardown_keeping_logs(keep_logs) {
        Ok(Some(dir)) => eprintln!(
            "{} the logs of this run are kept in {} (root only); `knetsim cleanup --instance {}` removes them",
            crate::ui::dim("note:"),
            dir.display(),
            sim.instance()
        ),
        Ok(None) => {}
        Err(e) => {
            eprintln!("{} teardown: {e:#}", crate::ui::red("error:"));
            if code == exit::OK {
                code = exit::ENVIRONMENT;
            }
        }
    }
    code
}
