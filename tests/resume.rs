//! Crash safety end to end: SIGKILL at many points and resume, replay of a
//! results file, the run lock, graceful interrupts and deadlines.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use mdebulk::sim::SimConfig;

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_many_points_and_resumed_every_row_ends_once_and_no_device_is_hit_twice() {
    // Between kills the queue file is rewritten in another order, as a
    // detection pipeline would: rows are matched by what they are.
    let sim = sim(SimConfig { latency: Duration::from_millis(60), ..sim_config(&["8/1s"]) }).await;
    let dir = TempDir::new("kill");
    let machines = windows_online(&sim, 64);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let results = dir.path("hosts.results.csv");
    let args = |resume: bool| {
        let mut cmd = mdebulk(&sim);
        cmd.args(["run", input.to_str().unwrap(), "--action", "isolate", "--comment", "IR-7"])
            .args(["--limit", "8/1s", "--request-timeout", "1s", "--no-progress"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let mut rng = fastrand::Rng::with_seed(42);
    let mut kills = 0;
    let mut logs = String::new();
    let mut finished = false;
    let mut order = machines.clone();
    for round in 0..30 {
        if round > 0 {
            rng.shuffle(&mut order);
            std::fs::write(&input, ids_csv(&order)).unwrap();
        }
        let mut child = spawn(args(round > 0));
        let after = Duration::from_millis(rng.u64(80..900));
        let exited = tokio::task::spawn_blocking(move || {
            std::thread::sleep(after);
            match child.try_wait().unwrap() {
                Some(status) => (Some(status), child),
                None => {
                    child.kill().unwrap();
                    let _ = child.wait();
                    (None, child)
                }
            }
        })
        .await
        .unwrap();
        match exited.0 {
            None => {
                kills += 1;
                let out = exited.1.wait_with_output().unwrap();
                logs.push_str(&text(&out));
            }
            Some(status) => {
                let out = exited.1.wait_with_output().unwrap();
                assert!(status.success(), "round {round}: {}", text(&out));
                finished = true;
                break;
            }
        }
        if kills >= 12 {
            break;
        }
    }
    if !finished {
        let out = output(args(true)).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert!(kills >= 10, "only {kills} kills landed");
    assert!(logs.contains("in doubt"), "no kill landed between an intent and its answer");
    let rows = read_results(&results);
    assert_eq!(rows.len(), 64, "one final row per input row");
    for (row, m) in rows.iter().zip(&order) {
        assert_eq!(row["machine_id"], m.id, "each row names the device its input row names");
        assert_eq!(row["status"], "submitted", "{row:?}");
    }
    let s = stats(&sim);
    assert_eq!(s.duplicate_submissions, 0, "a device was sent the same action twice");
    assert_eq!(s.actions_created, 64);
    assert!(sim.action_counts().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_results_file_keeps_user_columns_byte_for_byte() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("replay");
    let m = windows_online(&sim, 2);
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let csv = format!(
        "machine_id,note,owner\n{},\"comma, \"\"quoted\"\"\nnewline\",Zoë 東京 🚀\n{missing},\"=cmd|' /C calc'!A0\",'lead\n{},-5,+x\n",
        m[0].id, m[1].id
    );
    let input = dir.write("hosts.csv", &csv);
    let cmd = isolate(&sim, &input, &[]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let first = dir.path("hosts.results.csv");
    // Replay only the failed row: the user's columns come back unchanged,
    // and the runner's columns are replaced, not duplicated.
    let mut cmd = mdebulk(&sim);
    cmd.args([
        "run",
        first.to_str().unwrap(),
        "--only",
        "not_found",
        "--action",
        "isolate",
        "--comment",
        "x",
        "-o",
    ])
    .arg(dir.path("retry.results.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let retry = read_results(&dir.path("retry.results.csv"));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0]["machine_id"], missing);
    assert_eq!(retry[0]["status"], "not_found");
    let mut r = csv::Reader::from_path(dir.path("retry.results.csv")).unwrap();
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(headers.iter().filter(|h| *h == "status").count(), 1);
    assert_eq!(&headers[..2], ["note", "owner"]);
    // Full round trip of every user cell through a replay of all rows (dry run: nothing sent).
    let before = stats(&sim).actions_created;
    let mut cmd = isolate(&sim, &first, &["--dry-run", "-o"]);
    cmd.arg(dir.path("again.results.csv"));
    let out = output(cmd).await;
    // The dry run checks the ids: the missing one is not_found, a failure.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let original: Vec<Vec<String>> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().skip(1).map(String::from).collect())
        .collect();
    // Read back the way a replay does: undo the spreadsheet neutralisation.
    let input = mdebulk::input::Input::open(&mdebulk::input::InputSpec {
        path: Some(dir.path("again.results.csv")),
        ..Default::default()
    })
    .unwrap();
    let cols = input.columns();
    let again: Vec<Vec<String>> =
        input.records().unwrap().map(|r| cols.user_values(&r.unwrap().values)).collect();
    assert_eq!(again, original);
    assert_eq!(stats(&sim).actions_created, before, "a dry run sent an action");
    // JSONL round trip too.
    let mut cmd = isolate(&sim, &first, &["--dry-run", "-o"]);
    cmd.arg(dir.path("again.jsonl"));
    assert_eq!(output(cmd).await.status.code(), Some(1));
    let mut cmd = isolate(&sim, &dir.path("again.jsonl"), &["--dry-run", "-o"]);
    cmd.arg(dir.path("twice.jsonl"));
    assert_eq!(output(cmd).await.status.code(), Some(1));
    let twice: Vec<serde_json::Value> = std::fs::read_to_string(dir.path("twice.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (row, orig) in twice.iter().zip(&original) {
        assert_eq!(row["note"], orig[0]);
        assert_eq!(row["owner"], orig[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_results_file_is_refused_while_the_first_holds_the_lock() {
    let sim = sim(sim_config(&["5/1s"])).await;
    let dir = TempDir::new("lock");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 20)));
    let run = |resume: bool| {
        let mut cmd = isolate(&sim, &input, &["--limit", "5/1s"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let first = spawn(run(false));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = output(run(true)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("in use"), "{}", text(&out));
    let out = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read_results(&dir.path("hosts.results.csv")).len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_prints_the_resume_command_and_a_resume_finishes_the_job() {
    let sim = sim(sim_config(&["5/1s"])).await;
    let dir = TempDir::new("sigint");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 20)));
    let cmd = isolate(&sim, &input, &["--limit", "5/1s"]);
    let child = spawn(cmd);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("--resume"), "{}", text(&out));
    // One row per input row, also after an interrupt; the counts add up.
    let partial = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(partial.len(), 20, "{}", text(&out));
    let counts = status_counts(&partial);
    let (sent, unsent) = (
        counts.get("submitted").copied().unwrap_or(0),
        counts.get("not_sent").copied().unwrap_or(0),
    );
    assert!(sent > 0 && unsent > 0 && sent + unsent == 20, "{counts:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("run: 20 row(s)"), "{summary}");
    assert!(summary.contains(&format!("not_sent        {unsent}")), "{summary}");
    let cmd = isolate(&sim, &input, &["--limit", "5/1s", "--resume"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r["status"] == "submitted"));
    assert_eq!(stats(&sim).duplicate_submissions, 0);
    assert_eq!(stats(&sim).actions_created, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runtime_stops_gracefully_with_75_and_resumes() {
    let sim = sim(sim_config(&["5/1s"])).await;
    let dir = TempDir::new("deadline");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 15)));
    let cmd = isolate(&sim, &input, &["--limit", "5/1s", "--max-runtime", "1200ms"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let cmd = isolate(&sim, &input, &["--limit", "5/1s", "--resume"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read_results(&dir.path("hosts.results.csv")).len(), 15);
    assert_eq!(stats(&sim).actions_created, 15);
    assert_eq!(stats(&sim).duplicate_submissions, 0);
}
