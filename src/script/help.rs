//! The script API as the learner reads it: `help`, `help NAME` and the README's API list,
//! all rendered from the registry's entries.

use super::registry::{catalog, lookup, Entry, Kind};

/// Column the descriptions start at in `help`; a longer call goes on a line of its own.
const CALL_WIDTH: usize = 40;

fn help_line(out: &mut String, call: &str, about: &str) {
    if call.chars().count() < CALL_WIDTH {
        out.push_str(&format!("  {call:<CALL_WIDTH$} {about}\n"));
    } else {
        out.push_str(&format!("  {call}\n  {:<CALL_WIDTH$} {about}\n", ""));
    }
}

/// The API part of `help`: functions, then each type's methods and properties.
pub fn help_text() -> String {
    let c = catalog();
    let mut s = String::from("Functions:\n");
    for e in c.entries.iter().filter(|e| e.receiver.is_none()) {
        help_line(&mut s, e.signature, e.about);
    }
    for t in &c.types {
        s.push_str(&format!("\n{} ({}):\n", t.name, t.about));
        for e in c.entries.iter().filter(|e| e.receiver == Some(t.name)) {
            help_line(&mut s, &format!(".{}", e.signature), e.about);
        }
    }
    s
}

/// `help NAME`: each entry of that name with its example (`help Worker`: the type's
/// methods and properties); or what to try instead.
pub fn help_on(name: &str) -> String {
    if let Some(t) = catalog().types.iter().find(|t| t.name == name.trim()) {
        let mut s = format!("{} ({}):\n", t.name, t.about);
        for e in catalog()
            .entries
            .iter()
            .filter(|e| e.receiver == Some(t.name))
        {
            help_line(&mut s, &format!(".{}", e.signature), e.about);
        }
        return s;
    }
    let found = lookup(name);
    if found.is_empty() {
        let want = name.trim().rsplit('.').next().unwrap_or("").to_lowercase();
        let mut near: Vec<String> = catalog()
            .entries
            .iter()
            .filter(|e| !want.is_empty() && (e.name.contains(&want) || want.contains(e.name)))
            .map(|e| e.full_name())
            .collect();
        near.dedup();
        let hint = if near.is_empty() {
            "`help` lists the whole API".to_string()
        } else {
            format!(
                "did you mean {}? (`help` lists the whole API)",
                near.join(", ")
            )
        };
        return format!(
            "no function, method or property named '{}': {hint}\n",
            name.trim()
        );
    }
    let mut s = String::new();
    for e in found {
        let kind = match e.kind {
            Kind::Function => "function",
            Kind::Method => "method",
            Kind::Property => "property",
        };
        s.push_str(&format!(
            "{}  ({kind})\n  {}\n  e.g. {}\n",
            e.call(),
            e.about,
            e.example
        ));
    }
    s
}

/// The README's API list (between `<!-- api:begin -->` and `<!-- api:end -->`).
pub fn markdown() -> String {
    let c = catalog();
    let mut s = String::from(
        "<!-- Generated from the script API's registry (src/script/): edit the entries there, \
         then run KNETSIM_BLESS=1 cargo test --lib readme_api -->\n",
    );
    let item = |s: &mut String, call: &str, e: &Entry| {
        s.push_str(&format!(
            "- `{call}`: {}  \n  e.g. `{}`\n",
            e.about, e.example
        ));
    };
    s.push_str("\n**Functions**\n\n");
    for e in c.entries.iter().filter(|e| e.receiver.is_none()) {
        item(&mut s, e.signature, e);
    }
    for t in &c.types {
        s.push_str(&format!("\n**{}** ({})\n\n", t.name, t.about));
        for e in c.entries.iter().filter(|e| e.receiver == Some(t.name)) {
            item(&mut s, &format!(".{}", e.signature), e);
        }
    }
    s
}

pub const README_BEGIN: &str = "<!-- api:begin -->";
pub const README_END: &str = "<!-- api:end -->";

/// `readme` with the text between the markers replaced by `section`; `None` without markers.
pub fn splice_readme(readme: &str, section: &str) -> Option<String> {
    let b = readme.find(README_BEGIN)? + README_BEGIN.len();
    let e = b + readme[b..].find(README_END)?;
    Some(format!("{}\n{section}{}", &readme[..b], &readme[e..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_entry_with_its_description() {
        let h = help_text();
        for e in &catalog().entries {
            assert!(h.contains(e.signature), "help misses {}", e.full_name());
            assert!(
                h.contains(e.about),
                "help misses {}'s description",
                e.full_name()
            );
        }
        for want in [
            "skupper_link",
            "create_conf",
            "start_skupper",
            "exec_async",
            "dir",
            "say",
        ] {
            assert!(h.contains(want), "help misses {want}");
        }
    }

    #[test]
    fn help_on_a_name_shows_its_example() {
        let h = help_on("exec_container");
        assert!(
            h.contains("Worker.exec_container(") && h.contains("e.g. "),
            "{h}"
        );
        let h = help_on("exec");
        assert!(
            h.contains("Worker.exec(") && h.contains("EtcdNode.exec("),
            "{h}"
        );
        let h = help_on("EtcdNode.exec");
        assert!(!h.contains("Worker."), "{h}");
        let h = help_on("skupper_token()");
        assert!(h.contains("Cluster.skupper_token"), "{h}");
        let h = help_on("exec_contaner");
        assert!(
            h.starts_with("no function, method or property named 'exec_contaner'"),
            "{h}"
        );
        let h = help_on("EtcdNode");
        assert!(
            h.starts_with("EtcdNode (") && h.contains(".exec(cmd)"),
            "{h}"
        );
        assert!(!h.contains(".skupper_init"), "{h}");
        let h = help_on("skupper");
        assert!(
            h.contains("did you mean") && h.contains("Cluster.skupper_init"),
            "{h}"
        );
    }

    #[test]
    fn readme_api_section_is_generated_from_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let want = splice_readme(&readme, &markdown())
            .expect("README.md has <!-- api:begin --> and <!-- api:end --> markers");
        if want != readme {
            if std::env::var_os("KNETSIM_BLESS").is_some() {
                std::fs::write(path, &want).unwrap();
                return;
            }
            panic!(
                "README.md's API section differs from the registry; run \
                 `KNETSIM_BLESS=1 cargo test --lib readme_api` to regenerate it. Expected:\n{}",
                markdown()
            );
        }
    }

    #[test]
    fn splicing_replaces_only_between_the_markers() {
        let r = "a\n<!-- api:begin -->\nold\n<!-- api:end -->\nb\n";
        assert_eq!(
            splice_readme(r, "new\n").unwrap(),
            "a\n<!-- api:begin -->\nnew\n<!-- api:end -->\nb\n"
        );
        assert!(splice_readme("no markers", "x").is_none());
    }
}
