//! The topology as a self-contained SVG (no scripts, fonts or links to anything) and as an
//! HTML page holding that SVG and the console text. A hand-made layout: clusters are
//! columns, etcd members and workers are boxes in them, pods are boxes in their worker;
//! each cluster's nodes hang on an underlay bus that runs down to the switch; Skupper
//! links are dashed curves between the routers' workers.

use super::{ClusterView, Topology};
use std::collections::BTreeMap;
use std::fmt::Write;

const MARGIN: f64 = 20.0;
const COL_W: f64 = 470.0;
const COL_GAP: f64 = 170.0;
const LINE: f64 = 16.0;
const POD_H: f64 = 20.0;
const BUS_INSET: f64 = 14.0;

/// Longest line of small text in a column (11 px monospace is about 6.6 px a character).
const WRAP: usize = 64;

/// Joins `parts` with ", " into lines of at most `width` characters (a longer part gets a
/// line of its own); lines after the first are indented.
fn wrap(parts: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, p) in parts.iter().enumerate() {
        let sep = if i <= 1 { " " } else { ", " };
        if !cur.is_empty() && cur.chars().count() + sep.len() + p.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
            cur.push_str("    ");
        } else if !cur.is_empty() && !cur.ends_with("    ") {
            cur.push_str(sep);
        }
        cur.push_str(p);
    }
    if !cur.trim().is_empty() {
        lines.push(cur);
    }
    lines
}

/// Escapes text for XML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG being drawn, with the places of node boxes for the links drawn last.
#[derive(Default)]
struct Canvas {
    body: String,
    /// node name → (left x, right x, middle y) of its box.
    boxes: BTreeMap<String, (f64, f64, f64)>,
}

impl Canvas {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, class: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect class="{class}" x="{x:.0}" y="{y:.0}" width="{w:.0}" height="{h:.0}" rx="6"/>"#
        );
    }

    fn text(&mut self, x: f64, y: f64, class: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text class="{class}" x="{x:.0}" y="{y:.0}">{}</text>"#,
            esc(s)
        );
    }

    /// Lines of at most WRAP characters made of `parts` (never split), the lines after
    /// the first indented; returns the y below them.
    fn wrapped(&mut self, x: f64, mut y: f64, parts: &[String]) -> f64 {
        for line in wrap(parts, WRAP) {
            self.text(x, y + 12.0, "small svc", &line);
            y += LINE - 2.0;
        }
        y + 2.0
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = writeln!(
            self.body,
            r#"<line class="{class}" x1="{x1:.0}" y1="{y1:.0}" x2="{x2:.0}" y2="{y2:.0}"/>"#
        );
    }

    /// Draws one cluster column from `top`; returns the bus's x and the column's bottom.
    fn cluster(&mut self, c: &ClusterView, x: f64, top: f64) -> (f64, f64) {
        let mark = self.body.len();
        let bus = x + COL_W - BUS_INSET;
        let inner = x + 12.0;
        let node_w = COL_W - 24.0 - BUS_INSET - 8.0;
        let mut y = top + 24.0;
        let header_y = y;
        y += if c.network.is_empty() {
            12.0
        } else {
            12.0 + LINE
        };
        let mut taps = Vec::new();
        for e in &c.etcd {
            self.rect(inner, y, node_w, 26.0, "etcd");
            self.text(
                inner + 8.0,
                y + 17.0,
                "node",
                &format!("{}  {}  (etcd)", e.name, e.ip),
            );
            taps.push((inner + node_w, y + 13.0));
            y += 34.0;
        }
        for w in &c.workers {
            let pods_h = (w.pods.len().max(1) as f64) * (POD_H + 4.0);
            let h = 2.0 * LINE + 14.0 + pods_h;
            let class = if w.agents_down.is_empty() {
                "worker"
            } else {
                "worker down"
            };
            self.rect(inner, y, node_w, h, class);
            let mut title = format!("{}  {}", w.name, w.ip);
            if c.router_on.as_deref() == Some(w.name.as_str()) {
                title += "  · skupper router";
            }
            self.text(inner + 8.0, y + LINE, "node", &title);
            let mut sub = format!("pods {}", w.subnet);
            if let Some((dev, mac)) = &w.vtep {
                sub += &format!("  VTEP {dev} {mac}");
            }
            if !w.agents_down.is_empty() {
                sub += &format!("  DOWN: {}", w.agents_down.join(", "));
            }
            self.text(inner + 8.0, y + 2.0 * LINE, "small", &sub);
            let mut py = y + 2.0 * LINE + 8.0;
            if w.pods.is_empty() {
                self.text(inner + 20.0, py + 14.0, "small", "(no pods)");
            }
            for p in &w.pods {
                self.rect(inner + 14.0, py, node_w - 28.0, POD_H, "pod");
                self.text(
                    inner + 22.0,
                    py + 14.0,
                    "podname",
                    &format!("{}  {}", p.name, p.ip),
                );
                py += POD_H + 4.0;
            }
            self.boxes
                .insert(w.name.clone(), (inner, inner + node_w, y + h / 2.0));
            taps.push((inner + node_w, y + LINE));
            y += h + 8.0;
        }
        for v in &c.services {
            let mut parts = vec![format!(
                "svc {} {} [{}] →",
                v.name,
                v.ip,
                v.ports.join(", ")
            )];
            if v.endpoints.is_empty() {
                parts.push("no endpoints".into());
            }
            parts.extend(v.endpoints.iter().cloned());
            y = self.wrapped(inner, y, &parts);
        }
        for i in &c.ingresses {
            let mut parts = vec![format!("ingress {} on {}:", i.name, i.at)];
            parts.extend(i.rules.iter().cloned());
            y = self.wrapped(inner, y, &parts);
        }
        for e in &c.skupper_exposed {
            y = self.wrapped(inner, y, &[format!("skupper exposes {e}")]);
        }
        let bottom = y + 10.0;
        // The frame goes under what is inside it: insert it first.
        let frame = format!(
            "<rect class=\"cluster\" x=\"{x:.0}\" y=\"{top:.0}\" width=\"{COL_W:.0}\" height=\"{:.0}\" rx=\"10\"/>\n",
            bottom - top
        );
        self.body.insert_str(mark, &frame);
        self.text(x + 10.0, header_y - 4.0, "title", &c.name);
        if !c.network.is_empty() {
            self.text(
                x + 10.0,
                header_y + 12.0,
                "small",
                &format!("pod network {}", c.network),
            );
        }
        for (tx, ty) in taps {
            self.line(tx, ty, bus, ty, "wire");
        }
        (bus, bottom)
    }
}

/// The picture as an SVG document.
pub fn svg(t: &Topology) -> String {
    let mut cv = Canvas::default();
    let top = MARGIN + 30.0;
    let mut buses = Vec::new();
    let mut bottom: f64 = top;
    for (i, c) in t.clusters.iter().enumerate() {
        let x = MARGIN + i as f64 * (COL_W + COL_GAP);
        let (bus, b) = cv.cluster(c, x, top);
        buses.push((bus, b));
        bottom = bottom.max(b);
    }
    let width = MARGIN * 2.0 + (t.clusters.len().max(1) as f64) * (COL_W + COL_GAP) - COL_GAP;
    let switch_y = bottom + 30.0;
    cv.rect(MARGIN, switch_y, width - 2.0 * MARGIN, 28.0, "switch");
    cv.text(
        MARGIN + 10.0,
        switch_y + 19.0,
        "node",
        &format!("underlay {}  ·  one L2 switch", t.underlay),
    );
    for (bus, _) in &buses {
        cv.line(*bus, top + 30.0, *bus, switch_y, "wire");
    }
    for l in &t.skupper_links {
        let (Some(a), Some(b)) = (cv.boxes.get(&l.from.name), cv.boxes.get(&l.to.name)) else {
            continue;
        };
        // From the side of one box that faces the other.
        let (x1, x2) = if a.0 > b.0 { (a.0, b.1) } else { (a.1, b.0) };
        let (y1, y2) = (a.2, b.2);
        let mid = (x1 + x2) / 2.0;
        let _ = writeln!(
            cv.body,
            r#"<path class="link" d="M{x1:.0},{y1:.0} C{mid:.0},{y1:.0} {mid:.0},{y2:.0} {x2:.0},{y2:.0}"/>"#
        );
        // Two short lines fit the gap between the columns (COL_GAP is wide enough for them).
        let y = (y1 + y2) / 2.0;
        let lines = [
            (-20.0, "skupper link".to_string()),
            (-6.0, format!("AMQP → {}", l.to.ip)),
        ];
        for (dy, label) in lines {
            let half = label.chars().count() as f64 * 3.3;
            cv.text(mid - half, y + dy, "small link-label", &label);
        }
    }
    let height = switch_y + 28.0 + MARGIN;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace">"#
    );
    s.push_str("<title>knetsim topology</title>\n");
    s.push_str(STYLE);
    let _ = writeln!(
        s,
        r#"<rect class="bg" x="0" y="0" width="{width:.0}" height="{height:.0}"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text class="title" x="{MARGIN:.0}" y="{:.0}">knetsim: the running simulation</text>"#,
        MARGIN + 10.0
    );
    s.push_str(&cv.body);
    s.push_str("</svg>\n");
    s
}

const STYLE: &str = r#"<style>
.bg { fill: #ffffff; }
.cluster { fill: #f4f7fb; stroke: #5b7aa6; stroke-width: 1.5; }
.etcd { fill: #fff7e0; stroke: #b08a2e; }
.worker { fill: #ffffff; stroke: #3c6e47; stroke-width: 1.2; }
.down { stroke: #c0392b; stroke-dasharray: 5 3; }
.pod { fill: #e8f4ea; stroke: #7aa884; }
.switch { fill: #eeeeee; stroke: #555555; }
.wire { stroke: #777777; stroke-width: 1.2; }
.link { fill: none; stroke: #8e44ad; stroke-width: 2; stroke-dasharray: 7 4; }
text { font-size: 12px; fill: #222222; }
.title { font-size: 15px; font-weight: bold; }
.node { font-size: 12px; font-weight: bold; }
.small { font-size: 11px; fill: #444444; }
.podname { font-size: 11px; }
.svc { fill: #1f4e79; }
.link-label { fill: #8e44ad; paint-order: stroke; stroke: #ffffff; stroke-width: 3px; }
</style>
"#;

/// The picture as an HTML page: the SVG inline, then the console text.
pub fn html(t: &Topology) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>knetsim topology</title></head>\n<body>\n{}<pre>{}</pre>\n</body>\n</html>\n",
        svg(t),
        esc(&t.text())
    )
}

/// A minimal XML well-formedness check, enough for what this module writes: one root,
/// tags nest and close, attribute values quoted, only the five predefined entities and
/// numeric ones. Tests run it over every picture (no XML parser is among the
/// dependencies, and a picture that does not parse shows nothing in a browser).
pub fn well_formed(xml: &str) -> Result<(), String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = xml;
    let mut text_ok = |t: &str| -> Result<(), String> {
        let mut s = t;
        while let Some(i) = s.find('&') {
            let end = s[i..]
                .find(';')
                .ok_or_else(|| format!("unterminated entity in {t:?}"))?;
            let name = &s[i + 1..i + end];
            let numeric = name.strip_prefix('#').is_some_and(|n| {
                n.parse::<u32>().is_ok()
                    || n.strip_prefix('x')
                        .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            });
            if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&name) {
                return Err(format!("unknown entity &{name};"));
            }
            s = &s[i + end..];
        }
        Ok(())
    };
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        if !stack.is_empty() {
            text_ok(text)?;
        } else if !text.trim().is_empty() {
            return Err(format!("text outside the root element: {text:?}"));
        }
        rest = &rest[open..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("unterminated comment")?;
            rest = &r[end + 3..];
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!DOCTYPE") {
            let end = rest.find('>').ok_or("unterminated declaration")?;
            rest = &rest[end + 1..];
            continue;
        }
        let close = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body.split_whitespace().next().unwrap_or("");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || ":-_.".contains(c))
        {
            return Err(format!("bad tag <{tag}>"));
        }
        check_attributes(&body[name.len()..], &mut text_ok)?;
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    if !rest.trim().is_empty() {
        return Err(format!("text after the root element: {rest:?}"));
    }
    match (stack.last(), roots) {
        (Some(open), _) => Err(format!("<{open}> is never closed")),
        (None, 1) => Ok(()),
        (None, n) => Err(format!("{n} root elements (want one)")),
    }
}

/// `name="value"` pairs, each value quoted and its entities known.
fn check_attributes(
    mut s: &str,
    text_ok: &mut impl FnMut(&str) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(());
        }
        let eq = s
            .find('=')
            .ok_or_else(|| format!("attribute without a value: {s:?}"))?;
        let name = s[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {name:?}"));
        }
        let v = s[eq + 1..].trim_start();
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'');
        let q = q.ok_or_else(|| format!("attribute {name} is not quoted"))?;
        let end = v[1..]
            .find(q)
            .ok_or_else(|| format!("attribute {name} is not closed"))?;
        let value = &v[1..1 + end];
        if value.contains('<') {
            return Err(format!("'<' in attribute {name}"));
        }
        text_ok(value)?;
        s = &v[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::topology::tests::sample;

    #[test]
    fn the_svg_is_well_formed_self_contained_and_shows_every_address() {
        let t = sample();
        let s = svg(&t);
        well_formed(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
        for ip in t.addresses() {
            assert!(
                s.contains(&format!("{ip}<")) || s.contains(&format!("{ip} ")),
                "{ip} missing"
            );
        }
        // A pod name with markup in it is escaped, not interpreted.
        assert!(s.contains("c&lt;2&gt;") && !s.contains("c<2>"), "{s}");
        // Nothing outside the file: no script, no external reference but the namespace.
        assert!(!s.contains("<script") && !s.contains("href"), "{s}");
        assert_eq!(s.matches("http").count(), 1, "only the SVG namespace: {s}");
        assert!(s.contains("AMQP → 10.0.0.3:55671"), "{s}");
        assert!(s.contains("VTEP flannel.100 aa:bb:cc:dd:ee:01"), "{s}");
        let h = html(&t);
        assert!(h.starts_with("<!DOCTYPE html>") && h.contains(&s), "{h}");
        assert!(h.contains("service web 100.64.0.1"), "{h}");
    }

    #[test]
    fn long_lists_wrap_between_parts() {
        let parts: Vec<String> = [
            "svc web 100.64.0.1 [tcp 80→8000] →",
            "c2 11.10.0.2",
            "c3 11.10.0.3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            wrap(&parts, 80),
            vec!["svc web 100.64.0.1 [tcp 80→8000] → c2 11.10.0.2, c3 11.10.0.3"]
        );
        assert_eq!(
            wrap(&parts, 50),
            vec![
                "svc web 100.64.0.1 [tcp 80→8000] → c2 11.10.0.2",
                "    c3 11.10.0.3"
            ]
        );
    }

    #[test]
    fn an_empty_simulation_still_draws() {
        let s = svg(&Topology::default());
        well_formed(&s).unwrap();
        assert!(s.contains("underlay"));
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        for bad in [
            "<a><b></a></b>",
            "<a>",
            "<a x=1/>",
            "<a>&nbsp;</a>",
            "<a/><b/>",
            "<a x=\"<\"/>",
            "text<a/>",
        ] {
            assert!(well_formed(bad).is_err(), "{bad} passed");
        }
        well_formed("<?xml version=\"1.0\"?><a x='1'><!-- c --><b/>&amp;&#x41;</a>").unwrap();
    }
}
