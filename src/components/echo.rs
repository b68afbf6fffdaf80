//! `knetsim echo-server`: the lessons' tiny HTTP server (the original workshop's
//! `utils/ss.py S1-W2`). It answers every GET (and HEAD) with one fixed message and a
//! newline, so a learner sees at a glance which replica answered. Other methods get 405.
//! std only: a listener and one thread per connection; it runs until it is killed.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct EchoServerArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// The text every GET is answered with (a newline is added), e.g. S1-W2.
    #[arg(long)]
    pub message: String,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,
}

/// A message is one short line of text.
pub fn check_message(message: &str) -> Result<()> {
    if message.is_empty() {
        bail!("the echo server's message is empty: give the text it answers with, e.g. --message S1-W2");
    }
    if message.contains(['\n', '\r']) || message.chars().any(|c| c.is_control()) {
        bail!("the echo server's message {message:?} has a line break or control character: use one line of text, e.g. S1-W2");
    }
    if message.len() > 200 {
        bail!("the echo server's message is {} bytes long: keep it under 200 (it names a replica, e.g. S1-W2)", message.len());
    }
    Ok(())
}

pub fn run(args: EchoServerArgs) -> Result<()> {
    check_message(&args.message)?;
    let addr = SocketAddrV4::new(args.bind, args.port);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {} is already in use in this network namespace: another server listens on it. \
             Pick another --port, or stop that server (`ss -ltnp` shows which process it is)",
            args.port
        ),
        Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
    };
    eprintln!(
        "echo-server: listening on {addr}, answering every GET with {:?} (pid {})",
        args.message,
        std::process::id()
    );
    let body: &'static str = Box::leak(format!("{}\n", args.message).into_boxed_str());
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                std::thread::spawn(move || {
                    let _ = serve(s, body);
                });
            }
            Err(e) => eprintln!("echo-server: accept: {e}"),
        }
    }
    Ok(())
}

/// Reads one request head and answers it; the connection is then closed.
fn serve(mut s: TcpStream, body: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            break;
        }
    }
    let method = buf
        .split(|b| *b == b' ')
        .next()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    let reply = match method.as_str() {
        "GET" => response("200 OK", body, true),
        "HEAD" => response("200 OK", body, false),
        "" => return Ok(()),
        _ => response(
            "405 Method Not Allowed",
            "this echo server answers GET only\n",
            true,
        ),
    };
    s.write_all(reply.as_bytes())?;
    s.flush()
}

fn response(status: &str, body: &str, with_body: bool) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if with_body { body } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_short_line() {
        assert!(check_message("S1-W2").is_ok());
        assert!(check_message("").unwrap_err().to_string().contains("empty"));
        assert!(check_message("a\nb")
            .unwrap_err()
            .to_string()
            .contains("line break"));
        assert!(check_message(&"x".repeat(300)).is_err());
    }

    #[test]
    fn answers_get_head_and_refuses_post() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().take(3) {
                let _ = serve(c.unwrap(), "S1-W2\n");
            }
        });
        let ask = |req: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let get = ask("GET /svc1 HTTP/1.0\r\nHost: x\r\n\r\n");
        assert!(get.starts_with("HTTP/1.1 200 OK"), "{get}");
        assert!(get.ends_with("\r\n\r\nS1-W2\n"), "{get}");
        let head = ask("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            head.contains("Content-Length: 6") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let post = ask("POST / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }
}
