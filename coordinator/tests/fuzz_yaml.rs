//! Corpus fuzzing of the YAML decoders: the positioned tree (`yaml::parse`), the sweep file on
//! top of it (validation, counting, the first tasks) and the project config loader. Every input
//! must come back as a value or a positioned error: never a panic, and within bounded memory
//! (this process runs under an address-space cap, so an expansion that escapes the YAML and
//! sweep budgets aborts the test).
//!
//! Seeds are `coordinator/fuzz/corpus/yaml/`; mutations come from a xorshift PRNG seeded by
//! `HSM_FUZZ_SEED` and run for `HSM_FUZZ_SECS` seconds (default 15) or `HSM_FUZZ_RUNS` inputs,
//! whichever ends first. A panicking input is printed and written to
//! `target/fuzz-crash-yaml-<n>`; the input being decoded is kept in `target/fuzz-last-yaml`, so
//! an abort (out of memory, stack overflow) leaves it behind too.

use hsm_coordinator::config::{parse_config_lenient, to_display_yaml};
use hsm_coordinator::core::sweep::load_sweep_text;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const DEFAULT_SECS: u64 = 15;

/// The address space this process may use. The decoders' own bounds keep any input to about
/// 1.2 GB (a sweep at its limit of ten million values); unbounded, the corpus's alias bomb asks
/// for tens of GB.
const MEMORY_CAP: libc::rlim_t = 4 << 30;

/// YAML and sweep words a byte-level mutation would rarely spell.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!null ",
    "!custom ",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "\n",
    "\n  ",
    "\n    ",
    "\t",
    "#",
    "---\n",
    "...\n",
    "|\n  ",
    ">-\n  ",
    "'",
    "\"",
    "\\",
    "~",
    ".nan",
    ".inf",
    "-.inf",
    "1e309",
    "0x",
    "0o",
    "-0.0",
    "99999999999999999999",
    "-9223372036854775808",
    "<<: ",
    "%YAML 1.2\n",
    "grid:",
    "paired:",
    "random:",
    "exclude:",
    "sweep:",
    "range: [0, 1000000]",
    "linspace: ",
    "logspace: ",
    "uniform: ",
    "loguniform: ",
    "choice: ",
    "randint: ",
    "n: ",
    "seed: ",
    "params: ",
    "script: ",
    "metadata: ",
    "sources:",
    "type: agent",
    "command:",
    "defaults:",
    "hpc:",
    "slots: ",
    "\u{feff}",
    "é",
    "\u{1F600}",
];

/// Seed file contents, named.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/yaml");
    let mut entries: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, bytes)
        })
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 20,
        "corpus at {} is missing",
        dir.display()
    );
    entries
}

/// Every decoder on one input. Files are read as UTF-8 by the binary; invalid bytes become
/// U+FFFD here so mutated bytes still reach the YAML scanner.
fn decode(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let _ = hsm_coordinator::yaml::parse(&text);
    if let Ok(sweep) = load_sweep_text(&text) {
        let _ = sweep.spec.count().to_string();
        let _ = sweep.spec.parameter_names();
        for params in sweep.spec.iter().take(3) {
            let _ = params.len();
        }
    }
    if let Ok((config, _problems)) = parse_config_lenient(&text, Path::new("/fuzz/project")) {
        let _ = to_display_yaml(&config);
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to four mutations of a corpus entry (or a splice of two).
fn mutate(rng: &mut XorShift, corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(8) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let byte =
                    [0x00, 0xff, b' ', b'\n', b':', b'-', b'&', b'*', b'[', b'{'][rng.below(10)];
                data.insert(at, byte);
            }
            2 if !data.is_empty() => {
                let len = 1 + rng.below(data.len().min(16));
                let start = rng.below(data.len() - len + 1);
                data.drain(start..start + len);
            }
            3 => {
                let other = &corpus[rng.below(corpus.len())].1;
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            4 if !data.is_empty() => {
                let len = 1 + rng.below(data.len().min(64));
                let start = rng.below(data.len() - len + 1);
                let chunk = data[start..start + len].to_vec();
                for _ in 0..1 + rng.below(8) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            5 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            6 if !data.is_empty() => {
                // A number somewhere becomes an extreme one.
                let digits = [
                    "0",
                    "-1",
                    "1000000",
                    "4294967296",
                    "9223372036854775807",
                    "1e308",
                ];
                let i = rng.below(data.len());
                let end = (i + 1 + rng.below(4)).min(data.len());
                data.splice(i..end, digits[rng.below(digits.len())].bytes());
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let end = (at + token.len()).min(data.len());
                data.splice(at..end, token.iter().copied());
            }
        }
    }
    data
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn cap_memory() {
    let limit = libc::rlimit {
        rlim_cur: MEMORY_CAP,
        rlim_max: MEMORY_CAP,
    };
    // SAFETY: setrlimit only reads `limit`.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn yaml_decoders_never_panic_on_corpus_or_mutated_inputs() {
    cap_memory();
    let seed = env_u64("HSM_FUZZ_SEED").unwrap_or(DEFAULT_SEED).max(1);
    let secs = env_u64("HSM_FUZZ_SECS").unwrap_or(DEFAULT_SECS);
    let runs = env_u64("HSM_FUZZ_RUNS");
    let limit = runs.map_or(String::new(), |n| {
        format!(" or {n} mutations, whichever ends first")
    });
    println!("fuzz_yaml: HSM_FUZZ_SEED={seed:#x}, for {secs} s{limit}");
    let runs = runs.unwrap_or(u64::MAX);
    let corpus = corpus();
    let target = target_dir();
    let _ = std::fs::create_dir_all(&target);
    let last = target.join("fuzz-last-yaml");
    // Panics are caught and reported below with their input; the default hook's message for
    // each stays (it names the place).
    let mut crashes = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut try_one = |label: String, input: &[u8], crashes: &mut Vec<String>| {
        let _ = std::fs::write(&last, input);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| decode(input)));
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, label.clone());
        }
        if outcome.is_err() {
            let path = target.join(format!("fuzz-crash-yaml-{}", crashes.len()));
            let _ = std::fs::write(&path, input);
            println!(
                "PANIC on {label} (saved to {}):\n{}",
                path.display(),
                input.escape_ascii()
            );
            crashes.push(label);
        }
    };
    for (name, bytes) in &corpus {
        try_one(format!("corpus {name}"), bytes, &mut crashes);
    }
    let mut rng = XorShift(seed);
    let started = Instant::now();
    let mut tried = 0u64;
    while tried < runs && started.elapsed() < Duration::from_secs(secs) {
        let input = mutate(&mut rng, &corpus);
        tried += 1;
        try_one(format!("mutation {tried}"), &input, &mut crashes);
    }
    let _ = std::fs::remove_file(&last);
    println!(
        "fuzz_yaml: {} corpus files and {tried} mutations tried; slowest {:?} ({})",
        corpus.len(),
        slowest.0,
        slowest.1
    );
    assert!(
        crashes.is_empty(),
        "{} input(s) panicked (seed {seed:#x}): {crashes:?}",
        crashes.len()
    );
}
