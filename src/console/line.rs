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
        "net",
        "the links: each host's eth0 to the switch s0, flannel.100, pods' veths to cni0",
    ),
    (
        "dump",
        "every node and pod: namespace, address, the pids started for it",
    ),
    (
        "trace",
        "trace NODE [POD] DEST[:PORT][/PATH] [tcp|udp|icmp] [full]: walk one probe hop by hop (e.g. trace C0w1 c1 100.64.0.1:80)",
    ),
    (
        "topo",
        "topo [FILE.svg|FILE.html]: the running simulation as text; with a file, drawn there too",
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
    Net,
    Dump,
    Exit,
    /// `C0w9 ip a`: a node-shaped first word that names no node.
    NoNode(String),
    /// `py C0w1.exec_container("c1", "ping ...")`: one exec call on a node, run live.
    /// `args` is the Rhai source of the call's arguments.
    LiveExec {
        node: String,
        method: String,
        args: String,
    },
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

/// `C0w9`, `C12e3`: the shape of a node name.
pub fn looks_like_node(word: &str) -> bool {
    let Some(rest) = word.strip_prefix('C') else {
        return false;
    };
    let after_id = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    after_id.len() < rest.len()
        && after_id.len() >= 2
        && after_id.starts_with(['w', 'e'])
        && after_id[1..].chars().all(|c| c.is_ascii_digit())
}

/// `C0w1.exec_container("c1", "ping ...")` (or `.exec(...)`) on a node and nothing else:
/// a line the console runs live. The arguments stay Rhai source, evaluated later.
fn one_exec_call(src: &str, nodes: &[String]) -> Option<Line> {
    let src = src.strip_suffix(';').unwrap_or(src).trim_end();
    let (node, call) = src.split_once('.')?;
    if !nodes.iter().any(|n| n == node) {
        return None;
    }
    let (method, rest) = call.split_once('(')?;
    if !matches!(method, "exec" | "exec_container") {
        return None;
    }
    let args = rest.strip_suffix(')')?;
    // Only when the parentheses close once, at the end: `x.exec("a").len()` is Rhai.
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in args.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '"' | '`' | '\'' => quote = Some(ch),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            _ => {}
        }
    }
    (depth == 0 && quote.is_none()).then(|| Line::LiveExec {
        node: node.to_string(),
        method: method.to_string(),
        args: args.to_string(),
    })
}

/// Levenshtein distance, for "did you mean".
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known word nearest to `word`, when it is near enough to be a typo.
pub fn nearest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, k)| (*d, k.len()))
        .map(|(_, k)| k)
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
        "net" => return Line::Net,
        "dump" => return Line::Dump,
        "exit" | "quit" => return Line::Exit,
        _ => {}
    }
    if let Some(name) = trimmed.strip_prefix("help ") {
        return Line::HelpOn(name.trim().to_string());
    }
    let stripped = strip_py(trimmed);
    if stripped.len() != trimmed.len() {
        let stripped = stripped.trim();
        if stripped.is_empty() {
            return Line::Empty;
        }
        if let Some(live) = one_exec_call(stripped, nodes) {
            return live;
        }
        return Line::Rhai(stripped.to_string());
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
                    Ok(None) if looks_like_node(word) => return Line::NoNode(word.to_string()),
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
        assert_runs_on("C0w1 ifconfig", "C0w1", "ifconfig");
        assert_runs_on("C0w1   nft list ruleset  ", "C0w1", "nft list ruleset");
        assert_runs_on("C0e1 etcdctl member list", "C0e1", "etcdctl member list");
    }

    /// `line` is the mininet-style line that runs `cmd` on `node`.
    fn assert_runs_on(line: &str, node: &str, cmd: &str) {
        let want = Line::Node {
            node: node.into(),
            cmd: cmd.into(),
        };
        assert_eq!(classify(line, &nodes()), want, "{line}");
    }

    #[test]
    fn short_names_work_only_when_unambiguous() {
        assert_runs_on("w2 ip route", "C0w2", "ip route");
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
    fn unknown_nodes_and_typos() {
        assert_eq!(classify("C0w9 ip a", &nodes()), Line::NoNode("C0w9".into()));
        assert_eq!(classify("C9w1 ip a", &nodes()), Line::NoNode("C9w1".into()));
        assert_eq!(
            classify("C0w9.exec(\"x\")", &nodes()),
            Line::Rhai("C0w9.exec(\"x\")".into())
        );
        assert!(!looks_like_node("C0"));
        assert!(!looks_like_node("Cw1"));
        assert!(looks_like_node("C12e3"));
        assert_eq!(edit_distance("pingal", "pingall"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(
            nearest("pingal", ["help", "pingall", "nodes"]),
            Some("pingall")
        );
        assert_eq!(nearest("zzzzzz", ["help", "pingall", "nodes"]), None);
    }

    #[test]
    fn one_exec_call_runs_live_and_anything_more_is_rhai() {
        assert_eq!(
            classify(
                "py C0w1.exec_container(\"c1\", \"ping 100.64.10.1 -c 5\")",
                &nodes()
            ),
            Line::LiveExec {
                node: "C0w1".into(),
                method: "exec_container".into(),
                args: "\"c1\", \"ping 100.64.10.1 -c 5\"".into()
            }
        );
        assert_eq!(
            classify("py C0e1.exec(\"echo (\");", &nodes()),
            Line::LiveExec {
                node: "C0e1".into(),
                method: "exec".into(),
                args: "\"echo (\"".into()
            }
        );
        for rhai in [
            "py C0w1.exec(\"a\").len()",
            "py print(C0w1.exec(\"a\"))",
            "py C0w1.exec_container_async(\"c1\", \"x\")",
            "py C9w1.exec(\"a\")",
        ] {
            assert!(matches!(classify(rhai, &nodes()), Line::Rhai(_)), "{rhai}");
        }
    }

    #[test]
    fn py_prefix_is_stripped() {
        assert_eq!(
            classify("py C0w1.container_ip(\"c1\")", &nodes()),
            Line::Rhai("C0w1.container_ip(\"c1\")".into())
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
