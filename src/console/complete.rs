//! Tab completion and multi-line input for the console. The candidate logic is a pure
//! function of the line, the cursor and the known names, so it is unit-tested.

use super::line::{classify, Line, COMMANDS};
use crate::script::api::{GLOBAL_API, METHOD_API};
use crate::script::errors::is_incomplete;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "break", "continue",
    "return", "true", "false", "switch", "throw", "try", "catch",
];

/// Property names usable after a dot besides the methods.
const PROPERTIES: &[&str] = &[
    "name",
    "ip",
    "cluster",
    "len",
    "contains",
    "split",
    "trim",
    "to_string",
];

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Completion of the word before `pos`: returns where the word starts and the candidates.
/// `nodes` are the node and cluster names, `vars` the variables in scope.
pub fn candidates(
    line: &str,
    pos: usize,
    nodes: &[String],
    vars: &[String],
) -> (usize, Vec<String>) {
    let pos = pos.min(line.len());
    let before = &line[..pos];
    let start = before
        .rfind(|c: char| !is_ident(c))
        .map(|i| i + 1)
        .unwrap_or(0);
    let word = &before[start..];
    let head = &before[..start];
    let mut out: Vec<String> = Vec::new();
    if head.ends_with('.') {
        out.extend(METHOD_API.iter().map(|(_, m, _)| m.to_string()));
        out.extend(PROPERTIES.iter().map(|s| s.to_string()));
    } else if head.trim().is_empty() {
        // First word: a command, a node (for `C0w1 <command>` or as a variable), the API.
        out.extend(COMMANDS.iter().map(|(c, _)| c.to_string()));
        out.extend(nodes.iter().cloned());
        out.extend(vars.iter().cloned());
        out.extend(GLOBAL_API.iter().map(|(f, _)| f.to_string()));
        out.extend(KEYWORDS.iter().map(|s| s.to_string()));
    } else {
        // After `C0w1 ` the rest is a shell command: nothing to offer but node names.
        let first = head.split_whitespace().next().unwrap_or("");
        let shell = matches!(classify(&format!("{first} x"), nodes), Line::Node { .. });
        out.extend(nodes.iter().cloned());
        if !shell {
            out.extend(vars.iter().cloned());
            out.extend(GLOBAL_API.iter().map(|(f, _)| f.to_string()));
            out.extend(KEYWORDS.iter().map(|s| s.to_string()));
        }
    }
    let mut out: Vec<String> = out.into_iter().filter(|c| c.starts_with(word)).collect();
    out.sort();
    out.dedup();
    (start, out)
}

/// True when `input` is Rhai that stops too early (an open brace, bracket, string...),
/// so the console should read another line.
pub fn needs_more(input: &str, nodes: &[String], engine: &rhai::Engine) -> bool {
    let src = match classify(input, nodes) {
        Line::Rhai(src) => src,
        _ => return false,
    };
    match engine.compile(&src) {
        Ok(_) => false,
        Err(e) => is_incomplete(&src, &e),
    }
}

/// The rustyline helper: completion from the current names.
pub struct ConsoleHelper {
    pub nodes: Vec<String>,
    pub vars: Vec<String>,
}

impl Completer for ConsoleHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(candidates(line, pos, &self.nodes, &self.vars))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}
impl Highlighter for ConsoleHelper {}
impl Validator for ConsoleHelper {}
impl Helper for ConsoleHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        ["C0", "C0e1", "C0w1", "C0w2", "C1", "C1w1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn first_word_completes_nodes_and_commands() {
        let (s, c) = candidates("C0w", 3, &nodes(), &[]);
        assert_eq!(s, 0);
        assert_eq!(c, vec!["C0w1", "C0w2"]);
        let (_, c) = candidates("pin", 3, &nodes(), &[]);
        assert_eq!(c, vec!["pingall"]);
        let (_, c) = candidates("he", 2, &nodes(), &[]);
        assert_eq!(c, vec!["help"]);
        let (_, c) = candidates("set_", 4, &nodes(), &[]);
        assert_eq!(c, vec!["set_exec_timeout"]);
    }

    #[test]
    fn after_a_dot_completes_methods() {
        let line = "C0w1.exec_c";
        let (s, c) = candidates(line, line.len(), &nodes(), &[]);
        assert_eq!(s, 5);
        assert_eq!(c, vec!["exec_container", "exec_container_async"]);
        let line = "py C0.add";
        let (_, c) = candidates(line, line.len(), &nodes(), &[]);
        assert_eq!(c, vec!["add_worker"]);
    }

    #[test]
    fn inside_rhai_completes_variables_and_nodes() {
        let vars = vec!["out".to_string(), "other".to_string()];
        let line = "print(ou";
        let (s, c) = candidates(line, line.len(), &nodes(), &vars);
        assert_eq!(s, 6);
        assert_eq!(c, vec!["out"]);
        let line = "let x = C1";
        let (_, c) = candidates(line, line.len(), &nodes(), &vars);
        assert_eq!(c, vec!["C1", "C1w1"]);
    }

    #[test]
    fn after_a_node_only_node_names_are_offered() {
        let line = "C0w1 ping C0";
        let (s, c) = candidates(line, line.len(), &nodes(), &["C0x".to_string()]);
        assert_eq!(s, 10);
        assert_eq!(c, vec!["C0", "C0e1", "C0w1", "C0w2"]);
        let line = "C0w1 pri";
        let (_, c) = candidates(line, line.len(), &nodes(), &[]);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn needs_more_only_for_unfinished_rhai() {
        let e = rhai::Engine::new_raw();
        assert!(needs_more("for i in 0..3 {", &nodes(), &e));
        assert!(needs_more("py print(1,", &nodes(), &e));
        assert!(!needs_more("print(1)", &nodes(), &e));
        assert!(!needs_more("print(1 2)", &nodes(), &e));
        // A shell command with an open quote is the shell's business, not Rhai's.
        assert!(!needs_more("C0w1 echo \"{", &nodes(), &e));
        assert!(!needs_more("help", &nodes(), &e));
    }
}
