//! `hsm-coordinator`: parses the command line, sets up logging, runs the command, and maps the
//! outcome to the documented exit codes (0 ok, 1 failed/cancelled tasks, 2 bad input, 130 Ctrl-C).

use clap::Parser;
use hsm_coordinator::cli::{self, Cli};

fn main() {
    // Die quietly on a closed pipe (`sweep status | head`) like other Unix tools, instead of
    // panicking in println!.
    // SAFETY: setting a signal disposition before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hsm-coordinator: {error:#}");
            cli::exit_code_of(&error)
        }
    };
    std::process::exit(code);
}

/// Two outputs: the terminal (stderr, at the level `-q`/`-v`/`HSM_LOG` ask for) and the
/// engine log of the run in progress (`logs/engine.log`, hsm's own events at info level
/// whatever the terminal shows; it writes nothing outside a run).
fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_env("HSM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let terminal = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let ours = Targets::new()
        .with_target("hsm_coordinator", LevelFilter::INFO)
        .with_target("hsm_exec", LevelFilter::INFO)
        .with_target("hsm_transport", LevelFilter::INFO)
        .with_target("hsm_protocol", LevelFilter::INFO);
    let engine_log = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(hsm_coordinator::run_log::EngineLog)
        .with_target(false)
        .with_filter(ours);
    tracing_subscriber::registry()
        .with(terminal)
        .with(engine_log)
        .init();
}
