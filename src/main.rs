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

/// Two of mimalloc 3's defaults hold freed memory resident, and both are changed here:
///
/// - `purge_delay`: freed memory stays committed for 1 s before it is returned to the OS
///   (version 2 waited 10 ms). Under full load that second holds a burst's garbage: resident
///   memory sampled every 0.5 s through 3 × 8 s of full load, p90 72–83 MB and peaks 84–93 MB;
///   with 10 ms, p90 61–64 MB and peaks 66–76 MB, throughput unchanged.
/// - `arena_eager_commit`: on Linux (overcommit) an arena is committed whole when reserved,
///   and the memory it frees is only reset, which leaves it resident. With it off, freed
///   memory is decommitted: after 8 s of full load 31 MB resident instead of 56–65 MB, at
///   most 32 MB during the load instead of 51–55 MB, throughput unchanged (A/B).
///
/// The first arena is reserved by the first allocation, which the Rust runtime makes before
/// `main`: on Linux this runs when the program is loaded (`TUNE_ALLOCATOR_AT_LOAD`); set from
/// `main` the second option only reached arenas reserved later (45–60 MB). Through mimalloc's
/// C API (the Rust crate does not wrap it), and each option only if it still has its known
/// default, so a mimalloc whose options are numbered differently, or one configured through
/// its `MIMALLOC_*` environment variables, is left alone.
extern "C" fn tune_allocator() {
    // Indices in mimalloc 3's `mi_option_e` (libmimalloc-sys 0.1.49).
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    const PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // (option, its default, the value wanted)
    const CHANGES: [(std::ffi::c_int, std::ffi::c_long, std::ffi::c_long); 2] =
        [(PURGE_DELAY, 1000, 10), (ARENA_EAGER_COMMIT, 2, 0)];
    for (option, default, wanted) in CHANGES {
        // SAFETY: plain reads and writes of mimalloc's static option table, which it allows at
        // any time, before its own initialisation included (a set option is kept by it).
        unsafe {
            if mi_option_get(option) == default {
                mi_option_set(option, wanted);
            }
        }
    }
}

/// Runs `tune_allocator` when the program is loaded, before the runtime's first allocation.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR_AT_LOAD: extern "C" fn() = tune_allocator;

const USAGE: &str = "usage: fluxtrail [serve]

Runs the fluxtrail HTTP server. Configuration comes from the environment
(FLUXTRAIL_LISTEN, FLUXTRAIL_DATA_DIR, FLUXTRAIL_*_SECRET, ...; see README.md).";

fn main() -> ExitCode {
    // Elsewhere than Linux, as early as a program without a load-time hook can.
    #[cfg(not(target_os = "linux"))]
    tune_allocator();
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
