//! What the simulator benchmarks share: finding the knetsim binary and taking medians.

use knetsim::sim::{Options, Sim};
use std::path::PathBuf;

/// The knetsim binary built beside this example (`target/<profile>/knetsim`); exits 3 with
/// the build command when it is missing.
pub fn knetsim_exe() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let bin = me
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("knetsim"));
    match bin {
        Some(b) if b.exists() => b,
        _ => {
            eprintln!("error: the knetsim binary is not built next to this example; run `cargo build --release --bins --examples` first");
            std::process::exit(3);
        }
    }
}

/// A simulator instance for a benchmark, without a progress bar.
pub fn sim(instance: &str) -> anyhow::Result<Sim> {
    Sim::new(Options {
        instance: instance.into(),
        knetsim_exe: knetsim_exe(),
        progress: false,
        ..Options::default()
    })
}

/// The middle value (the machines are noisy: medians, not means).
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}
