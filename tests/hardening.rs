//! A faulty server, an echoing token endpoint, a shared machine: the real
//! binary against the real simulator over loopback, checking that a run
//! neither panics on what a server sends, nor prints a secret in any
//! encoding, nor leaves its files readable by others.

mod common;

use common::*;
use mdebulk::sim::SimConfig;

/// 2^64 - 1: the largest `Retry-After` a u64 holds, more than any clock can add.
const HUGE_RETRY_AFTER: &str = "18446744073709551615";

/// A 429 whose `Retry-After` is 2^64 - 1 seconds is waited out for the cap
/// (3900 s, shown in the log), not obeyed and not added to the clock: on a
/// POST (the worker used to panic) and on the pre-flight GET (the process
/// used to exit 101). `--max-runtime` ends the wait; exit 75.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_2_pow_64_is_capped_and_never_panics() {
    // POST: each API's quota is one call a minute, so the pre-flight passes
    // and the second isolation draws the 429.
    let post_sim = sim(SimConfig {
        throttle_retry_after: Some(HUGE_RETRY_AFTER.into()),
        ..sim_config(&["1/60s"])
    })
    .await;
    let dir = TempDir::new("retry-after-post");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&post_sim, 2)));
    let cmd =
        isolate(&post_sim, &input, &["--limit", "none", "--max-runtime", "3s", "--no-progress"]);
    let out = output(cmd).await;
    let all = text(&out);
    assert!(!all.contains("panicked"), "{all}");
    assert_eq!(out.status.code(), Some(75), "{all}");
    assert!(stats(&post_sim).by_api.get("isolate").is_some_and(|a| a.throttled >= 1), "{all}");
    assert!(all.contains("waiting 3900 s instead"), "the cap is logged: {all}");

    // GET: every call is refused, the pre-flight first.
    let get_sim = sim(SimConfig {
        throttle_retry_after: Some(HUGE_RETRY_AFTER.into()),
        cpu_throttle_rate: 1.0,
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("retry-after-get");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&get_sim, 2)));
    let cmd =
        isolate(&get_sim, &input, &["--limit", "none", "--max-runtime", "3s", "--no-progress"]);
    let out = output(cmd).await;
    let all = text(&out);
    assert!(!all.contains("panicked"), "{all}");
    assert_eq!(out.status.code(), Some(75), "{all}");
    assert!(stats(&get_sim).throttled >= 1, "{all}");
    assert!(all.contains("waiting 3900 s instead"), "the cap is logged: {all}");
}
