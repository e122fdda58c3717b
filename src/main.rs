//! `fluxtrail [serve]`: runs the HTTP server (the only command so far).

use std::process::ExitCode;

use fluxtrail::config::Settings;
use fluxtrail::startup::{shutdown_signal, Application};
use fluxtrail::telemetry;

/// mimalloc rather than glibc's malloc: rows are allocated on the store's threads and freed on
/// the runtime's, and glibc's per-thread arenas fragmented under that until resident memory
/// grew with every event (BENCHMARKS.md: one million events).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: fluxtrail [serve]

Runs the fluxtrail HTTP server. Configuration comes from the environment
(FLUXTRAIL_LISTEN, FLUXTRAIL_DATA_DIR, FLUXTRAIL_*_SECRET, ...; see README.md).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {}
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["-V" | "--version"] => {
            println!("fluxtrail {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fluxtrail: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    // Blocking work is SQLite reads on two connections: more than a few threads would only
    // queue on them, and every extra thread is another malloc arena holding memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluxtrail: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match Application::build(settings).await {
            Ok(app) => {
                app.run_until_stopped(shutdown_signal()).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("fluxtrail: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
