//! `gantry-sim`: runs fault schedules of the deterministic simulation.
//!
//! * `gantry-sim --seed N` replays schedule N and prints its plan and trace;
//! * `gantry-sim --schedules K [--from N]` runs K schedules from seed N, printing each
//!   failing seed, and exits non-zero if any failed;
//! * `gantry-sim --soak` runs schedules from `--from` until stopped.

use std::time::Instant;

use anyhow::bail;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic fault schedules of the Gantry pipeline")]
struct Args {
    /// Replay this one schedule and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// How many schedules to run.
    #[arg(long, default_value_t = 1000)]
    schedules: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Run until stopped.
    #[arg(long)]
    soak: bool,
    /// Stop at the first failing schedule (how many it took is the mutation runs' figure).
    #[arg(long)]
    stop_at_first: bool,
    /// With `--seed`: print this card's ledger in the faulty and the crash-free run.
    #[arg(long)]
    card: Option<String>,
    /// Log the pipeline's own lines (RUST_LOG syntax, e.g. `info`).
    #[arg(long)]
    log: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(filter) = &args.log {
        tracing_subscriber::fmt().with_env_filter(filter.as_str()).without_time().init();
    }
    if let (Some(seed), Some(card)) = (args.seed, &args.card) {
        let [faulty, reference] = gantry_sim::ledger_of(seed, card);
        println!(
            "faulty run:\n  {}\ncrash-free run:\n  {}",
            faulty.join("\n  "),
            reference.join("\n  ")
        );
        return Ok(());
    }
    if let Some(seed) = args.seed {
        let v = gantry_sim::check_seed(seed);
        println!("plan: {:#?}", v.plan);
        for line in &v.trace {
            println!("{line}");
        }
        println!("virtual time: {} ms", v.virtual_ms);
        println!("{}", v.summary);
        if v.broken.is_empty() {
            println!("seed {seed}: every invariant holds");
            return Ok(());
        }
        for b in &v.broken {
            println!("BROKEN: {b}");
        }
        bail!("seed {seed} failed");
    }
    let started = Instant::now();
    let (mut ran, mut failed) = (0u64, 0u64);
    let mut seed = args.from;
    while args.soak || ran < args.schedules {
        let v = gantry_sim::check_seed(seed);
        ran += 1;
        if !v.broken.is_empty() {
            failed += 1;
            println!("seed {seed} FAILED: {}", v.broken.join("; "));
            if args.stop_at_first {
                println!("first failure after {ran} schedules");
                break;
            }
        }
        if args.soak && ran.is_multiple_of(1000) {
            println!("{ran} schedules, {failed} failed, {:.0} s", started.elapsed().as_secs_f64());
        }
        seed += 1;
    }
    println!(
        "gantry-sim: {ran} schedules from seed {}, {failed} failed, {:.1} s",
        args.from,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} schedules failed");
    }
    Ok(())
}
