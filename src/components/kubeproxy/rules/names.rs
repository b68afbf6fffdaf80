//! Names in the table: chain names as upstream kube-proxy forms them (a hash, then the
//! readable service port), and comments made safe for nft.

use crate::components::kubeproxy::model::{Service, ServicePort};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// First 8 characters of base32(sha256(name)), RFC 4648 alphabet, as kube-proxy does.
pub fn hash8(name: &str) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(name.as_bytes());
    // 8 base32 characters use the first 40 bits = 5 bytes.
    let mut bits: u64 = 0;
    for b in &digest[..5] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..8)
        .map(|i| ALPHA[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// `ns/name/proto/port`, the readable part of every chain of one service port.
pub fn service_port_name(svc: &Service, port: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        port.protocol,
        port.label()
    )
}

fn hashed(prefix: &str, base: &str) -> String {
    let mut name = format!("{prefix}{}-{base}", hash8(base));
    if name.len() > 128 {
        name.truncate(125);
        name.push_str("...");
    }
    name
}

pub fn service_chain(svc: &Service, port: &ServicePort) -> String {
    hashed("service-", &service_port_name(svc, port))
}

pub fn external_chain(svc: &Service, port: &ServicePort) -> String {
    hashed("external-", &service_port_name(svc, port))
}

pub fn endpoint_chain(svc: &Service, port: &ServicePort, ip: Ipv4Addr) -> String {
    hashed(
        "endpoint-",
        &format!(
            "{}__{ip}/{}",
            service_port_name(svc, port),
            port.target_port
        ),
    )
}

pub fn vip_chain(vip: Ipv4Addr) -> String {
    hashed("vip-", &vip.to_string())
}

pub fn vip_endpoint_chain(vip: Ipv4Addr, ip: Ipv4Addr) -> String {
    hashed("vip-endpoint-", &format!("{vip}__{ip}"))
}

/// True for chains this module creates per Service/VIP (the others are fixed).
pub fn is_dynamic_chain(name: &str) -> bool {
    name.contains('/') || name.starts_with("vip-")
}

/// What an endpoint chain's name says: (kind "service" or "vip", the service port's
/// `ns/name/proto/port` or the VIP, the endpoint's address).
pub fn endpoint_of(chain: &str) -> Option<(&'static str, String, Ipv4Addr)> {
    let (kind, rest) = if let Some(r) = chain.strip_prefix("vip-endpoint-") {
        ("vip", r)
    } else if let Some(r) = chain.strip_prefix("endpoint-") {
        ("service", r)
    } else {
        return None;
    };
    // rest = HASH-<service part>__<ip>[/<port>]
    let rest = rest.get(9..)?;
    let (svc, ep) = rest.split_once("__")?;
    let ip = ep.split('/').next()?.parse().ok()?;
    Some((kind, svc.to_string(), ip))
}

/// Text usable inside an nft comment (quoted, at most 128 bytes).
pub fn comment(s: &str) -> String {
    let mut c: String = s
        .chars()
        .map(|ch| {
            if ch == '"' || ch == '\\' || ch.is_control() {
                '_'
            } else {
                ch
            }
        })
        .collect();
    if c.len() > 120 {
        let mut cut = 117;
        while !c.is_char_boundary(cut) {
            cut -= 1;
        }
        c.truncate(cut);
        c.push_str("...");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::kubeproxy::model::ORIGINAL_VIP;

    // The same Service the model's tests use.
    use crate::components::kubeproxy::model::tests::web;

    #[test]
    fn hash_matches_base32_sha256() {
        // sha256("") = e3b0c442 98..., base32 of e3 b0 c4 42 98 = "4OYMIQUY".
        assert_eq!(hash8(""), "4OYMIQUY");
        // sha256("abc") = ba7816bf 8f...: base32 "XJ4BNP4P".
        assert_eq!(hash8("abc"), "XJ4BNP4P");
        let h = hash8("default/web/tcp/http");
        assert_eq!(h.len(), 8);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }

    #[test]
    fn chain_names() {
        let svc = web();
        let port = &svc.ports[0];
        let h = hash8("default/web/tcp/http");
        assert_eq!(
            service_chain(&svc, port),
            format!("service-{h}-default/web/tcp/http")
        );
        let ip: Ipv4Addr = "11.10.0.2".parse().unwrap();
        let he = hash8("default/web/tcp/http__11.10.0.2/8000");
        let ep = endpoint_chain(&svc, port, ip);
        assert_eq!(
            ep,
            format!("endpoint-{he}-default/web/tcp/http__11.10.0.2/8000")
        );
        assert_eq!(
            endpoint_of(&ep),
            Some(("service", "default/web/tcp/http".to_string(), ip))
        );
        let vep = vip_endpoint_chain(ORIGINAL_VIP, ip);
        assert_eq!(
            endpoint_of(&vep),
            Some(("vip", "100.64.10.1".to_string(), ip))
        );
        assert_eq!(endpoint_of(&service_chain(&svc, port)), None);
        let mut unnamed = port.clone();
        unnamed.name = None;
        assert!(service_chain(&svc, &unnamed).ends_with("-default/web/tcp/80"));
        assert!(
            vip_chain(ORIGINAL_VIP).starts_with("vip-")
                && vip_chain(ORIGINAL_VIP).ends_with("-100.64.10.1")
        );
        assert!(is_dynamic_chain(&vep) && !is_dynamic_chain("services"));
    }

    #[test]
    fn comments_are_quoted_safely_and_short() {
        assert_eq!(comment("a \"b\" \\ c\n"), "a _b_ _ c_");
        let long = comment(&"é".repeat(100));
        assert!(long.len() <= 120 && long.ends_with("..."), "{long}");
    }
}
