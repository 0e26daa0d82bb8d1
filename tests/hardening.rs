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

/// A client secret with the characters encodings change: `~` (form
/// encoders escape it, common in Entra secrets), `+`, `/`, `"`, a space.
const TRICKY_SECRET: &str = "Qx7~Lp2+Zr/8\"Mn 4kT~wY.c9_Hd";

/// The forms `TRICKY_SECRET` can be quoted back in: raw, form-encoded (upper
/// and lower hex), JSON-escaped, base64 (standard, URL-safe).
fn tricky_encodings() -> Vec<String> {
    let form = |hex: fn(u8) -> String| {
        TRICKY_SECRET
            .bytes()
            .map(|b| match b {
                b' ' => "+".to_string(),
                b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') => {
                    (b as char).to_string()
                }
                b => hex(b),
            })
            .collect::<String>()
    };
    let json = serde_json::to_string(TRICKY_SECRET).unwrap();
    vec![
        TRICKY_SECRET.to_string(),
        form(|b| format!("%{b:02X}")),
        form(|b| format!("%{b:02x}")),
        json[1..json.len() - 1].to_string(),
        // base64 of the secret, padded or not (its URL-safe form is the
        // same: no `+` or `/` in it); computed once, outside the tests.
        "UXg3fkxwMitaci84Ik1uIDRrVH53WS5jOV9IZA==".to_string(),
        "UXg3fkxwMitaci84Ik1uIDRrVH53WS5jOV9IZA".to_string(),
        // Any long run of the raw secret, in case a copy was cut.
        TRICKY_SECRET[..12].to_string(),
        TRICKY_SECRET[12..].to_string(),
    ]
}

/// The token endpoint quotes each refused request back (form-encoded and
/// as JSON), and the secret is revoked after the first token: the refresh
/// failure is logged, the rows after expiry are rejected with the
/// endpoint's message. The secret appears, in no encoding, on stdout,
/// stderr, in the results or in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoing_token_endpoint_never_gets_the_secret_printed_in_any_encoding() {
    let sim = sim(SimConfig {
        client_secret: Some(TRICKY_SECRET.into()),
        echo_token_requests: true,
        max_tokens: Some(1),
        token_ttl: std::time::Duration::from_secs(1),
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("echo-secret");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 20)));
    let results = dir.path("out.results.csv");
    let mut cmd = isolate(
        &sim,
        &input,
        &["-o", results.to_str().unwrap(), "--limit", "4/1s", "--no-progress", "-v"],
    );
    cmd.env("AZURE_CLIENT_SECRET", TRICKY_SECRET);
    let out = output(cmd).await;
    let all = text(&out);
    // The refused refresh stops the run (credentials lost), exit 2; its
    // message, the echo included, is printed, scrubbed.
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(stats(&sim).token_requests >= 2, "{all}");
    let rows = read_results(&results);
    assert!(status_counts(&rows).contains_key("not_sent"), "{:?}", status_counts(&rows));
    assert!(all.contains("client_secret=[redacted]"), "the echo was logged: {all}");

    let results_text = std::fs::read_to_string(&results).unwrap();
    let journal = std::fs::read_to_string(dir.path("out.results.csv.journal")).unwrap();
    for e in tricky_encodings() {
        for (what, text) in [("output", &all), ("results", &results_text), ("journal", &journal)] {
            assert!(!text.contains(&e), "{e:?} in the {what}:\n{text}");
        }
    }
}

/// The results, the journal and the undo results are owner-only (0600)
/// like the stdin spool: they list the incident's devices. A results file
/// left readable by an earlier run is narrowed when a resume takes it over.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_journal_and_undo_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode()
            & 0o777
    };
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("modes");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 3)));
    let results = dir.path("out.results.csv");
    let journal = dir.path("out.results.csv.journal");
    let cmd = isolate(&sim, &input, &["-o", results.to_str().unwrap(), "--limit", "none"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&results), 0o600, "results");
    assert_eq!(mode(&journal), 0o600, "journal");

    // A journal made readable (as earlier versions left it) is narrowed
    // when a resume opens it again.
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cmd =
        isolate(&sim, &input, &["-o", results.to_str().unwrap(), "--limit", "none", "--resume"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&journal), 0o600, "resumed journal");
    assert_eq!(mode(&results), 0o600, "resumed results");

    let undo = dir.path("out.results.undo.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["undo", results.to_str().unwrap(), "--yes", "-o", undo.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mode(&undo), 0o600, "undo results");
}

/// A TLS failure is no transient fault: the first one stops the run (exit
/// 2, a message naming the certificate/TLS problem), nothing is retried,
/// and every row is in the results as not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_stops_the_run_after_the_first_attempt() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    // Speaks plain text where a TLS server would answer a ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nnot tls\n").await;
        }
    });
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("tls");
    let input = dir.write("q.csv", ids_csv(&windows_online(&sim, 5)));
    let mut cmd = isolate(&sim, &input, &["--no-progress"]);
    cmd.env("MDE_API_URL", format!("https://{addr}"))
        .env_remove("AZURE_CLIENT_SECRET")
        .env("MDE_TOKEN", "a-ready-token");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("TLS"), "{}", text(&out));
    let rows = read_results(&dir.path("q.results.csv"));
    assert_eq!(status_counts(&rows).get("not_sent"), Some(&5), "{rows:?}");
    // The pre-flight and the OS look-up start together; neither retries.
    let n = connections.load(Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} connections");
}
