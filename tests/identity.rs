//! Resume keyed by what a row is, not where it sits: queue files that
//! change between runs, parameters that must not, stops that come during
//! any wait, credentials lost mid-run, and journals that cannot be trusted.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mdebulk::api::model::Machine;
use mdebulk::sim::{Sim, SimConfig};

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Asserts that every row names the device of its input row, in input
/// order, and that every distinct device of the input has exactly one
/// action on the simulator, none twice.
#[track_caller]
fn assert_each_device_once(sim: &Sim, rows: &[HashMap<String, String>], input: &[&Machine]) {
    assert_eq!(rows.len(), input.len(), "one row per input row");
    for (row, m) in rows.iter().zip(input) {
        assert_eq!(row["machine_id"], m.id, "{row:?}");
        assert_eq!(row["status"], "submitted", "{row:?}");
    }
    let counts = sim.action_counts();
    for m in input {
        assert_eq!(counts.get(&(m.id.clone(), "Isolate".to_string())), Some(&1), "{}", m.id);
    }
    assert_eq!(stats(sim).duplicate_submissions, 0);
}

/// The issue's scenario and its relatives: a first run stops part-way on
/// A–F, the queue is rewritten, and `--resume` acts on exactly the rows the
/// new file names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_queue_is_resumed_by_identity_never_by_line() {
    // Indexes into a fleet of ten: the first run's file holds 0..6 (A–F).
    let cases: [(&str, &[usize]); 5] = [
        // G H I J E F: four new devices where A–D stood.
        ("replaced", &[6, 7, 8, 9, 4, 5]),
        ("reordered", &[5, 4, 3, 2, 1, 0]),
        ("grown", &[0, 1, 2, 3, 4, 5, 6, 7]),
        ("shrunk", &[4, 1]),
        ("interleaved", &[8, 0, 9, 1, 2, 6, 3]),
    ];
    for (name, pick) in cases {
        let sim = sim(sim_config(&["2/1s"])).await;
        let dir = TempDir::new(name);
        let fleet = windows_online(&sim, 10);
        let input = dir.write("q.csv", ids_csv(&fleet[..6]));
        let results = dir.path("r.csv");
        let r = results.to_str().unwrap();
        let out =
            output(isolate(&sim, &input, &["--limit", "2/1s", "--max-runtime", "1500ms", "-o", r]))
                .await;
        assert_eq!(out.status.code(), Some(75), "{name}: {}", text(&out));
        let first = stats(&sim).actions_created;
        assert!((1..6).contains(&first), "{name}: {first} sent before the deadline");
        let now: Vec<&Machine> = pick.iter().map(|&i| &fleet[i]).collect();
        let owned: Vec<Machine> = now.iter().map(|m| (*m).clone()).collect();
        std::fs::write(&input, ids_csv(&owned)).unwrap();
        let cmd = isolate(&sim, &input, &["--limit", "100/1s", "-o", r, "--resume"]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let rows = read_results(&results);
        assert_each_device_once(&sim, &rows, &now);
        // Devices of the first run that the new file no longer names are
        // left out of the results, and counted.
        let gone = (0..6).filter(|i| !pick.contains(i)).count();
        let acted_and_gone = (0..6)
            .filter(|i| !pick.contains(i))
            .filter(|i| sim.action_counts().contains_key(&(fleet[*i].id.clone(), "Isolate".into())))
            .count();
        let summary = String::from_utf8_lossy(&out.stdout);
        if acted_and_gone > 0 {
            assert!(
                summary.contains(&format!(
                    "settled earlier, no longer in the input: {acted_and_gone}"
                )),
                "{name} ({gone} gone): {summary}"
            );
        }
    }
}

/// A resume whose parameters would change what the journal's rows mean is
/// refused before any call, naming the flag and both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_with_other_parameters_is_refused_and_sends_nothing() {
    let sim = sim(sim_config(&["2/1s"])).await;
    let dir = TempDir::new("params");
    let fleet = windows_online(&sim, 6);
    let input = dir.write("q.csv", ids_csv(&fleet));
    let results = dir.path("q.results.csv");
    let out = output(isolate(&sim, &input, &["--limit", "2/1s", "--max-runtime", "1200ms"])).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let sent = stats(&sim).actions_created;
    let other_sim = common::sim(sim_config(&[])).await;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--action", "unisolate", "--comment", "x"], "--action"),
        (vec!["run", "--action", "isolate", "--comment", "other"], "--comment"),
        (
            vec!["run", "--action", "isolate", "--comment", "x", "--isolation-type", "selective"],
            "--isolation-type",
        ),
    ];
    for (args, flag) in cases {
        let mut cmd = mdebulk(&sim);
        cmd.args(&args[..1]).arg(&input).args(&args[1..]).args(["--resume", "--limit", "100/1s"]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", text(&out));
        assert!(text(&out).contains(flag), "{flag}: {}", text(&out));
        assert!(text(&out).contains("-o"), "says how to proceed: {}", text(&out));
    }
    // Another API: the same journal, another service.
    let mut cmd = isolate(&sim, &input, &["--resume"]);
    cmd.env("MDE_API_URL", other_sim.url()).env("MDE_LOGIN_URL", other_sim.url());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--api-url"), "{}", text(&out));
    assert_eq!(stats(&sim).actions_created, sent, "nothing was sent");
    assert_eq!(stats(&other_sim).actions_created, 0);
    assert_eq!(
        api_calls(&sim, "ListMachineActions") + api_calls(&other_sim, "ListMachineActions"),
        0
    );
    // Pacing and the like may change freely, and the run then finishes.
    let out =
        output(isolate(&sim, &input, &["--resume", "--limit", "50/1s", "--concurrency", "3"]))
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&results);
    let all: Vec<&Machine> = fleet.iter().collect();
    assert_each_device_once(&sim, &rows, &all);
}

/// A finished run on a file with CR-only line ends (Excel's "CSV
/// (Macintosh)") resumed: nothing is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_finished_cr_only_run_sends_nothing() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("cr");
    let fleet = windows_online(&sim, 20);
    let input = dir.write("q.csv", ids_csv(&fleet).replace('\n', "\r"));
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = output(isolate(&sim, &input, &["--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stats(&sim).actions_created, 20);
    assert_eq!(stats(&sim).duplicate_submissions, 0);
    let rows = read_results(&dir.path("q.results.csv"));
    let all: Vec<&Machine> = fleet.iter().collect();
    assert_each_device_once(&sim, &rows, &all);
}

/// A stop during a paced read (a `status --wait` whose next list call is
/// 30 s away) ends the process at once, with the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_paced_read_wait_exits_at_once() {
    let sim = sim(SimConfig { settle: Duration::from_secs(600), ..sim_config(&[]) }).await;
    let dir = TempDir::new("status-wait");
    let input = dir.write("q.csv", ids_csv(&windows_online(&sim, 3)));
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", dir.path("q.results.csv").to_str().unwrap(), "--wait"]).args([
        "--limit",
        "1/30s",
        "--poll-interval",
        "1s",
    ]);
    let child = spawn(cmd);
    // The first poll goes at once; the second waits for the pacer (30 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let polls_before = api_calls(&sim, "ListMachineActions");
    let sent = Instant::now();
    signal(&child, "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let took = sent.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "exited only when the pacer's wait ended: {took:?}");
    assert_eq!(api_calls(&sim, "ListMachineActions"), polls_before, "no call after the stop");
}

/// A stop during a long `Retry-After` on a look-up (every call answered
/// 429) and during a `--wait` poll interval ends the run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_retry_after_or_a_poll_interval_exits_at_once() {
    // Names need a look-up; the simulator refuses every call with 429 and
    // asks for ten minutes.
    let sim = sim(SimConfig {
        cpu_throttle_rate: 1.0,
        throttle_retry_after: Some("600".into()),
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("retry-after");
    let names: String = windows_online(&sim, 3)
        .iter()
        .map(|m| format!("{}\n", m.computer_dns_name.clone().unwrap()))
        .collect();
    let input = dir.write("names.csv", format!("device_name\n{names}"));
    let child = spawn(isolate(&sim, &input, &["--no-progress"]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    signal(&child, "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(sent.elapsed() < Duration::from_secs(20), "{:?}", sent.elapsed());
    assert!(text(&out).contains("wait_s=600"), "the pause was logged: {}", text(&out));
    assert_eq!(stats(&sim).actions_created, 0);
    let rows = read_results(&dir.path("names.results.csv"));
    assert_eq!(status_counts(&rows).get("not_sent"), Some(&3), "{rows:?}");

    let sim = common::sim(SimConfig { settle: Duration::from_secs(600), ..sim_config(&[]) }).await;
    let input = dir.write("ids.csv", ids_csv(&windows_online(&sim, 3)));
    let child = spawn(isolate(&sim, &input, &["--wait", "--poll-interval", "60s"]));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let sent = Instant::now();
    signal(&child, "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(sent.elapsed() < Duration::from_secs(20), "{:?}", sent.elapsed());
}

/// The credentials stop working mid-run (the app's secret revoked): the run
/// stops like an interrupt, exit 2, no row is `rejected` for it, every row
/// is in the results, and a resume with working credentials finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_mid_run_stop_the_run_and_a_resume_finishes() {
    let sim = sim(sim_config(&["4/1s"])).await;
    let dir = TempDir::new("revoked");
    let fleet = windows_online(&sim, 24);
    let input = dir.write("q.csv", ids_csv(&fleet));
    let child = spawn(isolate(&sim, &input, &["--limit", "4/1s"]));
    // Revoke once some rows were sent (counted, not timed: a loaded machine
    // may take seconds to start the run), with most still to go at 4/s.
    while stats(&sim).actions_created < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.revoke_client("app-1");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--resume"), "{}", text(&out));
    assert!(text(&out).contains("authentication"), "{}", text(&out));
    let rows = read_results(&dir.path("q.results.csv"));
    assert_eq!(rows.len(), 24);
    let counts = status_counts(&rows);
    assert_eq!(counts.get("rejected"), None, "{counts:?}");
    let sent = stats(&sim).actions_created as usize;
    assert!(sent > 0 && sent < 24, "{sent}");
    assert_eq!(counts.get("submitted").copied().unwrap_or(0), sent, "{counts:?}");
    assert_eq!(counts.get("not_sent").copied().unwrap_or(0), 24 - sent, "{counts:?}");
    sim.restore_client("app-1");
    let out = output(isolate(&sim, &input, &["--limit", "100/1s", "--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all: Vec<&Machine> = fleet.iter().collect();
    assert_each_device_once(&sim, &read_results(&dir.path("q.results.csv")), &all);
}

/// A ready token (`MDE_TOKEN`) that expires mid-run cannot be refreshed:
/// the run stops with exit 2 and says how to continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ready_token_stops_the_run_without_rejecting_rows() {
    let sim = sim(SimConfig { token_ttl: Duration::from_secs(2), ..sim_config(&["4/1s"]) }).await;
    let token = access_token(&sim.url(), "tenant-1", "app-1", "s3cret-value-never-logged").await;
    let dir = TempDir::new("expired");
    let fleet = windows_online(&sim, 20);
    let input = dir.write("q.csv", ids_csv(&fleet));
    let mut cmd = isolate(&sim, &input, &["--limit", "4/1s"]);
    cmd.env_remove("AZURE_CLIENT_SECRET").env("MDE_TOKEN", token);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let rows = read_results(&dir.path("q.results.csv"));
    assert_eq!(rows.len(), 20);
    assert_eq!(status_counts(&rows).get("rejected"), None, "{rows:?}");
    assert!(status_counts(&rows).get("not_sent").is_some_and(|&n| n > 0));
    // With credentials that refresh, the same results file continues.
    let out = output(isolate(&sim, &input, &["--limit", "100/1s", "--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all: Vec<&Machine> = fleet.iter().collect();
    assert_each_device_once(&sim, &read_results(&dir.path("q.results.csv")), &all);
}

/// A burst of 429s logs one line per pause of the API, not one per answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_logs_one_line_per_pause() {
    let sim = sim(sim_config(&["5/2s"])).await;
    let dir = TempDir::new("storm");
    let input = dir.write("q.csv", ids_csv(&windows_online(&sim, 30)));
    let out =
        output(isolate(&sim, &input, &["--limit", "none", "--concurrency", "30", "--no-progress"]))
            .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let throttled = stats(&sim).throttled;
    let lines = String::from_utf8_lossy(&out.stderr).matches("429 from the service").count();
    assert!(throttled >= 20, "{throttled} 429s");
    assert!(lines >= 1 && (lines as u64) * 4 <= throttled, "{lines} lines for {throttled} 429s");
}

/// A journal deleted (or never there) beside a `.partial` a stopped run
/// left: `--resume` refuses, naming the file, instead of starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_without_its_journal_refuses_to_start() {
    let sim = sim(sim_config(&["2/1s"])).await;
    let dir = TempDir::new("no-journal");
    let input = dir.write("q.csv", ids_csv(&windows_online(&sim, 8)));
    let results = dir.path("q.results.csv");
    let out = output(isolate(&sim, &input, &["--limit", "2/1s", "--max-runtime", "1200ms"])).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let sent = stats(&sim).actions_created;
    std::fs::remove_file(dir.path("q.results.csv.journal")).unwrap();
    std::fs::rename(&results, dir.path("q.results.csv.partial")).unwrap();
    for extra in [&["--resume"][..], &[][..]] {
        let out = output(isolate(&sim, &input, extra)).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains("q.results.csv.partial"), "{}", text(&out));
    }
    assert_eq!(stats(&sim).actions_created, sent);
}

/// `--only in_doubt` replays look the action up before sending, as a
/// resume does: the devices that have it are not sent it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_in_doubt_rows_looks_them_up_first() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("only-in-doubt");
    let fleet = windows_online(&sim, 10);
    let input = dir.write("q.csv", ids_csv(&fleet));
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // As if every answer had been lost: in doubt, no action id.
    let first = dir.path("q.results.csv");
    let mut r = csv::Reader::from_path(&first).unwrap();
    let headers = r.headers().unwrap().clone();
    let mut w = csv::Writer::from_path(dir.path("doubt.csv")).unwrap();
    w.write_record(&headers).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let fields: Vec<&str> = headers
            .iter()
            .zip(rec.iter())
            .map(|(h, v)| match h {
                "status" => "in_doubt",
                "action_id" | "action_status" | "http_status" => "",
                _ => v,
            })
            .collect();
        w.write_record(fields).unwrap();
    }
    w.flush().unwrap();
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", dir.path("doubt.csv").to_str().unwrap(), "--action", "isolate"])
        .args(["--comment", "x", "--only", "in_doubt", "-o"])
        .arg(dir.path("retry.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stats(&sim).duplicate_submissions, 0);
    assert_eq!(stats(&sim).actions_created, 10);
    let rows = read_results(&dir.path("retry.csv"));
    assert!(
        rows.iter().all(|r| r["status"] == "submitted" && !r["action_id"].is_empty()),
        "{rows:?}"
    );
}

/// A full disk: the journal's first failed write stops the run (no request
/// leaves whose intent is not recorded), exit 74; after freeing space,
/// `--resume` finishes with no device acted on twice. Runs in a private
/// mount namespace with a tiny tmpfs, where the machine allows it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_sending_and_a_resume_after_freeing_space_finishes() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .stderr(Stdio::null())
        .status();
    let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !probe.is_ok_and(|s| s.success()) && !as_root {
        eprintln!("skipped: no mount namespace or root to make a small file system");
        return;
    }
    let sim = sim(sim_config(&["20/1s"])).await;
    let dir = TempDir::new("full");
    let fleet = windows_online(&sim, 120);
    let input = dir.write("q.csv", ids_csv(&fleet));
    let mnt = dir.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_mdebulk");
    // A 1 MiB file system with 12 KiB left before the first run (room for
    // a few dozen rows); the filler is removed before the resume.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=1m none "{mnt}" || exit 90
head -c 1036288 /dev/zero > "{mnt}/filler" 2>/dev/null
"{bin}" run "{input}" --action isolate --comment x --limit 20/1s -o "{mnt}/r.csv" --no-progress
echo "first=$?"
rm -f "{mnt}/filler"
"{bin}" run "{input}" --action isolate --comment x --limit 100/1s -o "{mnt}/r.csv" --no-progress --resume
echo "second=$?"
cp "{mnt}/r.csv" "{out}"
"#,
        mnt = mnt.display(),
        input = input.display(),
        out = dir.path("r.csv").display(),
    );
    let mut cmd = if as_root {
        let mut c = Command::new("unshare");
        c.args(["--mount", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
        c
    };
    cmd.env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", "s3cret-value-never-logged")
        .env("MDE_API_URL", sim.url())
        .env("MDE_LOGIN_URL", sim.url());
    let out = output(cmd).await;
    let log = text(&out);
    assert!(log.contains("first=74"), "{log}");
    assert!(log.contains("can no longer be written") && log.contains("--resume"), "{log}");
    assert!(log.contains("second=0"), "{log}");
    let rows = read_results(&dir.path("r.csv"));
    let all: Vec<&Machine> = fleet.iter().collect();
    assert_each_device_once(&sim, &rows, &all);
}
