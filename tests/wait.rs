//! `run --wait`, `mdebulk status` and `mdebulk undo` end to end: the real
//! binary against the real simulator over loopback HTTP. Nothing here
//! asserts wall-clock speed; calls are counted with the simulator's stats.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use mdebulk::api::auth::{Credentials, Secret};
use mdebulk::api::client::{Client, ClientConfig};
use mdebulk::api::cloud::Cloud;
use mdebulk::api::model::{Machine, MachineAction};
use mdebulk::api::odata::ListQuery;
use mdebulk::sim::{FleetSpec, Sim, SimConfig};

const LIST: &str = "GET machineactions";
const CANCEL: &str = "POST machineactions/{id}/cancel";

/// `run --action isolate --comment x` on `input`, plus `extra` flags.
fn run_isolate(sim: &Sim, input: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = mdebulk(sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "isolate", "--comment", "x"])
        .args(["--no-progress"])
        .args(extra);
    cmd
}

/// `(polls, list calls)` from the summary line of a wait.
fn polls(out: &std::process::Output) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("poll(s)"))
        .unwrap_or_else(|| panic!("no wait line in the summary:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // "followed N action(s) for T: P poll(s), C list call(s)": the last two.
    (numbers[numbers.len() - 2], numbers[numbers.len() - 1])
}

fn list_calls(sim: &Sim) -> u64 {
    api_calls(sim, LIST)
}

/// `GET machineactions` calls a run makes before sending: its pre-flight
/// look-up of actions already pending (one page here).
const PREFLIGHT: u64 = 1;

/// Every action the simulator holds, through the real client.
async fn all_actions(sim: &Sim) -> Vec<MachineAction> {
    let config = ClientConfig::new(
        sim.url(),
        sim.url(),
        Cloud::Global.scope(),
        Credentials::ClientSecret {
            tenant_id: "tenant-1".into(),
            client_id: "app-1".into(),
            client_secret: Secret::new("s3cret-value-never-logged".to_string()),
        },
    );
    let client = Client::new(config).unwrap();
    client.list_actions(&ListQuery::default()).await.unwrap().value.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_ends_every_row_succeeded_with_one_list_call_per_poll() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("wait-ok");
    let machines = windows_online(&sim, 30);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let out = output(run_isolate(&sim, &input, &["--wait", "--poll-interval", "200ms"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 30);
    for (i, (row, m)) in rows.iter().zip(&machines).enumerate() {
        assert_eq!(row["machine_id"], m.id);
        assert_eq!(row["owner"], format!("owner-{i}"), "user columns are kept");
        assert_eq!(row["status"], "succeeded", "{row:?}");
        assert_eq!(row["action_status"], "Succeeded");
        assert_eq!(row["action_id"].len(), 36);
        assert_eq!(row["http_status"], "201", "the submission's answer is kept");
    }
    let (polls, calls) = polls(&out);
    assert!(polls >= 1);
    assert_eq!(list_calls(&sim) - PREFLIGHT, calls, "the summary counts the calls made");
    assert_eq!(calls, polls, "one list call per poll for 30 rows");
    assert_eq!(api_calls(&sim, "GET machineactions/{id}"), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded       30"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_pages_its_lists_is_followed_to_the_last_page() {
    let sim = sim(SimConfig { page_size: Some(10), ..sim_config(&[]) }).await;
    let dir = TempDir::new("wait-pages");
    let machines = windows_online(&sim, 25);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let out = output(run_isolate(&sim, &input, &["--wait", "--poll-interval", "200ms"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(status_counts(&rows).get("succeeded"), Some(&25), "{:?}", status_counts(&rows));
    let (polls, calls) = polls(&out);
    assert_eq!(list_calls(&sim) - PREFLIGHT, calls);
    assert_eq!(calls, polls * 3, "25 actions in pages of 10: three calls per poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_that_fail_on_the_device_end_failed_and_exit_1() {
    let sim = sim(SimConfig { fail_rate: 1.0, ..sim_config(&[]) }).await;
    let dir = TempDir::new("wait-fail");
    let machines = windows_online(&sim, 8);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let out = output(run_isolate(&sim, &input, &["--wait", "--poll-interval", "200ms"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(status_counts(&rows).get("failed"), Some(&8), "{:?}", status_counts(&rows));
    for row in &rows {
        assert_eq!(row["action_status"], "Failed");
        assert!(row["error_message"].contains("failure"), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_on_offline_machines_end_timed_out() {
    let sim = sim(SimConfig {
        offline_rate: 0.5,
        action_timeout: Duration::from_millis(1500),
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("wait-offline");
    let offline = pick(&sim, 5, "Inactive", false);
    let online = pick(&sim, 5, "Active", false);
    let machines: Vec<Machine> = offline.iter().chain(&online).cloned().collect();
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let out = output(run_isolate(
        &sim,
        &input,
        &["--wait", "--poll-interval", "250ms", "--wait-timeout", "60s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "timed_out is a failure: {}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    for row in &rows[..5] {
        assert_eq!(row["status"], "timed_out", "{row:?}");
        assert_eq!(row["action_status"], "TimeOut");
        assert!(row["error_message"].contains("offline"), "{row:?}");
    }
    for row in &rows[5..] {
        assert_eq!(row["status"], "succeeded", "{row:?}");
    }
}

/// Rows of a JSONL results file, as JSON objects.
fn read_jsonl(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_open_at_the_wait_timeout_are_finished_by_status_wait() {
    let sim = sim(SimConfig { settle: Duration::from_secs(3), ..sim_config(&[]) }).await;
    let dir = TempDir::new("wait-status");
    let machines = windows_online(&sim, 12);
    let mut csv = String::from("machine_id,note\n");
    for (i, m) in machines.iter().enumerate() {
        csv.push_str(&format!("{},\"=note {i}, \"\"quoted\"\"\"\n", m.id));
    }
    let input = dir.write("hosts.csv", csv);
    let results = dir.path("hosts.results.jsonl");
    let out = output(run_isolate(
        &sim,
        &input,
        &[
            "-o",
            results.to_str().unwrap(),
            "--wait",
            "--poll-interval",
            "200ms",
            "--wait-timeout",
            "500ms",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "open rows are not failures: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("still open when waiting ended: 12"), "{stdout}");
    assert!(stdout.contains("mdebulk status"), "the summary says how to follow up: {stdout}");
    let rows = read_jsonl(&results);
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let s = row["status"].as_str().unwrap();
        assert!(s == "pending" || s == "in_progress", "{row:?}");
    }

    // A copy without a journal: one look, and no journal is left behind
    // (a later --resume must not take it for the record of a run).
    let copy = dir.path("copy.jsonl");
    std::fs::copy(&results, &copy).unwrap();
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", copy.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!dir.path("copy.jsonl.journal").exists());
    assert_eq!(read_jsonl(&copy).len(), 12);

    // While a run (here: its journal lock) holds the file, status refuses.
    let journal = dir.path("hosts.results.jsonl.journal");
    let (held, _) = mdebulk::run::journal::Journal::open(&journal, false).unwrap();
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", results.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("in use"), "{}", text(&out));
    held.close().await;

    let calls_before = list_calls(&sim);
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", results.to_str().unwrap(), "--wait", "--poll-interval", "300ms"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_jsonl(&results);
    assert_eq!(rows.len(), 12);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["status"], "succeeded", "{row:?}");
        assert_eq!(row["action_status"], "Succeeded");
        assert_eq!(row["note"], format!("=note {i}, \"quoted\""), "user columns kept exactly");
        assert_eq!(row["machine_id"], machines[i].id.as_str());
        assert_eq!(row["line"], i as u64 + 2);
    }
    let (polls, calls) = polls(&out);
    assert_eq!(list_calls(&sim) - calls_before, calls);
    assert!(calls <= polls * 2, "{calls} calls for {polls} polls");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("status: 12 row(s)"));

    // Nothing is open any more: another status makes no call and keeps the file.
    let before = std::fs::read(&results).unwrap();
    let calls_before = list_calls(&sim);
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", results.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(list_calls(&sim), calls_before);
    assert_eq!(std::fs::read(&results).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_file_that_is_not_results_is_refused_and_touches_nothing() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("status-bad");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    let mut cmd = mdebulk(&sim);
    cmd.args(["status", input.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not a results file"), "{}", text(&out));
    assert!(!dir.path("hosts.csv.journal").exists());
    assert_eq!(stats(&sim).requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5000_device_wait_costs_a_few_calls_per_poll() {
    let sim = sim(SimConfig {
        fleet: FleetSpec::Generate { machines: 5_200 },
        settle: Duration::from_secs(2),
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("wait-5000");
    let machines = pick(&sim, 5_000, "Active", false);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let out = output(run_isolate(
        &sim,
        &input,
        &[
            "--limit",
            "none",
            "--concurrency",
            "64",
            "--wait",
            "--poll-interval",
            "500ms",
            "--allow-large",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 5_000);
    assert_eq!(status_counts(&rows).get("succeeded"), Some(&5_000), "{:?}", status_counts(&rows));
    let (polls, calls) = polls(&out);
    let listed = list_calls(&sim) - PREFLIGHT;
    assert_eq!(listed, calls);
    assert!(listed <= polls * 2, "{listed} list calls for {polls} polls");
    assert_eq!(stats(&sim).actions_created, 5_000);
}

/// The actions on `machines`, by type.
fn kinds_on<'a>(actions: &'a [MachineAction], machines: &[Machine]) -> Vec<&'a MachineAction> {
    let ids: HashSet<&str> = machines.iter().map(|m| m.id.as_str()).collect();
    actions.iter().filter(|a| ids.contains(a.machine_id.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_touches_only_the_runs_own_actions() {
    let sim = sim(SimConfig {
        offline_rate: 0.5,
        action_timeout: Duration::from_secs(600),
        ..sim_config(&[])
    })
    .await;
    let dir = TempDir::new("undo-scope");
    let active = pick(&sim, 7, "Active", false);
    let offline = pick(&sim, 3, "Inactive", false);
    let (a_active, b_active) = active.split_at(4);
    let (a_offline, shared) = offline.split_at(2);

    // Run B isolates other devices and the shared one; it is never undone.
    let b_machines: Vec<Machine> = b_active.iter().chain(shared).cloned().collect();
    let b_input = dir.write("b.csv", ids_csv(&b_machines));
    let out = output(run_isolate(&sim, &b_input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Run A: four devices that succeed, two offline ones still pending, and
    // the shared one, where B's isolation is already pending.
    let a_machines: Vec<Machine> =
        a_active.iter().chain(a_offline).chain(shared).cloned().collect();
    let a_input = dir.write("a.csv", ids_csv(&a_machines));
    let out = output(run_isolate(
        &sim,
        &a_input,
        &["--wait", "--poll-interval", "200ms", "--wait-timeout", "3s"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a_results = dir.path("a.results.csv");
    let statuses: Vec<String> =
        read_results(&a_results).iter().map(|r| r["status"].clone()).collect();
    assert_eq!(
        statuses,
        ["succeeded", "succeeded", "succeeded", "succeeded", "pending", "pending", "pending"]
    );
    // The pre-flight found B's isolation pending on the shared device: the
    // row follows that action, and stays marked as someone else's.
    let shared_row = &read_results(&a_results)[6];
    assert_eq!(shared_row["error_code"], "AlreadyPending", "{shared_row:?}");

    // Without --yes (and nobody to ask) nothing is sent.
    let mut cmd = mdebulk(&sim);
    cmd.args(["undo", a_results.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    assert!(!dir.path("a.results.undo.csv").exists());
    assert_eq!(api_calls(&sim, "unisolate") + api_calls(&sim, CANCEL), 0);

    let mut cmd = mdebulk(&sim);
    cmd.args(["undo", a_results.to_str().unwrap(), "--yes", "--comment", "IR-42 undo"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let undo = read_results(&dir.path("a.results.undo.csv"));
    assert_eq!(undo.len(), 7);
    for (i, row) in undo.iter().enumerate() {
        assert_eq!(row["owner"], format!("owner-{i}"), "user columns are carried");
        assert_eq!(row["machine_id"], a_machines[i].id);
    }
    for row in &undo[..4] {
        assert_eq!((row["action"].as_str(), row["status"].as_str()), ("unisolate", "submitted"));
    }
    for row in &undo[4..6] {
        assert_eq!((row["action"].as_str(), row["status"].as_str()), ("cancel", "succeeded"));
        assert_eq!(row["action_status"], "Cancelled");
    }
    assert_eq!(undo[6]["status"], "skipped");
    assert!(undo[6]["error_message"].contains("someone else"), "{:?}", undo[6]);
    assert_eq!(api_calls(&sim, "unisolate"), 4);
    assert_eq!(api_calls(&sim, CANCEL), 2);

    // On the server: releases only on A's succeeded devices, cancels only
    // of A's own pending actions; B's isolations are untouched.
    let actions = all_actions(&sim).await;
    let released: HashSet<&str> =
        actions.iter().filter(|a| a.kind == "Unisolate").map(|a| a.machine_id.as_str()).collect();
    let expected: HashSet<&str> = a_active.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(released, expected);
    assert!(
        actions
            .iter()
            .filter(|a| a.kind == "Unisolate")
            .all(|a| { a.requestor_comment.as_deref() == Some("IR-42 undo") })
    );
    let cancelled: HashSet<&str> =
        actions.iter().filter(|a| a.status == "Cancelled").map(|a| a.machine_id.as_str()).collect();
    let expected: HashSet<&str> = a_offline.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(cancelled, expected);
    for a in kinds_on(&actions, &b_machines) {
        assert_eq!(a.kind, "Isolate", "B's devices got nothing but B's isolate");
        assert_ne!(a.status, "Cancelled");
    }
    let shared_action = kinds_on(&actions, shared);
    assert_eq!(shared_action.len(), 1);
    assert_eq!(shared_action[0].status, "Pending", "B's pending isolation stays");

    // Undoing again changes nothing: what was undone is skipped.
    let mut cmd = mdebulk(&sim);
    cmd.args(["undo", a_results.to_str().unwrap(), "--yes", "--force"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again = read_results(&dir.path("a.results.undo.csv"));
    assert!(again.iter().all(|r| r["status"] == "skipped"), "{again:?}");
    assert!(again[0]["error_message"].contains("already done: unisolate"), "{:?}", again[0]);
    assert!(again[4]["error_message"].contains("already cancelled"), "{:?}", again[4]);
    assert_eq!(api_calls(&sim, "unisolate"), 4);
    assert_eq!(api_calls(&sim, CANCEL), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_refuses_offboard_row_by_row_and_releases_the_rest() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("undo-offboard");
    let machines = windows_online(&sim, 6);
    let actions = ["offboard", "isolate", "scan", "offboard", "isolate", "scan"];
    let mut csv = String::from("machine_id,action,ticket\n");
    for (m, a) in machines.iter().zip(actions) {
        csv.push_str(&format!("{},{a},IR-7\n", m.id));
    }
    let input = dir.write("mixed.csv", csv);
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--comment", "x", "--yes", "--no-progress"]).args([
        "--wait",
        "--poll-interval",
        "200ms",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let results = dir.path("mixed.results.csv");
    assert!(read_results(&results).iter().all(|r| r["status"] == "succeeded"));

    let undo_path = dir.path("undo.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["undo", results.to_str().unwrap(), "--yes", "-o", undo_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "refused rows are not undone: {}", text(&out));
    let undo = read_results(&undo_path);
    for (row, a) in undo.iter().zip(actions) {
        assert_eq!(row["ticket"], "IR-7");
        match a {
            "offboard" => {
                assert_eq!(row["status"], "refused", "{row:?}");
                assert!(row["error_message"].contains("cannot be undone"), "{row:?}");
            }
            "isolate" => assert_eq!(row["status"], "submitted", "{row:?}"),
            _ => {
                assert_eq!(row["status"], "skipped", "{row:?}");
                assert!(row["error_message"].contains("scan"), "{row:?}");
            }
        }
    }
    assert_eq!(api_calls(&sim, "unisolate"), 2);
    assert_eq!(api_calls(&sim, CANCEL), 0);
    assert_eq!(api_calls(&sim, "offboard"), 2, "only the run's own offboards");
}
