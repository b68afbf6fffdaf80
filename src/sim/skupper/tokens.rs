//! Tokens and links: a token carries a site's address and a client certificate its CA
//! signed; a site dialing with it links to the issuer.

use super::*;

/// What a token file holds (`token.json` in the token's directory).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct TokenFile {
    instance: String,
    site: String,
    host: String,
    port: u16,
    tls: bool,
    #[serde(rename = "caCertFile", default)]
    ca_cert_file: Option<PathBuf>,
    #[serde(rename = "certFile", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "privateKeyFile", default)]
    private_key_file: Option<PathBuf>,
}

pub(super) fn read_token(token: &str) -> Result<TokenFile> {
    let path = Path::new(token);
    let how = "a token is the value skupper_token() returns, e.g. `let t = C0.skupper_token(); C1.skupper_link(t);`";
    if !path.is_absolute() || !path.is_file() {
        // A token of ours whose site was deleted since: .../skupper/C0/tokens/1/token.json
        let site = path
            .ancestors()
            .nth(3)
            .filter(|_| path.ends_with("token.json"))
            .filter(|d| d.parent().is_some_and(|p| p.ends_with("skupper")))
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(site) = site {
            bail!(
                "the token is from a Skupper site of {site} that was deleted (its tokens went with it): \
                 issue a new one with {site}.skupper_token(), after {site}.skupper_init() if {site} has no site now"
            );
        }
        bail!("\"{token}\" is not a Skupper token (no such token file): {how}");
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read token {token}: {e}; {how}"))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{token} is not a Skupper token ({e}); {how}"))
}

impl Cluster {
    /// Issues a token another site can link with; returns the token file's path.
    pub fn skupper_token(&self) -> Result<String> {
        let s = self.require_site()?;
        let n = s.tokens + 1;
        let name = self.name();
        // A per-issue suffix keeps a deleted site's token from naming a later site's token.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = s.dir.join("tokens").join(format!("{n}-{nonce:08x}"));
        let (ca, cert, key) = if s.tls {
            let t = create_token(
                &s.dir.join("ca"),
                &dir,
                &format!("{name}-token-{n}"),
                &s.host.to_string(),
                INTER_ROUTER_PORT,
            )?;
            (Some(t.files.ca_cert), Some(t.files.cert), Some(t.files.key))
        } else {
            create_private_dir(&dir)?;
            (None, None, None)
        };
        let tok = TokenFile {
            instance: self.sim.instance().to_string(),
            site: name,
            host: s.host.to_string(),
            port: INTER_ROUTER_PORT,
            tls: s.tls,
            ca_cert_file: ca,
            cert_file: cert,
            private_key_file: key,
        };
        let path = dir.join("token.json");
        write_private(&path, &(serde_json::to_string_pretty(&tok)? + "\n"))?;
        with_site_mut(&self.sim, &self.id, |site| {
            if let Some(site) = site {
                site.tokens = n;
            }
        });
        Ok(path.display().to_string())
    }

    /// Links this site to the site that issued `token`: a connector (with the token's
    /// certificates as its sslProfile) dialing that site's router on 55671. Returns once
    /// the link is up and every service of either side is reachable from the other.
    pub fn skupper_link(&self, token: &str, opts: LinkOptions) -> Result<()> {
        let me = self.require_site()?;
        let name = self.name();
        let tok = read_token(token)?;
        if tok.instance != self.sim.instance() {
            bail!(
                "this token was issued by instance '{}', not by this simulation ('{}'): issue one here with {}.skupper_token()",
                tok.instance,
                self.sim.instance(),
                tok.site
            );
        }
        let peer = tok.site.strip_prefix('C').unwrap_or(&tok.site).to_string();
        if peer == self.id {
            bail!("{name} cannot link to itself: pass {name}'s token to another cluster, e.g. C1.skupper_link(t)");
        }
        let peer_cluster = self
            .sim
            .get_cluster(&peer)
            .map_err(|e| anyhow!("the token names site {} but {e}", tok.site))?;
        if peer_cluster.site().is_none() {
            bail!(
                "the token's site {} is not running (its Skupper site was deleted or never created): \
                 call {}.skupper_init() and issue a new token with {}.skupper_token()",
                tok.site,
                tok.site,
                tok.site
            );
        }
        let files = if tok.tls {
            let f = CertFiles {
                ca_cert: tok.ca_cert_file.clone().unwrap_or_default(),
                cert: tok.cert_file.clone().unwrap_or_default(),
                key: tok.private_key_file.clone().unwrap_or_default(),
            };
            if !(f.ca_cert.is_file() && f.cert.is_file() && f.key.is_file()) {
                bail!(
                    "this token's certificate files are missing ({}): issue a new token with {}.skupper_token()",
                    f.ca_cert.parent().unwrap_or(&f.ca_cert).display(),
                    tok.site
                );
            }
            Some(f)
        } else {
            None
        };
        let all = sites(&self.sim);
        if neighbours(&all, &self.id).contains(&peer) {
            bail!("{name} and {} are already linked", tok.site);
        }
        // Is anything listening there? A stopped router fails here, at once.
        let (host, port) = (tok.host.clone(), tok.port);
        let target: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|_| anyhow!("the token's address {host}:{port} is not valid"))?;
        let dial = netns::run_in(&me.ns, move || {
            TcpStream::connect_timeout(&target, DIAL_TIMEOUT).map_err(anyhow::Error::from)
        });
        if let Err(e) = dial {
            bail!(
                "{name} cannot reach {}'s router at {host}:{port} ({e:#}): is it running? \
                 Check `ps aux | grep skrouterd` and {}; if it was stopped, call {}.skupper_delete(), \
                 {}.skupper_init() and issue a new token",
                tok.site,
                log_path(&self.sim, &tok.site).display(),
                tok.site,
                tok.site
            );
        }
        let link = LinkState {
            peer: peer.clone(),
            host,
            port,
            cost: opts.cost.max(1),
            files,
        };
        with_site_mut(&self.sim, &self.id, |s| {
            if let Some(s) = s {
                s.links.push(link);
            }
        });
        let log = self.skupper_log_path();
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let res = apply(&self.sim)
            .and_then(|_| wait_link(&log, offset, &tok.site))
            .and_then(|_| wait_converged(&self.sim, &self.id));
        if let Err(e) = res {
            with_site_mut(&self.sim, &self.id, |s| {
                if let Some(s) = s {
                    s.links.retain(|l| l.peer != peer);
                }
            });
            let _ = apply(&self.sim);
            return Err(e.context(format!("linking {name} to {}", tok.site)));
        }
        Ok(())
    }
}
