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

/// mimalloc 3 keeps freed memory committed for 1 s before returning it to the OS (its
/// `purge_delay`; version 2 waited 10 ms). Under full load that second holds a burst's
/// garbage: resident memory sampled every 0.5 s through 3 × 8 s of full load, p90 72–83 MB
/// and peaks 84–93 MB; with 10 ms, p90 61–64 MB and peaks 66–76 MB (medians 61–63 → 57–59),
/// throughput unchanged. Set here, before any work, through mimalloc's C API (the Rust crate
/// does not wrap it).
fn return_freed_memory_sooner() {
    // `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (libmimalloc-sys 0.1.49).
    const PURGE_DELAY: std::ffi::c_int = 15;
    const DEFAULT_MS: std::ffi::c_long = 1000;
    const WANTED_MS: std::ffi::c_long = 10;
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: plain reads and writes of mimalloc's option table, which it allows at any time.
    // The option is only set if it still has its known default, so another mimalloc whose
    // options are numbered differently is left alone.
    unsafe {
        if mi_option_get(PURGE_DELAY) == DEFAULT_MS {
            mi_option_set(PURGE_DELAY, WANTED_MS);
        }
    }
}

const USAGE: &str = "usage: fluxtrail [serve]

Runs the fluxtrail HTTP server. Configuration comes from the environment
(FLUXTRAIL_LISTEN, FLUXTRAIL_DATA_DIR, FLUXTRAIL_*_SECRET, ...; see README.md).";

fn main() -> ExitCode {
    return_freed_memory_sooner();
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
