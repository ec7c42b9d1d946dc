//! The cost of one Mann-Whitney judgement (p-value, Hodges–Lehmann estimate and the
//! shift's confidence interval) by window size: bounded by the window (at most 200
//! points per arm), whatever the rollout's history.
//!
//! Run: `cargo bench --bench mann_whitney`.

use std::time::Instant;

use canaryd::judge::mann_whitney::{Alternative, compare};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("Mann-Whitney cost benchmark: run with `cargo bench --bench mann_whitney`");
        return;
    }
    println!("| points per arm | ms per judgement | judgements per second |");
    println!("|---|---|---|");
    for n in [5usize, 20, 49, 60, 120, 200] {
        // Latency-like values without ties: the exact p-value path below 50 points.
        let x: Vec<f64> = (0..n).map(|i| 0.2 + ((i * 7919) % 1000) as f64 / 1e4 + i as f64 * 1e-7).collect();
        let y: Vec<f64> =
            (0..n).map(|i| 0.2 + ((i * 104_729) % 1000) as f64 / 1e4 + i as f64 * 3e-7).collect();
        let runs = 200;
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(compare(&x, &y, 0.95, Alternative::Greater));
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(runs);
        println!("| {n} | {ms:.3} | {:.0} |", 1e3 / ms);
    }
    println!("Rerun: cargo bench --bench mann_whitney");
}
