//! Benchmark: the default scenario (scenarios/default.rhai, the original's main.py in full:
//! two clusters, both VIPs, svc1 through the Skupper routers, the ingress grp1 and its four
//! echo servers) from its first line until its last step answers, beside the etcd election
//! of the same run; also start() with the default topology's 7 pods (the scenario's lines
//! up to "The default topology is up"), the part the scale issue's target compares with
//! the election. After each run it checks, untimed, that svc1 and the ingress answer.
//! Before each run the same clusters' etcd members are started alone (what start() does up
//! to the elections, no worker wired: `Sim::elect_alone`), for the baseline the scale
//! issue names: the etcd election alone.
//!
//!   sudo cargo build --release --bins --examples
//!   sudo target/release/examples/bench_bringup [RUNS]      (default 15)
//!
//! Prints medians (the machines are noisy) and the ratio of the two. Each run's own ratio
//! is printed as a distribution too (median, quartiles, share of runs within the target):
//! the two clusters elect at moments of their own, and when they elect together all 7
//! pods and both clusters' leases fall after the later election (50 to 75 ms), when apart
//! only one cluster's (30 to 40 ms), so a handful of runs can land either way. A last
//! table splits the runs by which cluster elected last (C0 has 4 pods, C1 3) and by
//! whether both elected within 20 ms, so a change can be judged case by case. The two
//! ratios the target is read from come with a bootstrap interval (95% of 2,000 resamples
//! of the runs): each election waits out raft's random timeout, so their medians move
//! from one sitting to the next (three alternate sittings of 45 runs once gave the
//! election alone medians of 189, 174 and 170 ms).

use knetsim::script::{Outcome, ScriptSession, DEFAULT_SCENARIO, DEFAULT_SCENARIO_NAME};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::median;

/// The line of scenarios/default.rhai that ends the default topology (clusters and pods).
const TOPOLOGY_END: &str = "// The default topology is up";

/// The pause before each run (see the loop in `main`).
const SETTLE: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(1);
    let at = DEFAULT_SCENARIO.find(TOPOLOGY_END).ok_or_else(|| {
        anyhow::anyhow!(
            "{DEFAULT_SCENARIO_NAME} has no line {TOPOLOGY_END:?}: put it back after the pods"
        )
    })?;
    let (topology, rest) = DEFAULT_SCENARIO.split_at(at);
    // The rest keeps its line numbers in error messages.
    let rest = "\n".repeat(topology.matches('\n').count()) + rest;
    let (mut totals, mut etcds, mut starts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tops, mut ratios, mut afters) = (Vec::new(), Vec::new(), Vec::new());
    let mut alones = Vec::new();
    let declarations = topology.replacen("start();", "", 1);
    anyhow::ensure!(
        declarations != topology,
        "{DEFAULT_SCENARIO_NAME} has no start(); before {TOPOLOGY_END:?}"
    );
    let mut cases: Vec<(String, Duration, f64)> = Vec::new();
    for i in 0..runs {
        std::thread::sleep(SETTLE);
        let alone = elect_alone(&format!("alone{i}"), &declarations)?;
        alones.push(alone);
        // The kernel frees the namespaces of the run before in a work queue; until it has,
        // making new ones stalls (about 0.2 s after this scenario), which would pad both
        // the election and start() alike. Each run starts on a quiet kernel, as a
        // learner's first run does.
        std::thread::sleep(SETTLE);
        let sim = common::new_sim(&format!("bench{i}"))?;
        let mut session = ScriptSession::new(sim.clone(), false);
        let t0 = Instant::now();
        let mut outcome = session.run_source(DEFAULT_SCENARIO_NAME, topology);
        let top = t0.elapsed();
        if matches!(outcome, Outcome::Ok) {
            outcome = session.run_source(DEFAULT_SCENARIO_NAME, &rest);
        }
        let total = t0.elapsed();
        if !matches!(outcome, Outcome::Ok) {
            drop(session);
            sim.teardown()?;
            anyhow::bail!("the default scenario failed in run {}", i + 1);
        }
        let b = sim.last_bringup().unwrap_or_default();
        let c1 = sim.get_cluster("1")?.worker("w1")?;
        let page = c1.exec_container("c1", "wget -qO- -T 5 10.0.0.8:1028")?;
        let e1 = sim.node("C0e1").expect("C0e1");
        let ing = e1.exec("curl -s -m 5 10.0.0.3:8001/svc1")?;
        let each: Vec<String> = b
            .elections
            .iter()
            .map(|(id, t)| format!("C{id} {:.3} s", t.as_secs_f64()))
            .collect();
        println!(
            "run {}: etcd alone {:.3} s; scenario up after {:.3} s (start() {:.3} s, start() and pods {:.3} s, etcd healthy after {:.3} s: {}); svc1: {:?}, ingress: {:?}",
            i + 1,
            alone.as_secs_f64(),
            total.as_secs_f64(),
            b.total.as_secs_f64(),
            top.as_secs_f64(),
            b.etcd_healthy.as_secs_f64(),
            each.join(", "),
            page.trim(),
            ing.trim()
        );
        anyhow::ensure!(page.contains("hello from c4"), "svc1 did not answer");
        anyhow::ensure!(ing.contains("S1-"), "the ingress did not answer");
        totals.push(total);
        etcds.push(b.etcd_healthy);
        starts.push(b.total);
        tops.push(top);
        let after = top.saturating_sub(b.etcd_healthy);
        let ratio = top.as_secs_f64() / b.etcd_healthy.as_secs_f64();
        afters.push(after);
        ratios.push(ratio);
        cases.push((case(&b.elections), after, ratio));
        drop(session);
        sim.teardown()?;
    }
    let (t, e, s) = (median(totals), median(etcds), median(starts));
    let (top, alone) = (median(tops.clone()), median(alones.clone()));
    ratios.sort_by(f64::total_cmp);
    println!();
    println!("| measure (median of {runs}) | seconds |");
    println!("| --- | --- |");
    println!(
        "| default scenario, first line to last readiness wait | {:.3} |",
        t.as_secs_f64()
    );
    println!(
        "| of which start() (both clusters) | {:.3} |",
        s.as_secs_f64()
    );
    println!(
        "| start() and the default topology's 7 pods | {:.3} |",
        top.as_secs_f64()
    );
    println!(
        "| start() and pods, after the election (what the agents and pods add) | {:.3} |",
        median(afters).as_secs_f64()
    );
    println!(
        "| etcd election (both clusters healthy), same runs | {:.3} |",
        e.as_secs_f64()
    );
    println!("| everything after etcd | {:.3} |", (t - e).as_secs_f64());
    println!(
        "| ratio scenario / etcd election | {:.2} |",
        t.as_secs_f64() / e.as_secs_f64()
    );
    println!(
        "| ratio start() / etcd election | {:.2} |",
        s.as_secs_f64() / e.as_secs_f64()
    );
    println!(
        "| ratio (start() + pods) / etcd election, of the medians above | {:.2} |",
        top.as_secs_f64() / e.as_secs_f64()
    );
    let within = ratios.iter().filter(|r| **r <= TARGET).count();
    let (low, high) = interval(|| median(resample(&ratios)));
    println!(
        "| ratio (start() + pods) / etcd election, each run's own (target <= {TARGET}): median (quartiles) | {:.3} ({:.3} to {:.3}; the median within {low:.3} to {high:.3}); {within} of {runs} runs within the target |",
        ratios[ratios.len() / 2],
        ratios[ratios.len() / 4],
        ratios[(3 * ratios.len()) / 4]
    );
    println!(
        "| etcd election alone (the same members, nothing else started), alternate runs | {:.3} |",
        alone.as_secs_f64()
    );
    let (low, high) = interval(|| {
        median(resample(&tops)).as_secs_f64() / median(resample(&alones)).as_secs_f64()
    });
    println!(
        "| ratio (start() + pods) / etcd election alone, of the medians (target <= {TARGET}) | {:.2} (within {low:.2} to {high:.2}) |",
        top.as_secs_f64() / alone.as_secs_f64()
    );
    println!();
    println!(
        "\"within\": {INTERVAL_LEVEL}% of {RESAMPLES} bootstrap resamples of these runs give a figure in that range. \
         Each election waits out raft's random timeout, so a median of {runs} runs moves by \
         about this much between sittings of the same code."
    );
    print_cases(cases);
    Ok(())
}

/// The scenario's clusters (`declarations`: its topology without start()) with only their
/// etcd members started, until every cluster has elected; then torn down.
fn elect_alone(instance: &str, declarations: &str) -> anyhow::Result<Duration> {
    let sim = common::new_sim(instance)?;
    let mut session = ScriptSession::new(sim.clone(), false);
    let declared = session.run_source(DEFAULT_SCENARIO_NAME, declarations);
    drop(session);
    let elections = match declared {
        Outcome::Ok => sim.elect_alone(),
        _ => Err(anyhow::anyhow!(
            "declaring the clusters of {DEFAULT_SCENARIO_NAME} failed"
        )),
    };
    let torn = sim.teardown();
    let last = elections?.into_iter().map(|(_, t)| t).max();
    torn?;
    last.ok_or_else(|| anyhow::anyhow!("{DEFAULT_SCENARIO_NAME} declares no cluster"))
}

/// Two clusters elected within this of each other count as electing together: the
/// earlier one's agents and pods are then still at work after the later election.
const TOGETHER: Duration = Duration::from_millis(20);

/// Which election a run's window followed: "C0 elected last" (its agents and pods alone
/// after it) or "both within 20 ms" (both clusters' work after it).
fn case(elections: &[(String, Duration)]) -> String {
    let mut sorted: Vec<&(String, Duration)> = elections.iter().collect();
    sorted.sort_by_key(|(_, t)| *t);
    match sorted.as_slice() {
        [.., (_, before), (id, last)] if *last - *before >= TOGETHER => {
            format!("C{id} elected last")
        }
        [.., _, _] => format!("both within {} ms", TOGETHER.as_millis()),
        _ => "one cluster".to_string(),
    }
}

/// The runs split by [`case`]: the window after the election and the ratio, each case's
/// median, so a change can be judged apart from which cluster raft made elect last.
fn print_cases(mut cases: Vec<(String, Duration, f64)>) {
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    println!();
    println!("| runs by election | runs | after the election (median) | ratio (median) | within {TARGET} |");
    println!("| --- | --- | --- | --- | --- |");
    for group in cases.chunk_by(|a, b| a.0 == b.0) {
        let mut ratios: Vec<f64> = group.iter().map(|c| c.2).collect();
        ratios.sort_by(f64::total_cmp);
        let after = median(group.iter().map(|c| c.1).collect());
        println!(
            "| {} | {} | {:.0} ms | {:.3} | {} |",
            group[0].0,
            group.len(),
            after.as_secs_f64() * 1000.0,
            ratios[ratios.len() / 2],
            ratios.iter().filter(|r| **r <= TARGET).count()
        );
    }
}

/// Bootstrap resamples behind each interval printed, and the share of them it holds.
const RESAMPLES: usize = 2000;
const INTERVAL_LEVEL: usize = 95;

/// `v` drawn again with replacement, as many values as it has.
fn resample<T: Copy>(v: &[T]) -> Vec<T> {
    (0..v.len())
        .map(|_| v[rand::random_range(0..v.len())])
        .collect()
}

/// The range that holds the central [`INTERVAL_LEVEL`]% of `stat` over [`RESAMPLES`]
/// draws (each draw resamples the runs): how far the figure could move with other runs
/// of the same code.
fn interval(mut stat: impl FnMut() -> f64) -> (f64, f64) {
    let mut all: Vec<f64> = (0..RESAMPLES).map(|_| stat()).collect();
    all.sort_by(f64::total_cmp);
    let tail = RESAMPLES * (100 - INTERVAL_LEVEL) / 200;
    (all[tail], all[RESAMPLES - 1 - tail])
}

/// The scale issue's target for start() and the default topology's pods, as a multiple of
/// the etcd election (of the same run, and alone).
const TARGET: f64 = 1.15;
