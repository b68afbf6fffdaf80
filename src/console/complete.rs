//! Tab completion and multi-line input for the console. The candidate logic is a pure
//! function of the line, the cursor and the known names, so it is unit-tested.

use super::line::{classify, Line, COMMANDS};
use crate::script::errors::is_incomplete;
use crate::script::registry;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "break", "continue",
    "return", "true", "false", "switch", "throw", "try", "catch",
];

/// Rhai's own string, array and map methods a lesson uses most, offered after a dot
/// beside the API's methods and properties.
const BUILTIN_METHODS: &[&str] = &[
    "len",
    "contains",
    "split",
    "trim",
    "replace",
    "keys",
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
        out.extend(registry::member_names().into_iter().map(str::to_string));
        out.extend(BUILTIN_METHODS.iter().map(|s| s.to_string()));
    } else if head.trim().is_empty() {
        // First word: a command, a node (for `C0w1 <command>` or as a variable), the API.
        out.extend(COMMANDS.iter().map(|(c, _)| c.to_string()));
        out.extend(nodes.iter().cloned());
        out.extend(vars.iter().cloned());
        out.extend(registry::function_names().into_iter().map(str::to_string));
        out.extend(KEYWORDS.iter().map(|s| s.to_string()));
    } else {
        // After `C0w1 ` the rest is a shell command: nothing to offer but node names.
        let first = head.split_whitespace().next().unwrap_or("");
        let shell = matches!(classify(&format!("{first} x"), nodes), Line::Node { .. });
        out.extend(nodes.iter().cloned());
        if !shell {
            out.extend(vars.iter().cloned());
            out.extend(registry::function_names().into_iter().map(str::to_string));
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
    fn completion_offers_the_whole_registry() {
        let line = "C0.skupper_";
        let (_, c) = candidates(line, line.len(), &nodes(), &[]);
        for want in [
            "skupper_init",
            "skupper_token",
            "skupper_link",
            "skupper_expose",
            "skupper_delete",
            "skupper_config",
            "skupper_log",
            "skupper_router_pid",
            "skupper_services",
        ] {
            assert!(c.iter().any(|x| x == want), "{want} missing from {c:?}");
        }
        let line = "C1.st";
        let (_, c) = candidates(line, line.len(), &nodes(), &[]);
        assert!(c.iter().any(|x| x == "start_skupper"), "{c:?}");
        // Every entry of the registry is offered where it can be typed.
        for e in &registry::catalog().entries {
            let (line, n) = match e.receiver {
                Some(_) => (format!("C0w1.{}", e.name), 5),
                None => (e.name.to_string(), 0),
            };
            let (s, c) = candidates(&line, line.len(), &nodes(), &[]);
            assert_eq!(s, n, "{line}");
            assert!(
                c.iter().any(|x| x == e.name),
                "{} not offered: {c:?}",
                e.full_name()
            );
        }
        let (_, c) = candidates("C0w1.d", 6, &nodes(), &[]);
        assert!(c.iter().any(|x| x == "dir"), "{c:?}");
        // The original calls create_conf like a function, and its example does too.
        let (_, c) = candidates("create_c", 8, &nodes(), &[]);
        assert_eq!(c, vec!["create_conf"]);
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
