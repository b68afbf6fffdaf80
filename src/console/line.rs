//! What a console line means: a console command, a mininet-style `<node> <command>`
//! line, or Rhai (with the original's `py ` prefix accepted). Pure, so it is unit-tested.

/// Console commands (besides node lines and Rhai).
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", "this list"),
    (
        "nodes",
        "a table of every node: kind, underlay IP, state, containers",
    ),
    (
        "pingall",
        "every container pings every other container of its cluster once",
    ),
    (
        "trace",
        "trace NODE [POD] DEST[:PORT] [tcp|udp|icmp]: walk one probe hop by hop (e.g. trace C0w1 c1 100.64.0.1:80)",
    ),
    (
        "exit",
        "leave the console and tear the simulation down (also quit, Ctrl-D)",
    ),
    ("quit", "same as exit"),
    (
        "py",
        "py <rhai>: the original console's prefix, accepted and ignored",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Empty,
    Help,
    /// `help NAME`: one entry of the script API with its example.
    HelpOn(String),
    Nodes,
    PingAll,
    Exit,
    /// `C0w1 ifconfig`: run `cmd` with a shell on node `node`.
    Node {
        node: String,
        cmd: String,
    },
    /// A short node name used with more than one cluster: say which ones match.
    Ambiguous {
        word: String,
        candidates: Vec<String>,
    },
    Rhai(String),
}

/// Strips the original console's `py ` prefix.
pub fn strip_py(line: &str) -> &str {
    let t = line.trim_start();
    if t == "py" {
        return "";
    }
    match t.strip_prefix("py") {
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
        _ => line,
    }
}

/// Characters that, right after a node name, mean Rhai rather than a shell command
/// (`C0w1.exec(...)` has no space; `C0w1 = ...`, `C0w1 + 1` are Rhai).
fn rhai_follow(rest: &str) -> bool {
    rest.starts_with([
        '=', '.', '(', '[', '{', '+', '*', '/', '%', '&', '|', '^', '!', '<', '>', '?', ';', ',',
    ])
}

/// Resolves the first word of a mininet-style line to a node name: full names (`C0w1`),
/// or short names (`w1`, `e1`) when exactly one cluster has such a node.
fn resolve_node(word: &str, nodes: &[String]) -> Result<Option<String>, Vec<String>> {
    if nodes.iter().any(|n| n == word) {
        return Ok(Some(word.to_string()));
    }
    let is_short = word.len() >= 2
        && (word.starts_with('w') || word.starts_with('e'))
        && word[1..].chars().all(|c| c.is_ascii_digit());
    if !is_short {
        return Ok(None);
    }
    let matches: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.strip_prefix('C')
                .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()) == word)
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.into_iter().next()),
        _ => Err(matches),
    }
}

/// Classifies one (possibly multi-line) console input. `nodes` are the node names.
pub fn classify(input: &str, nodes: &[String]) -> Line {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Line::Empty;
    }
    match trimmed {
        "help" | "?" => return Line::Help,
        "nodes" => return Line::Nodes,
        "pingall" => return Line::PingAll,
        "exit" | "quit" => return Line::Exit,
        _ => {}
    }
    if let Some(name) = trimmed.strip_prefix("help ") {
        return Line::HelpOn(name.trim().to_string());
    }
    let stripped = strip_py(trimmed);
    if stripped.len() != trimmed.len() {
        return if stripped.trim().is_empty() {
            Line::Empty
        } else {
            Line::Rhai(stripped.to_string())
        };
    }
    // Mininet style: the first word is a node name and a command follows.
    if !trimmed.contains('\n') {
        if let Some((word, rest)) = trimmed.split_once(char::is_whitespace) {
            let rest = rest.trim();
            if !rest.is_empty() && !rhai_follow(rest) {
                match resolve_node(word, nodes) {
                    Ok(Some(node)) => {
                        return Line::Node {
                            node,
                            cmd: rest.to_string(),
                        }
                    }
                    Err(candidates) => {
                        return Line::Ambiguous {
                            word: word.to_string(),
                            candidates,
                        }
                    }
                    Ok(None) => {}
                }
            }
        }
    }
    Line::Rhai(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        [
            "C0", "C0e1", "C0e2", "C0w1", "C0w2", "C0w3", "C1", "C1e1", "C1w1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn commands() {
        assert_eq!(classify("  ", &nodes()), Line::Empty);
        assert_eq!(classify("help", &nodes()), Line::Help);
        assert_eq!(classify(" nodes ", &nodes()), Line::Nodes);
        assert_eq!(classify("pingall", &nodes()), Line::PingAll);
        assert_eq!(classify("exit", &nodes()), Line::Exit);
        assert_eq!(classify("quit", &nodes()), Line::Exit);
        assert_eq!(
            classify("help  exec_container ", &nodes()),
            Line::HelpOn("exec_container".into())
        );
    }

    #[test]
    fn mininet_lines_run_on_the_node() {
        assert_eq!(
            classify("C0w1 ifconfig", &nodes()),
            Line::Node {
                node: "C0w1".into(),
                cmd: "ifconfig".into()
            }
        );
        assert_eq!(
            classify("C0w1   nft list ruleset  ", &nodes()),
            Line::Node {
                node: "C0w1".into(),
                cmd: "nft list ruleset".into()
            }
        );
        assert_eq!(
            classify("C0e1 etcdctl member list", &nodes()),
            Line::Node {
                node: "C0e1".into(),
                cmd: "etcdctl member list".into()
            }
        );
    }

    #[test]
    fn short_names_work_only_when_unambiguous() {
        assert_eq!(
            classify("w2 ip route", &nodes()),
            Line::Node {
                node: "C0w2".into(),
                cmd: "ip route".into()
            }
        );
        assert_eq!(
            classify("w1 ifconfig", &nodes()),
            Line::Ambiguous {
                word: "w1".into(),
                candidates: vec!["C0w1".into(), "C1w1".into()]
            }
        );
    }

    #[test]
    fn rhai_lines_stay_rhai() {
        for l in [
            "C0w1",
            "C0w1.exec(\"ip a\")",
            "C0w1 .exec(\"ip a\")",
            "C0w1 = 5",
            "print(C0w1.ip)",
            "let x = 1",
            "C9w1 ip a",
            "nodes.len()",
        ] {
            assert_eq!(
                classify(l, &nodes()),
                Line::Rhai(l.trim().to_string()),
                "{l}"
            );
        }
        // Multi-line input is always Rhai.
        assert!(matches!(classify("C0w1 x\n}", &nodes()), Line::Rhai(_)));
    }

    #[test]
    fn py_prefix_is_stripped() {
        assert_eq!(
            classify("py C0w1.exec_container(\"c1\", \"ifconfig\")", &nodes()),
            Line::Rhai("C0w1.exec_container(\"c1\", \"ifconfig\")".into())
        );
        assert_eq!(classify("py", &nodes()), Line::Empty);
        assert_eq!(classify("py   ", &nodes()), Line::Empty);
        assert_eq!(strip_py("python"), "python");
        assert_eq!(strip_py("py\tx"), "x");
        // `py C0w1 ls` is Rhai after the prefix, as in the original.
        assert_eq!(
            classify("py C0w1 ls", &nodes()),
            Line::Rhai("C0w1 ls".into())
        );
    }
}
