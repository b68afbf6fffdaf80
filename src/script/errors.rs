//! One clear message per script error: `error: FILE:LINE:COL: MESSAGE`, then the source
//! line and a caret under the column (like rhai-repl). Pure functions, so they are tested
//! without a simulation.

use rhai::{EvalAltResult, ParseError, Position};

/// Where an error happened and what it says, before formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub message: String,
    /// Extra lines (e.g. "in function 'f', called at 3:1").
    pub notes: Vec<String>,
}

/// The message of a parse (syntax) error, without rhai's "(line 1, position 2)" suffix.
pub fn parse_error_report(err: &ParseError) -> ErrorReport {
    let pos = err.position();
    ErrorReport {
        line: pos.line(),
        col: pos.position(),
        message: format!("syntax error: {}", err.err_type()),
        notes: Vec::new(),
    }
}

/// The message of a runtime error. Errors inside script functions are reported where
/// they happened, with a note naming the call site.
pub fn eval_error_report(err: &EvalAltResult) -> ErrorReport {
    let mut notes = Vec::new();
    let mut cur = err;
    loop {
        match cur {
            EvalAltResult::ErrorInFunctionCall(name, _src, inner, pos) => {
                notes.push(format!(
                    "in function '{name}', called at {}",
                    pos_text(*pos)
                ));
                cur = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                notes.push(format!(
                    "in module '{name}', imported at {}",
                    pos_text(*pos)
                ));
                cur = inner;
            }
            _ => break,
        }
    }
    notes.reverse();
    let pos = cur.position();
    let message = match cur {
        EvalAltResult::ErrorRuntime(d, _) if d.is_string() => d.to_string(),
        EvalAltResult::ErrorRuntime(d, _) if d.is_unit() => {
            "runtime error (thrown without a value)".to_string()
        }
        EvalAltResult::ErrorRuntime(d, _) => format!("{d}"),
        EvalAltResult::ErrorTerminated(..) => "interrupted (Ctrl-C)".to_string(),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            format!("there is no function {sig}: check its name and the types of its arguments (type `help` in the console for the API)")
        }
        EvalAltResult::ErrorVariableNotFound(v, _) => {
            format!("there is no variable '{v}': declare it with `let {v} = ...` first")
        }
        EvalAltResult::ErrorParsing(t, _) => format!("syntax error: {t}"),
        EvalAltResult::ErrorDataTooLarge(what, _) => data_too_large(what),
        EvalAltResult::ErrorModuleNotFound(m, _) => format!(
            "there is no module '{m}': `import \"{m}\"` reads the file {m}.rhai; check its name and that it exists"
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "functions called each other more than {} levels deep: a recursion that never ends? \
             Check the condition that should stop it",
            super::limits::CALL_LEVELS
        ),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({pos})");
            text.strip_suffix(&suffix)
                .map(str::to_string)
                .unwrap_or(text)
        }
    };
    ErrorReport {
        line: pos.line(),
        col: pos.position(),
        message,
        notes,
    }
}

/// rhai names the thing ("Length of string", "Size of array/BLOB", "Size of object map").
fn data_too_large(what: &str) -> String {
    use super::limits;
    let (thing, limit) = if what.contains("string") {
        ("a string", format!("{} MiB", limits::STRING_BYTES >> 20))
    } else if what.contains("map") {
        ("a map", format!("{} entries", limits::MAP_ENTRIES))
    } else {
        ("an array", format!("{} elements", limits::ARRAY_ITEMS))
    };
    format!(
        "{thing} grew past the limit of {limit}, so the script was stopped before it used up the \
         machine's memory: look for a loop that keeps growing it (e.g. `s += s`) and give it an end"
    )
}

fn pos_text(pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => format!("{l}"),
        _ => "?".to_string(),
    }
}

/// Renders a report: the `error:` line, the source line with its number, a caret under
/// the column, then notes.
pub fn render(name: &str, src: &str, r: &ErrorReport) -> String {
    let mut out = String::new();
    match (r.line, r.col) {
        (Some(l), Some(c)) => out.push_str(&format!("error: {name}:{l}:{c}: {}\n", r.message)),
        (Some(l), None) => out.push_str(&format!("error: {name}:{l}: {}\n", r.message)),
        _ => out.push_str(&format!("error: {name}: {}\n", r.message)),
    }
    if let Some(l) = r.line {
        if let Some(text) = src.lines().nth(l.saturating_sub(1)) {
            let num = l.to_string();
            let pad = " ".repeat(num.len());
            out.push_str(&format!(" {num} | {}\n", text.trim_end()));
            if let Some(c) = r.col {
                // Keep tabs as tabs so the caret lines up under them.
                let lead: String = text
                    .chars()
                    .take(c.saturating_sub(1))
                    .map(|ch| if ch == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!(" {pad} | {lead}^\n"));
            }
        }
    }
    for n in &r.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

/// True when a parse error only means "the input stops too early": the console then
/// asks for another line instead of reporting an error.
pub fn is_incomplete(src: &str, err: &ParseError) -> bool {
    use rhai::{LexError, ParseErrorType as P};
    let at_end = at_end_of_input(src, err.position());
    match err.err_type() {
        P::UnexpectedEOF => true,
        // A back-tick string may span lines; an open "..." string at the end is a mistake
        // only when it is followed by more text, which the lexer reports elsewhere.
        P::BadInput(LexError::UnterminatedString) => at_end || src.matches('`').count() % 2 == 1,
        P::MissingToken(..) | P::MissingSymbol(..) | P::ExprExpected(..) => at_end,
        _ => false,
    }
}

fn at_end_of_input(src: &str, pos: Position) -> bool {
    if pos.is_none() || pos.is_beginning_of_line() && pos.line().is_none() {
        return true;
    }
    let Some(line) = pos.line() else { return true };
    let trimmed = src.trim_end();
    let last_line = trimmed.lines().count().max(1);
    if line > last_line {
        return true;
    }
    if line < last_line {
        return false;
    }
    let last_len = trimmed
        .lines()
        .last()
        .map(|l| l.chars().count())
        .unwrap_or(0);
    pos.position().is_none_or(|c| c > last_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<rhai::AST, ParseError> {
        rhai::Engine::new_raw().compile(src)
    }

    #[test]
    fn syntax_error_names_file_line_column_with_caret() {
        let src = "let a = 1;\nlet b = (2 + ;\n";
        let err = parse(src).unwrap_err();
        let text = render("lessons/x.rhai", src, &parse_error_report(&err));
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("error: lessons/x.rhai:2:"), "{text}");
        assert!(first.contains("syntax error"), "{text}");
        assert!(text.contains(" 2 | let b = (2 + ;"), "{text}");
        let caret = text.lines().nth(2).unwrap();
        let col = err.position().position().unwrap();
        // The caret sits under column `col` of the source line.
        let bar = caret.find('|').unwrap();
        assert_eq!(caret[bar + 2..].find('^').unwrap() + 1, col, "{text}");
        assert!(!text.contains("panicked"));
    }

    #[test]
    fn runtime_error_message_is_kept_intact() {
        let mut engine = rhai::Engine::new();
        engine.register_fn("boom", || -> Result<(), Box<EvalAltResult>> {
            Err("there is no cluster 'x' (clusters: none yet)".into())
        });
        let src = "let a = 1;\n    boom();\n";
        let err = engine.run(src).unwrap_err();
        let r = eval_error_report(&err);
        assert_eq!(r.message, "there is no cluster 'x' (clusters: none yet)");
        assert_eq!((r.line, r.col), (Some(2), Some(5)));
        let text = render("t.rhai", src, &r);
        assert!(
            text.starts_with("error: t.rhai:2:5: there is no cluster 'x'"),
            "{text}"
        );
        assert!(text.contains("     ^"), "{text}");
    }

    #[test]
    fn error_inside_a_function_points_inside_with_a_call_note() {
        let engine = rhai::Engine::new();
        let src = "fn f() {\n  throw \"bad\";\n}\nf();\n";
        let err = engine.run(src).unwrap_err();
        let r = eval_error_report(&err);
        assert_eq!(r.message, "bad");
        assert_eq!(r.line, Some(2));
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(
            r.notes[0].contains("'f'") && r.notes[0].contains("4:"),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn unknown_function_and_variable_say_what_to_do() {
        let engine = rhai::Engine::new();
        let r = eval_error_report(&engine.run("nosuch(1);").unwrap_err());
        assert!(
            r.message.contains("there is no function nosuch"),
            "{}",
            r.message
        );
        let r = eval_error_report(&engine.run("print(zz);").unwrap_err());
        assert!(r.message.contains("no variable 'zz'"), "{}", r.message);
    }

    #[test]
    fn error_without_position_has_no_source_line() {
        let r = ErrorReport {
            line: None,
            col: None,
            message: "m".into(),
            notes: vec![],
        };
        assert_eq!(render("f.rhai", "x", &r), "error: f.rhai: m\n");
    }

    #[test]
    fn incomplete_input_is_told_apart_from_errors() {
        let incomplete = [
            "if true {",
            "fn f(a) {\n  print(a);",
            "print(1,",
            "let a = [1, 2,",
            "let m = #{ a: 1,",
            "let s = `multi",
            "let x =",
            "1 +",
        ];
        let wrong = [
            "print(1 2)",
            "let = 3;",
            "}",
            "let a = (1 +) ;",
            "if true { 1 } }",
        ];
        let cases = incomplete.map(|s| (s, true)).into_iter();
        for (src, want) in cases.chain(wrong.map(|s| (s, false))) {
            let err = parse(src).expect_err(src);
            assert_eq!(is_incomplete(src, &err), want, "{src:?}: {err:?}");
        }
    }
}
