//! The Rhai lesson runner. (Placeholder until the runner lands from the `script` branch.)

use crate::sim::Sim;
use std::path::Path;

pub const DEFAULT_SCENARIO: &str = "";

pub enum Outcome {
    Ok,
    ExpectFailed(usize),
    ScriptError,
    Interrupted,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::ExpectFailed(_) => 1,
            Outcome::ScriptError => 2,
            Outcome::Interrupted => 130,
        }
    }
}

pub struct ScriptSession {
    pub sim: Sim,
}

impl ScriptSession {
    pub fn new(sim: Sim, _interactive: bool) -> ScriptSession {
        ScriptSession { sim }
    }
    pub fn run_file(&mut self, _path: &Path) -> Outcome {
        Outcome::ScriptError
    }
    pub fn run_source(&mut self, _name: &str, _src: &str) -> Outcome {
        Outcome::ScriptError
    }
}
