//! `mdebulk devices`: containment now, derived from each machine's latest
//! completed actions, against the real simulator. Calls are counted.

mod common;

use std::collections::HashMap;

use common::*;
use mdebulk::sim::{FleetSpec, Sim, SimConfig};

/// `mdebulk run FILE --action ACTION --comment c --wait` as `app`.
async fn act(sim: &Sim, dir: &TempDir, name: &str, ids: &[&str], action: &str, app: &str) {
    let mut csv = String::from("machine_id\n");
    for id in ids {
        csv.push_str(id);
        csv.push('\n');
    }
    let input = dir.write(&format!("{name}.csv"), csv);
    let mut cmd = mdebulk(sim);
    cmd.env("AZURE_CLIENT_ID", app)
        .arg("run")
        .arg(&input)
        .args(["--action", action, "--comment", name, "--no-progress"])
        .args(["--wait", "--poll-interval", "100ms"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
}

/// The action id each results file recorded, by machine id.
fn action_ids(path: &std::path::Path) -> HashMap<String, String> {
    read_results(path)
        .into_iter()
        .map(|r| (r["machine_id"].clone(), r["action_id"].clone()))
        .collect()
}

/// `mdebulk devices` with `flags`, into `file`; returns its rows.
async fn devices(
    sim: &Sim,
    dir: &TempDir,
    file: &str,
    flags: &[&str],
) -> Vec<HashMap<String, String>> {
    let path = dir.path(file);
    let mut cmd = mdebulk(sim);
    cmd.arg("devices").args(flags).arg("-o").arg(&path);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    read_results(&path)
}

fn ids_of(rows: &[HashMap<String, String>]) -> Vec<String> {
    let mut ids: Vec<String> = rows.iter().map(|r| r["machine_id"].clone()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_isolated_lists_exactly_what_is_isolated_now_with_the_actions_that_did_it() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("devices");
    let m = windows_online(&sim, 6);
    let id: Vec<&str> = m.iter().map(|m| m.id.as_str()).collect();

    // Run 1 isolates four; run 2 releases one of them and restricts two
    // (one isolated, one not); another app isolates a fifth.
    act(&sim, &dir, "first", &id[0..4], "isolate", "app-1").await;
    act(&sim, &dir, "release", &id[1..2], "unisolate", "app-1").await;
    act(&sim, &dir, "restrict", &[id[2], id[4]], "restrict", "app-1").await;
    act(&sim, &dir, "other", &id[5..6], "isolate", "app-2").await;
    let first = action_ids(&dir.path("first.results.csv"));
    let other = action_ids(&dir.path("other.results.csv"));
    let restrict = action_ids(&dir.path("restrict.results.csv"));

    let (machines_before, actions_before) =
        (api_calls(&sim, "GET machines"), api_calls(&sim, "GET machineactions"));
    let rows = devices(&sim, &dir, "isolated.csv", &["--isolated"]).await;
    assert_eq!(api_calls(&sim, "GET machines") - machines_before, 1, "one machine listing");
    assert_eq!(api_calls(&sim, "GET machineactions") - actions_before, 1, "one action listing");
    assert_eq!(ids_of(&rows), sorted(&[id[0], id[2], id[3], id[5]]));
    for r in &rows {
        let mid = &r["machine_id"];
        let want = first.get(mid).or(other.get(mid)).unwrap();
        assert_eq!(&r["isolation_action_id"], want, "{r:?}");
        assert_eq!(r["isolated"], "yes");
        assert!(r["isolated_at"].ends_with('Z'), "{r:?}");
        assert!(!r["isolated_by"].is_empty(), "{r:?}");
        let comment = if first.contains_key(mid) { "first" } else { "other" };
        assert_eq!(r["isolation_comment"], comment);
    }
    let m2 = rows.iter().find(|r| r["machine_id"] == id[2]).unwrap();
    assert_eq!(
        (m2["restricted"].as_str(), &m2["restriction_action_id"]),
        ("yes", &restrict[id[2]])
    );

    let rows = devices(&sim, &dir, "restricted.csv", &["--restricted"]).await;
    assert_eq!(ids_of(&rows), sorted(&[id[2], id[4]]));
    let rows = devices(&sim, &dir, "all.csv", &[]).await;
    let released = rows.iter().find(|r| r["machine_id"] == id[1]).unwrap();
    assert_eq!(released["isolated"], "no");
    assert_eq!(released["isolation_comment"], "release", "the release is what decided");

    // The report is a run input: releasing what it lists.
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(dir.path("isolated.csv"));
    cmd.args(["--action", "unisolate", "--comment", "all clear", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let released = read_results(&dir.path("isolated.results.csv"));
    assert_eq!(status_counts(&released).get("submitted"), Some(&4), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_costs_a_listing_per_page_never_a_call_per_device() {
    // Pages of 7 entities: 30 machines are 5 pages, 10 actions 2.
    let config = SimConfig {
        fleet: FleetSpec::Generate { machines: 30 },
        page_size: Some(7),
        ..sim_config(&["100/60s", "1500/3600s"])
    };
    let sim = sim(config).await;
    let dir = TempDir::new("devices-pages");
    let m = windows_online(&sim, 5);
    let ids: Vec<&str> = m.iter().map(|m| m.id.as_str()).collect();
    act(&sim, &dir, "iso", &ids, "isolate", "app-1").await;
    act(&sim, &dir, "rel", &ids, "unisolate", "app-1").await;
    let before = (api_calls(&sim, "GET machines"), api_calls(&sim, "GET machineactions"));
    let rows = devices(&sim, &dir, "all.csv", &[]).await;
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r["isolated"] == "no"), "every isolation was released");
    assert_eq!(api_calls(&sim, "GET machines") - before.0, 5);
    assert_eq!(api_calls(&sim, "GET machineactions") - before.1, 2);
    let tagged = devices(&sim, &dir, "none.csv", &["--tag", "no-such-tag-anywhere"]).await;
    assert!(tagged.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_satisfied_sends_nothing_for_devices_already_in_the_asked_state() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("skip-satisfied");
    let m = windows_online(&sim, 6);
    let id: Vec<&str> = m.iter().map(|m| m.id.as_str()).collect();
    act(&sim, &dir, "first", &id[0..3], "isolate", "app-1").await;
    let first = action_ids(&dir.path("first.results.csv"));

    // The rerun over an overlapping queue: three are isolated already.
    let isolates = api_calls(&sim, "isolate");
    let input = dir.write("queue.csv", format!("machine_id\n{}\n", id[0..5].join("\n")));
    let flags = ["--skip-satisfied", "--no-progress", "--wait", "--poll-interval", "100ms"];
    let out = output(isolate(&sim, &input, &flags)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate") - isolates, 2, "only the two not isolated are sent");
    let rows = read_results(&dir.path("queue.results.csv"));
    for r in &rows[0..3] {
        assert_eq!(r["status"], "already_done", "{r:?}");
        assert_eq!(r["action_id"], first[&r["machine_id"]], "the action that isolated it");
        assert!(r["error_message"].contains("already isolated"), "{r:?}");
    }
    assert!(rows[3..].iter().all(|r| r["status"] == "succeeded"), "{rows:?}");

    // Releasing a device never isolated is satisfied too: no call.
    let unisolates = api_calls(&sim, "unisolate");
    let input = dir.write("free.csv", format!("machine_id\n{}\n", id[5]));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "unisolate", "--comment", "x"]);
    cmd.args(["--skip-satisfied", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "unisolate"), unisolates);
    assert_eq!(read_results(&dir.path("free.results.csv"))[0]["status"], "already_done");

    // Undo of the rerun releases what it isolated, not what it skipped.
    let mut cmd = mdebulk(&sim);
    cmd.arg("undo").arg(dir.path("queue.results.csv")).args(["--yes", "--comment", "undo"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(api_calls(&sim, "unisolate") - unisolates, 2, "{}", text(&out));
}
