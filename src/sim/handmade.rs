//! A learner's own namespaces, made by hand with the real `ip netns` commands, as the
//! original workshop begins: `ip netns add myns`, `ip netns exec myns ...`, `ip netns del
//! myns`. The name is made this run's own the way node names are (`<instance>-myns` unless
//! the instance is the default one), recorded before `ip netns add` runs, so parallel runs
//! do not collide and teardown removes what a failed run left. Commands run only inside
//! such a namespace: the host's root namespace is never touched.

use super::addressing::valid_name;
use super::node_exec::ExecPlace;
use super::Sim;
use anyhow::{bail, Context, Result};

/// One of the `ip netns` commands a lesson may run by hand.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Add(&'a str),
    Exec(&'a str, String),
    Del(&'a str),
}

const FORMS: &str = "`ip netns add NAME`, `ip netns exec NAME COMMAND` or `ip netns del NAME`";

fn checked_name<'a>(cmd: &str, w: Option<&'a str>) -> Result<&'a str> {
    match w {
        Some(n) if valid_name(n) => Ok(n),
        Some(n) => bail!(
            "'{n}' is not a namespace name here: start with a letter, then letters, digits or '_', at most 20 (e.g. myns)"
        ),
        None => bail!("`{cmd}` names no namespace: write {FORMS}"),
    }
}

fn parse<'a>(cmd: &'a str) -> Result<Command<'a>> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let name = |w: Option<&&'a str>| checked_name(cmd, w.copied());
    match words.as_slice() {
        ["ip", "netns", "add", rest @ ..] if rest.len() <= 1 => Ok(Command::Add(name(rest.first())?)),
        ["ip", "netns", "del" | "delete", rest @ ..] if rest.len() <= 1 => {
            Ok(Command::Del(name(rest.first())?))
        }
        ["ip", "netns", "exec", n, _, ..] => {
            let n = name(Some(n))?;
            Ok(Command::Exec(n, after_words(cmd, 4).to_string()))
        }
        _ => bail!("netns() runs {FORMS}, not `{cmd}`: other commands run on a node, e.g. C0w1.exec(\"...\")"),
    }
}

/// `s` without its first `n` words, its own spacing kept (pipes and quotes included).
fn after_words(s: &str, n: usize) -> &str {
    let mut rest = s.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

impl Sim {
    /// Runs a learner's `ip netns add|exec|del NAME ...` with NAME made this run's own;
    /// returns the command as it ran and its output.
    pub fn netns_by_hand(&self, cmd: &str) -> Result<(String, String)> {
        match parse(cmd)? {
            Command::Add(n) => {
                let ns = self.ns_name(n);
                let real = format!("ip netns add {ns}");
                if self.is_node_name(n) || self.inner.record.snapshot().namespaces.contains(&ns) {
                    bail!("namespace {ns} is already one of this run's: pick another name, or `ip netns del {n}` first");
                }
                if crate::netns::exists(&ns) {
                    bail!("`{real}`: namespace {ns} already exists and this run did not make it (it is left alone): pick another name");
                }
                // Recorded before it exists, so a crash in between still leaves nothing.
                self.inner.record.add_namespace(&ns)?;
                let out = std::process::Command::new("ip")
                    .args(["netns", "add", &ns])
                    .output()
                    .context("running ip (package iproute2)")?;
                if !out.status.success() {
                    self.inner.record.forget_namespace(&ns)?;
                    bail!(
                        "`{real}` failed: {}(a namespace of that name that this run did not make is left alone): pick another name",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok((real, String::from_utf8_lossy(&out.stdout).into_owned()))
            }
            Command::Exec(n, inner) => {
                let ns = self.own_by_hand(n)?;
                let place = ExecPlace {
                    hosts: None,
                    cwd: self.run_dir().to_path_buf(),
                    path: self.path_env(),
                    etcd: String::new(),
                };
                let out = super::worker::exec_in(self, &ns, &ns, &place, &inner, None)?;
                Ok((format!("ip netns exec {ns} {inner}"), out))
            }
            Command::Del(n) => {
                let ns = self.own_by_hand(n)?;
                let real = format!("ip netns del {ns}");
                let out = std::process::Command::new("ip")
                    .args(["netns", "del", &ns])
                    .output()
                    .context("running ip (package iproute2)")?;
                if !out.status.success() {
                    bail!("`{real}` failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                self.inner.record.forget_namespace(&ns)?;
                Ok((real, String::from_utf8_lossy(&out.stdout).into_owned()))
            }
        }
    }

    fn is_node_name(&self, name: &str) -> bool {
        self.node(name).is_some() || name == super::bringup::UNDERLAY_NODE
    }

    /// The namespace of hand-made `name`, if this run made it by hand (not a node's).
    fn own_by_hand(&self, name: &str) -> Result<String> {
        let ns = self.ns_name(name);
        if self.is_node_name(name) || !self.inner.record.snapshot().namespaces.contains(&ns) {
            bail!("there is no namespace {name} made by hand in this run: make it first with `ip netns add {name}`");
        }
        Ok(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_forms_are_taken() {
        assert_eq!(parse("ip netns add myns").unwrap(), Command::Add("myns"));
        assert_eq!(parse("ip netns delete myns").unwrap(), Command::Del("myns"));
        assert_eq!(
            parse("ip netns exec myns  ping -c 1 127.0.0.1 | tail -1").unwrap(),
            Command::Exec("myns", "ping -c 1 127.0.0.1 | tail -1".into())
        );
        assert_eq!(
            parse("ip netns exec myns ip -n myns link").unwrap(),
            Command::Exec("myns", "ip -n myns link".into())
        );
        for bad in [
            "ip link add x type dummy",
            "ip netns add",
            "ip netns add a b",
            "ip netns exec myns",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let e = parse("ip netns add ../x").unwrap_err().to_string();
        assert!(e.contains("not a namespace name"), "{e}");
    }
}
