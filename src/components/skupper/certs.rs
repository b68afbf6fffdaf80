//! Site certificate authorities, router certificates, link tokens and the TLS settings of
//! inter-router links.
//!
//! As in Skupper, every site has its own certificate authority. The site's router listens
//! for inter-router links with a server certificate issued by that CA and asks every peer
//! for a client certificate from the same CA. A *token* is what another site needs to link
//! to this one: the CA certificate, a client certificate and key issued by this site's CA,
//! and the host and port of the inter-router listener.

use crate::netns::state;
use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The DNS name every router certificate carries, used when a connector does not verify the
/// host name (`verifyHostname: false`).
pub const ROUTER_SAN: &str = "skupper-router";

/// Paths of the three files an sslProfile names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params(site: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, format!("{site} site CA"));
    p.distinguished_name
        .push(DnType::OrganizationName, "knetsim skupper");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(p)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `dir` and its missing parents as 0700 directories of root's, each created with
/// that mode so no other user can ever list it, and checks `dir` as every knetsim state
/// directory is checked ([`state::verify_private_dir`]: root's, not a symlink, not
/// writable by others).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| {
            !d.as_os_str().is_empty()
                && std::fs::symlink_metadata(d)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect();
    for d in missing.into_iter().rev() {
        state::ensure_private_dir(d)?;
    }
    state::verify_private_dir(dir)
}

/// Writes a secret (a private key, a token) as a 0600 file in a private directory: the
/// bytes go into a new file created 0600 beside `path`, which then replaces `path`. No
/// moment exists at which another user could open it, and a symlink planted at `path` is
/// replaced, never followed.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let (dir, tmp) = state::temp_beside(path)?;
    state::verify_private_dir(&dir)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} to {}", tmp.display(), path.display())
    })
}

/// Creates a site certificate authority in `dir` (`ca.crt`, `ca.key`, `ca.name`) and
/// returns the path of `ca.crt`. The directory is private (0700) and the key 0600.
pub fn create_site_ca(dir: &Path, site: &str) -> Result<PathBuf> {
    create_private_dir(dir)?;
    let key = KeyPair::generate()?;
    let cert = ca_params(site)?.self_signed(&key)?;
    write(&dir.join("ca.crt"), &cert.pem())?;
    write_private(&dir.join("ca.key"), &key.serialize_pem())?;
    write(&dir.join("ca.name"), site)?;
    Ok(dir.join("ca.crt"))
}

/// Issues a certificate and key signed by the CA in `ca_dir` into `out_dir` (`ca.crt`,
/// `tls.crt`, `tls.key`). The certificate names `hosts` (IP addresses or DNS names) and
/// [`ROUTER_SAN`], and serves both as server and client certificate. `out_dir` is private
/// (0700) and the key 0600.
pub fn issue_router_cert(
    ca_dir: &Path,
    out_dir: &Path,
    name: &str,
    hosts: &[&str],
) -> Result<CertFiles> {
    let site = std::fs::read_to_string(ca_dir.join("ca.name")).with_context(|| {
        format!(
            "{} holds no site CA (no ca.name); create one with create_site_ca first",
            ca_dir.display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(ca_dir.join("ca.key"))
        .with_context(|| format!("cannot read {}/ca.key", ca_dir.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| anyhow!("{}/ca.key is not a key: {e}", ca_dir.display()))?;
    let issuer = Issuer::new(ca_params(site.trim())?, ca_key);

    let mut sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    sans.push(ROUTER_SAN.to_string());
    let mut p = CertificateParams::new(sans)
        .map_err(|e| anyhow!("a host name for certificate {name} is not valid: {e}"))?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    create_private_dir(out_dir)?;
    let files = CertFiles {
        ca_cert: out_dir.join("ca.crt"),
        cert: out_dir.join("tls.crt"),
        key: out_dir.join("tls.key"),
    };
    std::fs::copy(ca_dir.join("ca.crt"), &files.ca_cert)
        .with_context(|| format!("cannot copy {}/ca.crt", ca_dir.display()))?;
    write(&files.cert, &cert.pem())?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// A link token: what a site hands to another so that it can link to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Directory holding `ca.crt`, `tls.crt`, `tls.key`.
    pub files: CertFiles,
    /// Host and port of the issuing site's inter-router listener.
    pub host: String,
    pub port: u16,
}

/// Creates a token in `out_dir` for linking to the site whose CA is in `ca_dir` and whose
/// inter-router listener is at `host:port`. Also writes `out_dir/token.json` (0600).
pub fn create_token(
    ca_dir: &Path,
    out_dir: &Path,
    name: &str,
    host: &str,
    port: u16,
) -> Result<Token> {
    let files = issue_router_cert(ca_dir, out_dir, name, &[])?;
    let json = serde_json::json!({
        "host": host, "port": port,
        "caCertFile": files.ca_cert, "certFile": files.cert, "privateKeyFile": files.key,
    });
    write_private(&out_dir.join("token.json"), &format!("{json:#}\n"))?;
    Ok(Token {
        files,
        host: host.to_string(),
        port,
    })
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow!("cannot read certificate file {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("certificate file {path} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        bail!("certificate file {path} holds no certificate");
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow!("cannot read a private key from {path}: {e}"))
}

fn roots(ca: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        store
            .add(c)
            .map_err(|e| anyhow!("CA certificate {ca} is not usable: {e}"))?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS settings of an inter-router listener: our certificate, and peers must present a
/// client certificate from our CA.
pub fn server_config(p: &super::config::SslProfile) -> Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = match (&p.cert_file, &p.private_key_file) {
        (Some(c), Some(k)) => (c, k),
        _ => bail!(
            "sslProfile \"{}\" is used by a listener but has no certFile/privateKeyFile",
            p.name
        ),
    };
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(&p.ca_cert_file)?,
        provider(),
    )
    .build()
    .map_err(|e| anyhow!("sslProfile \"{}\": {e}", p.name))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| anyhow!("sslProfile \"{}\": certificate and key: {e}", p.name))?;
    Ok(Arc::new(cfg))
}

/// TLS settings of an inter-router connector: trust only the profile's CA, present the
/// profile's certificate.
pub fn client_config(p: &super::config::SslProfile) -> Result<Arc<rustls::ClientConfig>> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&p.ca_cert_file)?);
    let cfg = match (&p.cert_file, &p.private_key_file) {
        (Some(c), Some(k)) => b
            .with_client_auth_cert(load_certs(c)?, load_key(k)?)
            .map_err(|e| anyhow!("sslProfile \"{}\": certificate and key: {e}", p.name))?,
        _ => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The name a connector checks in the listener's certificate.
pub fn server_name(host: &str, verify_hostname: bool) -> Result<ServerName<'static>> {
    let h = if verify_hostname { host } else { ROUTER_SAN };
    ServerName::try_from(h.to_string())
        .map_err(|e| anyhow!("\"{h}\" is not a host name or address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::skupper::config::SslProfile;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn profile(f: &CertFiles) -> SslProfile {
        SslProfile {
            name: "p".into(),
            ca_cert_file: f.ca_cert.display().to_string(),
            cert_file: Some(f.cert.display().to_string()),
            private_key_file: Some(f.key.display().to_string()),
        }
    }

    #[test]
    fn ca_issue_and_load() {
        let d = std::env::temp_dir().join(format!("knetsim-skcerts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        create_site_ca(&d.join("ca"), "C0").unwrap();
        let f = issue_router_cert(&d.join("ca"), &d.join("router"), "C0", &["127.0.0.1"]).unwrap();
        assert!(std::fs::read_to_string(&f.cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        server_config(&profile(&f)).unwrap();
        client_config(&profile(&f)).unwrap();
        let t = create_token(&d.join("ca"), &d.join("token"), "C1", "10.0.0.3", 55671).unwrap();
        assert_eq!(t.port, 55671);
        assert!(d.join("token/token.json").exists());
        // A directory without a CA is named in the error.
        let e = issue_router_cert(&d.join("nope"), &d.join("x"), "x", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("no site CA"), "{e:#}");
        // A profile pointing to a missing file says which.
        let mut bad = profile(&f);
        bad.ca_cert_file = "/nonexistent/ca.crt".into();
        let e = client_config(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/ca.crt"), "{e:#}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn secrets_are_created_private_and_never_follow_a_symlink() {
        let d = std::env::temp_dir().join(format!("knetsim-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        // Missing parents are created 0700 as well.
        let dir = d.join("site/tokens/1");
        create_private_dir(&dir).unwrap();
        for p in [&d, &d.join("site"), &d.join("site/tokens"), &dir] {
            assert_eq!(mode(p), 0o700, "{}", p.display());
        }
        let key = dir.join("tls.key");
        write_private(&key, "first").unwrap();
        assert_eq!(mode(&key), 0o600);
        // Overwriting keeps the mode and leaves no temporary file.
        write_private(&key, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "second");
        assert_eq!(mode(&key), 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A symlink where the secret goes is replaced; what it pointed to is untouched.
        let victim = d.join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        let token = dir.join("token.json");
        std::os::unix::fs::symlink(&victim, &token).unwrap();
        write_private(&token, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
        assert!(!std::fs::symlink_metadata(&token)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(mode(&token), 0o600);
        // A directory others can write is refused, for the directory and for a key in it.
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", create_private_dir(&open).unwrap_err());
        assert!(e.contains("is writable by other users (mode 0777)"), "{e}");
        let e = format!(
            "{:#}",
            write_private(&open.join("ca.key"), "k").unwrap_err()
        );
        assert!(e.contains("is writable by other users"), "{e}");
        assert!(!open.join("ca.key").exists());
        // One they can only read is made private before a key goes in.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        write_private(&open.join("ca.key"), "k").unwrap();
        assert_eq!(mode(&open), 0o700);
        // A symlink to a private directory is refused, and nothing is written through it.
        let link = d.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = format!("{:#}", create_private_dir(&link).unwrap_err());
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = format!("{:#}", write_private(&link.join("x.key"), "k").unwrap_err());
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(!dir.join("x.key").exists());
        // The CA, router and token files: keys and token.json 0600, certificates readable.
        create_site_ca(&d.join("ca"), "C0").unwrap();
        let f = issue_router_cert(&d.join("ca"), &d.join("router"), "C0", &[]).unwrap();
        let t = create_token(&d.join("ca"), &d.join("tok"), "C1", "10.0.0.3", 55671).unwrap();
        for p in [
            d.join("ca/ca.key"),
            f.key.clone(),
            t.files.key.clone(),
            d.join("tok/token.json"),
        ] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        for p in [d.join("ca"), d.join("router"), d.join("tok")] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
