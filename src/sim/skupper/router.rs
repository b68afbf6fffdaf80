//! Router lifecycle: start, stop and restart the site routers so they run the rendered
//! configuration, and wait until their `/metrics` and logs show the links and services.

use super::*;

/// `GET path` on a router's HTTP listener, from inside its namespace.
pub(super) fn http_get(ns: &str, path: &str) -> Result<String> {
    let path = path.to_string();
    netns::run_in(ns, move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
        // Short: every readiness wait polls through here and must notice Ctrl-C soon.
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// A gauge's value from Prometheus text.
pub(super) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

pub(super) fn alive(sim: &Sim, router: Option<DaemonId>) -> bool {
    router.is_some_and(|id| sim.daemon_pid(id).is_some())
}

/// Stops a router on purpose (not restarted) and forgets it.
pub(super) fn stop_router(sim: &Sim, router: Option<DaemonId>) -> Result<()> {
    match router {
        Some(id) => sim.stop_daemon(id),
        None => Ok(()),
    }
}

/// Starts site `id`'s router with the configuration already written, and waits for
/// its `/healthz`.
pub(super) fn start_router(sim: &Sim, id: &str, s: &SiteState) -> Result<DaemonId> {
    let name = cluster_name(id);
    let conf = config_path(sim, &name);
    let log = log_path(sim, &name);
    let args = vec![
        "skrouterd".to_string(),
        "-c".into(),
        conf.display().to_string(),
    ];
    let spawned = sim.spawn_daemon(DaemonSpec::new(
        DaemonKind::Router,
        &s.worker,
        &s.ns,
        &sim.knetsim_exe(),
        args,
        log.clone(),
        format!("skrouterd {name} on {}", s.worker),
    ))?;
    let router = Some(spawned.id);
    let ready = Wait::new(
        format!(
            "the Skupper router of {name} (on {}) to answer /healthz",
            s.worker
        ),
        READY_TIMEOUT,
    )
    .hint(|| log_end(&log))
    .until(|| {
        // Another pid means it exited (and the supervisor started it again).
        if sim.daemon_pid(spawned.id) != Some(spawned.pid) {
            bail!(
                "the Skupper router of {name} (on {}) exited at start. Its log ({}) ends with:\n{}",
                s.worker,
                log.display(),
                log_tail(&log, 5)
            );
        }
        Ok(match http_get(&s.ns, "/healthz") {
            Ok(r) if r.contains("200 OK") => Poll::Ready(()),
            Ok(r) => Poll::Pending(format!(
                "/healthz answered {:?}",
                r.lines().next().unwrap_or("")
            )),
            Err(e) => Poll::Pending(format!("/healthz did not answer: {e:#}")),
        })
    });
    match ready {
        Ok(()) => Ok(spawned.id),
        Err(e) => {
            let _ = stop_router(sim, router);
            Err(e)
        }
    }
}

/// Sends a running router SIGHUP to reread its (already rewritten) configuration and waits
/// until its `/metrics` counts the reload.
pub(super) fn reload_router(sim: &Sim, id: &str, s: &SiteState) -> Result<()> {
    let name = cluster_name(id);
    let log = log_path(sim, &name);
    let reloads = |text: &str| metric(text, "skrouter_config_reloads_total").unwrap_or(0);
    let before = http_get(&s.ns, "/metrics").map(|t| reloads(&t))?;
    let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    // The router is the simulator's own child (its supervisor spawned it), so its pid
    // cannot name another process before the simulator reaps it.
    let pid = s
        .router
        .and_then(|r| sim.daemon_pid(r))
        .ok_or_else(|| anyhow!("the Skupper router of {name} is not running"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("SIGHUP to the Skupper router of {name} (pid {pid})"))?;
    Wait::new(
        format!("the Skupper router of {name} to apply its new configuration"),
        READY_TIMEOUT,
    )
    .hint(|| log_end(&log))
    .until(|| {
        let text = match http_get(&s.ns, "/metrics") {
            Ok(t) => t,
            Err(e) => return Ok(Poll::Pending(format!("/metrics did not answer: {e:#}"))),
        };
        if reloads(&text) <= before {
            return Ok(Poll::Pending("the reload is not counted yet".into()));
        }
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let new = logged.get(offset as usize..).unwrap_or("");
        if let Some(line) = new.lines().find(|l| l.contains("SIGHUP: reload of")) {
            bail!(
                "the Skupper router of {name} could not apply its new configuration: {}",
                line.trim()
            );
        }
        Ok(Poll::Ready(()))
    })
}

/// Renders every site's configuration. A running router whose configuration changed in
/// what a reload can apply is reloaded in place (SIGHUP); one that is not running, or whose
/// identity or listeners changed, is (re)started. Sites that dial fewer others start first,
/// so their peers find them listening. Returns the sites restarted (not those reloaded).
pub(super) fn apply(sim: &Sim) -> Result<Vec<String>> {
    let all = sites(sim);
    let mut changed: Vec<(usize, String, RouterConfig)> = Vec::new();
    for (id, s) in &all {
        if s.manual {
            continue;
        }
        let want = render(&all, id);
        if s.running.as_ref() != Some(&want) || !alive(sim, s.router) {
            changed.push((s.links.len(), id.clone(), want));
        }
    }
    changed.sort_by_key(|(n, id, _)| (*n, id.clone()));
    create_private_dir(&skupper_dir(sim))?;
    let mut restarted = Vec::new();
    for (_, id, cfg) in changed {
        let s = &all[&id];
        let path = config_path(sim, &cluster_name(&id));
        std::fs::write(&path, cfg.render())
            .with_context(|| format!("writing {}", path.display()))?;
        let reloadable = alive(sim, s.router)
            && s.running
                .as_ref()
                .is_some_and(|old| reload::needs_restart(old, &cfg).is_none());
        if reloadable {
            reload_router(sim, &id, s)?;
            with_site_mut(sim, &id, |site| {
                if let Some(site) = site {
                    site.running = Some(cfg);
                }
            });
            continue;
        }
        stop_router(sim, s.router)?;
        with_site_mut(sim, &id, |site| {
            if let Some(site) = site {
                site.router = None;
                site.running = None;
            }
        });
        let router = start_router(sim, &id, s)?;
        with_site_mut(sim, &id, |site| {
            if let Some(site) = site {
                site.router = Some(router);
                site.running = Some(cfg);
            }
        });
        restarted.push(id);
    }
    Ok(restarted)
}

/// Waits until every site linked (directly or not) to `id` reports on `/metrics` the
/// links and service addresses the model gives it.
pub(super) fn wait_converged(sim: &Sim, id: &str) -> Result<()> {
    let all = sites(sim);
    let comp = component(&all, id);
    let want_addrs = services_in(&all, &comp).len() as u64;
    let targets = comp
        .iter()
        .map(|sid| Target {
            id: sid.clone(),
            ns: all[sid].ns.clone(),
            links: link_count(&all, sid) as u64,
            addrs: want_addrs,
        })
        .collect();
    wait_metrics(sim, targets)
}

/// What one router's `/metrics` should say once the network has settled.
pub(super) struct Target {
    pub(super) id: String,
    pub(super) ns: String,
    pub(super) links: u64,
    pub(super) addrs: u64,
}

pub(super) fn wait_metrics(sim: &Sim, mut pending: Vec<Target>) -> Result<()> {
    let names: Vec<String> = pending.iter().map(|g| cluster_name(&g.id)).collect();
    // The site the timeout message points at: the first one still unsettled.
    let first_pending = std::cell::RefCell::new(names.first().cloned().unwrap_or_default());
    Wait::new(
        format!(
            "the Skupper network of {} to settle (links up and service addresses known on /metrics)",
            names.join(", ")
        ),
        CONVERGE_TIMEOUT,
    )
    .every(Duration::from_millis(50))
    .hint(|| {
        let name = first_pending.borrow();
        let log = log_path(sim, &name);
        format!(
            "{name}'s log ({}) ends with:\n{}",
            log.display(),
            log_tail(&log, 6)
        )
    })
    .until(|| {
        // A router in a crash loop will not settle: say so now, not at the timeout.
        for g in &pending {
            sim.require_agents(&g.id)?;
        }
        let mut last = String::new();
        pending.retain(|g| match http_get(&g.ns, "/metrics") {
            Ok(text) => {
                let links = metric(&text, "skrouter_links").unwrap_or(0);
                let addrs = metric(&text, "skrouter_addresses_reachable").unwrap_or(0);
                let settled = links == g.links && addrs == g.addrs;
                if !settled && last.is_empty() {
                    last = format!(
                        "{} has {links} of {} links up and {addrs} of {} service addresses",
                        cluster_name(&g.id),
                        g.links,
                        g.addrs
                    );
                }
                !settled
            }
            Err(e) => {
                if last.is_empty() {
                    last = format!("{}: /metrics did not answer: {e:#}", cluster_name(&g.id));
                }
                true
            }
        });
        match pending.first() {
            None => Ok(Poll::Ready(())),
            Some(g) => {
                *first_pending.borrow_mut() = cluster_name(&g.id);
                Ok(Poll::Pending(last))
            }
        }
    })
}

/// Waits for this router's log (after `offset`) to say the link to `peer` is up. A refused
/// certificate does not heal by retrying, so it ends the wait at once with the log's words;
/// a handshake cut short (the peer restarting in the same change) is retried by the router.
pub(super) fn wait_link(log: &Path, offset: u64, peer: &str) -> Result<()> {
    let up = format!("link to router {peer} up");
    let connector = format!("connector link-{peer}: ");
    Wait::new(format!("the link to {peer} to come up"), CONVERGE_TIMEOUT)
        .every(Duration::from_millis(50))
        .hint(|| format!("the log ({}) ends with:\n{}", log.display(), log_tail(log, 5)))
        .until(|| {
            let text = std::fs::read(log).unwrap_or_default();
            let new =
                String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned();
            if new.contains(&up) {
                return Ok(Poll::Ready(()));
            }
            if let Some(line) = new
                .lines()
                .find(|l| l.contains(&connector) && is_certificate_refusal(l))
            {
                bail!(
                    "the link to {peer} was refused: {}. The token does not match {peer}'s certificate authority: issue a new one with {peer}.skupper_token()",
                    line.split_once(&connector)
                        .map(|x| x.1)
                        .unwrap_or(line)
                        .split("; retrying")
                        .next()
                        .unwrap_or(line)
                );
            }
            let seen = new
                .lines()
                .rev()
                .find(|l| l.contains(&connector))
                .map(|l| l.split_once(&connector).map(|x| x.1).unwrap_or(l).to_string())
                .unwrap_or_else(|| "no word of the link in the router's log yet".into());
            Ok(Poll::Pending(seen))
        })
}

/// A TLS handshake that failed over a certificate (ours refused, or the peer's alert),
/// not over a reset or an early end of stream.
pub(super) fn is_certificate_refusal(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("tls handshake") && (l.contains("certificate") || l.contains("alert"))
}

/// Where a router's log is and how it ends, for messages about a router that is not ready.
fn log_end(log: &std::path::Path) -> String {
    format!(
        "its log ({}) ends with:\n{}",
        log.display(),
        log_tail(log, 5)
    )
}
