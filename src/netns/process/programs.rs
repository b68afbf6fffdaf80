//! Which program a command line runs, and what to say when it is not installed.

use super::{command_with, Setup};
use anyhow::{bail, Result};
use std::process::Command;

/// The command that runs `script` in `ns`: directly when it is plain words, else with
/// `sh -c`. A program that is not installed is named with the package that has it.
pub fn shell_command(
    ns: Option<&str>,
    script: &str,
    env: &[(&str, &str)],
    setup: &Setup,
) -> Result<Command> {
    let path = env
        .iter()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| v.to_string())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    if let Some(msg) = missing_program(script, &path) {
        bail!("{msg}");
    }
    // A plain "program arg arg" line runs directly: the shell would only split it on
    // spaces, and skipping it saves a fork and an exec on every call.
    let mut cmd = match plain_words(script) {
        Some(words) => {
            let mut c = command_with(ns, words[0], setup)?;
            c.args(&words[1..]);
            c
        }
        None => {
            let mut c = command_with(ns, "/bin/sh", setup)?;
            c.arg("-c").arg(script);
            c
        }
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// Debian packages of the tools lessons and tutorials use, for "not installed" answers.
const PACKAGES: &[(&str, &str)] = &[
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("iperf3", "iperf3"),
    ("iperf", "iperf"),
    ("curl", "curl"),
    ("wget", "wget"),
    ("ifconfig", "net-tools"),
    ("netstat", "net-tools"),
    ("route", "net-tools"),
    ("arp", "net-tools"),
    ("conntrack", "conntrack"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("etcdctl", "etcd-client"),
    ("etcd", "etcd-server"),
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("bridge", "iproute2"),
    ("ping", "iputils-ping"),
    ("tracepath", "iputils-tracepath"),
    ("traceroute", "traceroute"),
    ("dig", "bind9-dnsutils"),
    ("nslookup", "bind9-dnsutils"),
    ("nc", "netcat-openbsd"),
    ("socat", "socat"),
    ("python3", "python3"),
    ("nginx", "nginx-light"),
    ("ethtool", "ethtool"),
    ("mtr", "mtr-tiny"),
    ("nmap", "nmap"),
    ("top", "procps"),
    ("ps", "procps"),
    ("busybox", "busybox"),
    ("strace", "strace"),
    ("jq", "jq"),
];

/// When the first word of `script` is a program that is on no directory of `path`,
/// what to say: its name and the Debian package that has it.
pub fn missing_program(script: &str, path: &str) -> Option<String> {
    let first = script.split_whitespace().next()?;
    // Only a bare program name: builtins, assignments, paths and shell syntax are the
    // shell's business.
    if !first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        || first.starts_with(['-', '.'])
        || SHELL_WORDS.contains(&first)
    {
        return None;
    }
    let found = std::env::split_paths(path).any(|d| d.join(first).is_file());
    if found {
        return None;
    }
    Some(match PACKAGES.iter().find(|(p, _)| *p == first) {
        Some((_, pkg)) => format!(
            "{first}: command not found; it comes with the Debian package {pkg} (apt-get install {pkg})"
        ),
        None => format!("{first}: command not found (not installed on this machine)"),
    })
}

/// Shell builtins and keywords: run by the shell, never looked up on PATH.
const SHELL_WORDS: &[&str] = &[
    "cd", "export", "exit", "set", "unset", "ulimit", "umask", "exec", "if", "for", "while",
    "until", "case", "source", "alias", "wait", "echo", "printf", "read", "test", "true", "false",
    "kill", "trap", "type", "command", "eval", "shift", "times", "local", "return", "break",
    "continue", "getopts", "hash", "jobs", "fg", "bg", "pwd",
];

/// The words of `script` when it has nothing a shell would interpret (quotes, variables,
/// globs, redirections, operators), else None.
fn plain_words(script: &str) -> Option<Vec<&str>> {
    const SPECIAL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
        '=', '%', '{', '}', '\n', '!',
    ];
    if script.contains(SPECIAL) {
        return None;
    }
    let words: Vec<&str> = script.split_whitespace().collect();
    let first = words.first()?;
    // Shell builtins and keywords need the shell.
    if matches!(
        *first,
        "cd" | "export"
            | "exit"
            | "set"
            | "ulimit"
            | "umask"
            | "exec"
            | "if"
            | "for"
            | "while"
            | "."
            | "source"
            | "alias"
            | "wait"
    ) {
        return None;
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named_with_its_debian_package() {
        let none = "/nonexistent-dir";
        assert_eq!(
            missing_program("tcpdump -ni flannel.100", none).as_deref(),
            Some("tcpdump: command not found; it comes with the Debian package tcpdump (apt-get install tcpdump)")
        );
        assert!(missing_program("ifconfig", none)
            .unwrap()
            .contains("package net-tools"));
        assert!(missing_program("etcdctl get /", none)
            .unwrap()
            .contains("package etcd-client"));
        assert!(missing_program("frobnicate", none)
            .unwrap()
            .contains("not installed"));
        // Found on PATH, shell builtins, assignments and paths are left to run.
        assert_eq!(missing_program("sh -c true", "/bin:/usr/bin"), None);
        for line in [
            "cd /tmp",
            "echo hi",
            "A=1 etcdctl get /",
            "./x",
            "[ -f x ]",
            "",
        ] {
            assert_eq!(missing_program(line, none), None, "{line}");
        }
    }

    #[test]
    fn plain_lines_skip_the_shell_and_others_keep_it() {
        assert_eq!(
            plain_words("ping -c 3 11.0.0.2"),
            Some(vec!["ping", "-c", "3", "11.0.0.2"])
        );
        assert_eq!(plain_words("ip -br addr"), Some(vec!["ip", "-br", "addr"]));
        for shelly in [
            "echo $HOME",
            "ls | wc -l",
            "a && b",
            "echo 'x y'",
            "cat /tmp/*.env",
            "ETCDCTL_API=2 etcdctl cluster-health",
            "cd /tmp",
            "sleep 1 &",
            "",
        ] {
            assert_eq!(plain_words(shelly), None, "{shelly}");
        }
    }
}
