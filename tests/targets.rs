//! Runs without an input file: `--tag`, `--tag --tag-prefix` and
//! `--has-file` ask the simulator once for their machines and act on them
//! as ordinary rows, each recording how it was found (`found_by`). Calls
//! are counted, never timed.

mod common;

use common::*;
use mdebulk::api::model::Machine;
use mdebulk::sim::Sim;

/// Replaces the files a machine has seen through the simulator's hook.
async fn set_files(sim: &Sim, id: &str, files: &[&str]) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/machines/{id}/files", sim.url()))
        .json(&files)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Ids of `machines`, sorted, for comparing sets.
fn sorted_ids(machines: &[Machine]) -> Vec<String> {
    let mut ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    ids
}

/// Ids in the results rows, sorted.
fn result_ids(rows: &[std::collections::HashMap<String, String>]) -> Vec<String> {
    let mut ids: Vec<String> = rows.iter().map(|r| r["machine_id"].clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_targets_exactly_its_machines_and_a_resume_does_not_ask_again() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("tag");
    let machines = windows_online(&sim, 5);
    let (tagged, others) = machines.split_at(3);
    for m in tagged {
        set_tags(&sim, &m.id, &["IR-7731-Compromised"]).await;
    }
    // A longer tag is no match without --tag-prefix.
    set_tags(&sim, &others[0].id, &["IR-7731-Compromised-Later"]).await;
    let out_path = dir.path("tag.results.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--tag", "ir-7731-compromised", "--action", "isolate", "--comment", "IR"])
        .args(["--no-progress", "-o", out_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    assert_eq!(result_ids(&rows), sorted_ids(tagged), "{}", text(&out));
    for r in &rows {
        assert_eq!(r["status"], "submitted");
        assert_eq!(r["found_by"], "tag:ir-7731-compromised");
        let machine = tagged.iter().find(|m| m.id == r["machine_id"]).unwrap();
        assert_eq!(Some(r["device_name"].as_str()), machine.computer_dns_name.as_deref());
    }
    assert_eq!(api_calls(&sim, "GET machines/findbytag"), 1);
    assert_eq!(api_calls(&sim, "isolate"), 3);
    assert!(
        dir.path("tag.results.targets.csv").exists(),
        "the targets are kept beside the results"
    );

    // The tag spreads; resuming the finished run acts on the rows it began
    // with and asks for nothing.
    set_tags(&sim, &others[1].id, &["IR-7731-Compromised"]).await;
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--tag", "ir-7731-compromised", "--action", "isolate", "--comment", "IR"])
        .args(["--no-progress", "--resume", "-o", out_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(result_ids(&read_results(&out_path)), sorted_ids(tagged));
    assert_eq!(api_calls(&sim, "GET machines/findbytag"), 1, "a resume reads its targets file");
    assert_eq!(api_calls(&sim, "isolate"), 3, "nothing was sent again");

    // A new run over the same results without --force is refused before
    // any call, and its targets file is left as it was.
    let before = std::fs::read(dir.path("tag.results.targets.csv")).unwrap();
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--tag", "ir-7731-compromised", "--action", "isolate", "--comment", "IR"])
        .args(["--no-progress", "-o", out_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(api_calls(&sim, "GET machines/findbytag"), 1);
    assert_eq!(std::fs::read(dir.path("tag.results.targets.csv")).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_prefix_dry_run_lists_every_machine_it_would_act_on_and_sends_nothing() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("tag-prefix");
    let machines = windows_online(&sim, 4);
    set_tags(&sim, &machines[0].id, &["Incident-42"]).await;
    set_tags(&sim, &machines[1].id, &["incident-43", "Finance"]).await;
    set_tags(&sim, &machines[2].id, &["Finance"]).await;
    set_tags(&sim, &machines[3].id, &["Old-Incident-1"]).await;
    let out_path = dir.path("plan.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--tag", "Incident-", "--tag-prefix", "--action", "isolate"]).args([
        "--comment",
        "IR",
        "--dry-run",
        "--no-progress",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    assert_eq!(result_ids(&rows), sorted_ids(&machines[..2]));
    for r in &rows {
        assert_eq!(r["status"], "planned");
        assert_eq!(r["found_by"], "tag-prefix:Incident-");
    }
    assert_eq!(api_calls(&sim, "GET machines/findbytag"), 1);
    assert_eq!(stats(&sim).actions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_targets_the_machines_that_saw_it_and_is_the_default_sha1_to_quarantine() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("has-file");
    let sha1 = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let machines = windows_online(&sim, 4);
    set_files(&sim, &machines[1].id, &[sha1]).await;
    set_files(&sim, &machines[3].id, &[sha1]).await;
    let out_path = dir.path("sq.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--has-file", &sha1.to_ascii_uppercase(), "--action", "stop-and-quarantine"])
        .args(["--comment", "IR", "--no-progress", "-o", out_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    let want = vec![machines[1].clone(), machines[3].clone()];
    assert_eq!(result_ids(&rows), sorted_ids(&want));
    for r in &rows {
        assert_eq!(r["status"], "submitted", "{r:?}");
        assert_eq!(r["found_by"], format!("has-file:{sha1}"));
    }
    assert_eq!(api_calls(&sim, "GET files/{id}/machines"), 1);
    assert_eq!(api_calls(&sim, "StopAndQuarantineFile"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_need_a_results_file_and_exclude_an_input_file() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("targets-usage");
    let input = dir.write("hosts.csv", "machine_id\nabc\n");
    for args in [
        vec!["run", "--tag", "X", "--action", "isolate", "--comment", "c"],
        vec!["run", "--tag", "X", "--action", "isolate", "--comment", "c", "-o", "-"],
        vec!["run", input.to_str().unwrap(), "--tag", "X", "--action", "isolate", "--comment", "c"],
        vec!["run", "--has-file", "abc", "--action", "isolate", "--comment", "c", "-o", "x.csv"],
        vec!["run", "--tag-prefix", "--action", "isolate", "--comment", "c", "-o", "x.csv"],
    ] {
        let mut cmd = mdebulk(&sim);
        cmd.current_dir(dir.path("")).args(&args);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    assert_eq!(stats(&sim).requests, 0, "a usage error sends nothing");
}
