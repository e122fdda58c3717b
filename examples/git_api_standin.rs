//! The Git host API stand-in of the tests, as a process for `scripts/bench-backfill.sh`:
//! `git_api_standin <listen addr> <requests per window> <window seconds>`. Serves the
//! documented answers under `tests/fixtures/api/`, keeps the rate limit with GitHub's
//! headers (refusing with 403 past it), and answers `GET /_standin/stats` with
//! `{"refused": n, "limited": bool}`.

#[path = "../tests/standin/mod.rs"]
mod standin;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:0");
    let per_window: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    let window: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1);
    let s = standin::StandIn::start_on(addr).await;
    s.set_record(false);
    s.set_limit(per_window, window);
    println!("{}", s.url());
    std::future::pending::<()>().await;
}
