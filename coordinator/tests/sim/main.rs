//! Deterministic simulation of sweeps across agents: the real `SweepCore` and one real
//! `AgentLink` per agent (the coordinator), the real `AgentCore` and SQLite ledger per agent, over
//! an in-memory network under a virtual clock, with faults drawn from a seeded RNG — message
//! delays, dropped connections, partitions, agent and coordinator crashes (each keeps only what
//! it had committed), full disks, failing tasks, cancels, withdrawals and steals — and the invariants of
//! ARCHITECTURE.md checked after every step and at the end (`check.rs`).
//!
//! `cargo test -p hsm-coordinator --test sim` runs seeds 0..2000 (`HSM_SIM_SEEDS=N` for more,
//! `HSM_SIM_FIRST=K` to start elsewhere). A failing seed prints itself and the end of its trace,
//! and replays bit-for-bit: `HSM_SIM_SEED=1234 cargo test -p hsm-coordinator --test sim`.
//! `HSM_SIM_KEEP_GOING=1` runs every seed and lists the failing ones (a soak's count).

mod agent;
mod check;
mod coord;
mod rng;
mod world;

use world::World;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed; the failure names it and shows how to replay it.
fn run_seed(seed: u64) -> Result<world::Outcome, String> {
    let mut world = World::new(seed);
    let cfg = world.cfg.clone();
    world.run().map_err(|violation| {
        let trace: Vec<String> = world.trace.iter().cloned().collect();
        format!(
            "seed {seed} broke an invariant: {violation}\n\
             replay: HSM_SIM_SEED={seed} cargo test -p hsm-coordinator --test sim\n\
             config: {cfg:?}\n\
             last {} steps:\n{}",
            trace.len(),
            trace.join("\n")
        )
    })
}

#[test]
fn every_task_ends_exactly_once_whatever_crashes() {
    // Quiet: a run logs what a real one would (warnings about lost connections and the like).
    if let Some(seed) = env_u64("HSM_SIM_SEED") {
        let outcome = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "seed {seed}: passed ({} steps, {} s of virtual time, digest {:016x})",
            outcome.steps,
            outcome.virtual_ms / 1000,
            outcome.digest
        );
        return;
    }
    let first = env_u64("HSM_SIM_FIRST").unwrap_or(0);
    let n = env_u64("HSM_SIM_SEEDS").unwrap_or(2000);
    let started = std::time::Instant::now();
    let mut steps = 0;
    let mut virtual_ms = 0;
    let mut stats = check::Stats::default();
    let keep_going = std::env::var_os("HSM_SIM_KEEP_GOING").is_some();
    let mut failed = Vec::new();
    for seed in first..first + n {
        match run_seed(seed) {
            Ok(outcome) => {
                steps += outcome.steps;
                virtual_ms += outcome.virtual_ms;
                stats.add(&outcome.stats);
            }
            Err(e) if keep_going => {
                println!("{}", e.lines().next().unwrap_or_default());
                failed.push(seed);
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!(
        "sim: {} of {n} seeds from {first} passed: {steps} steps, {} min of virtual time, in \
         {:.1} s",
        n - failed.len() as u64,
        virtual_ms / 60_000,
        started.elapsed().as_secs_f64()
    );
    println!("sim: exercised {stats:?}");
    assert!(
        failed.is_empty(),
        "{} seeds failed: {failed:?}",
        failed.len()
    );
}

#[test]
fn a_seed_replays_bit_for_bit() {
    for seed in (0..20).chain([1_000_003]) {
        let a = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
        let b = run_seed(seed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.digest, a.steps, a.virtual_ms),
            (b.digest, b.steps, b.virtual_ms),
            "seed {seed} did not replay the same"
        );
    }
}
