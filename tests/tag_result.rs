//! `--tag-result` and `--notify`, the real binary against the simulator
//! over loopback: the tag lands on every device the run acted on in
//! batches of 500, is visible in `GET machines`, comes off with `undo`, is
//! written once across an interrupted run and its resumes, and waits out a
//! 429 on its own lane; the webhook gets one summary, and a dead receiver
//! changes nothing.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::*;
use mdebulk::sim::{Sim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TAGS_API: &str = "POST machines/AddOrRemoveTagForMultipleMachines";

/// A simulator whose tokens may write tags (the defaults may not).
fn config(limits: &[&str]) -> SimConfig {
    let mut c = sim_config(limits);
    c.roles.push("Machine.ReadWrite.All".into());
    c
}

/// `GET /api/machines` over HTTP, as a script would: id → tags.
async fn tags_by_machine(sim: &Sim) -> std::collections::HashMap<String, Vec<String>> {
    let reply = api_json(sim, "/api/machines").await;
    reply["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let tags = m["machineTags"].as_array().cloned().unwrap_or_default();
            let tags = tags.iter().filter_map(|t| t.as_str().map(str::to_string)).collect();
            (m["id"].as_str().unwrap().to_string(), tags)
        })
        .collect()
}

/// The machines carrying `tag`.
async fn carrying(sim: &Sim, tag: &str) -> HashSet<String> {
    tags_by_machine(sim)
        .await
        .into_iter()
        .filter(|(_, tags)| tags.iter().any(|t| t == tag))
        .map(|(id, _)| id)
        .collect()
}

fn tag_calls(sim: &Sim) -> u64 {
    api_calls(sim, TAGS_API)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_reaches_every_acted_on_device_in_batches_of_500_and_undo_takes_it_off() {
    let fleet = mdebulk::sim::FleetSpec::Generate { machines: 2000 };
    let sim = sim(SimConfig { fleet, ..config(&[]) }).await;
    let dir = TempDir::new("tag-batches");
    let machines = windows_online(&sim, 520);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let results = dir.path("hosts.results.csv");
    let tag = "IR-42 contained";
    let out = output({
        let mut cmd = mdebulk(&sim);
        cmd.arg("run").arg(&input).args(["--action", "scan", "--scan-type", "quick"]);
        cmd.args(["--comment", "IR-42", "--limit", "none", "--tag-result", tag, "--summary"]);
        cmd.args(["json", "--no-progress", "-o"]).arg(&results);
        cmd
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // ⌈520/500⌉ calls, no more.
    assert_eq!(tag_calls(&sim), 2);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tag_result"]["done"], 520, "{summary}");
    assert_eq!(summary["tag_result"]["not_done"], 0);
    assert_eq!(summary["tag_result"]["calls"], 2);
    let ids: HashSet<String> = machines.iter().map(|m| m.id.clone()).collect();
    assert_eq!(carrying(&sim, tag).await, ids, "exactly the run's devices carry the tag");
    let rows = read_results(&results);
    assert_eq!(rows.len(), 520);
    assert!(rows.iter().all(|r| r["status"] == "submitted" && r["tag_result"] == tag));

    let undo = output({
        let mut cmd = mdebulk(&sim);
        cmd.arg("undo").arg(&results).args(["--yes", "--limit", "none"]);
        cmd
    })
    .await;
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    assert!(text(&undo).contains("tag \"IR-42 contained\" removed: 520 device(s), 2 call(s)"));
    assert_eq!(tag_calls(&sim), 4);
    assert!(carrying(&sim, tag).await.is_empty(), "undo took the tag off every device");
    let undone = read_results(&dir.path("hosts.results.undo.csv"));
    assert!(undone.iter().all(|r| r["tag_result"] == tag), "{:?}", undone[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_run_did_not_act_on_are_not_tagged() {
    let sim = sim(config(&[])).await;
    let dir = TempDir::new("tag-only-acted");
    let machines = windows_online(&sim, 2);
    let unknown = "0".repeat(40);
    let csv = format!("machine_id\n{}\n{unknown}\n{}\n", machines[0].id, machines[1].id);
    let input = dir.write("hosts.csv", csv);
    let results = dir.path("r.csv");
    let mut cmd = isolate(&sim, &input, &["--tag-result", "IR-7", "--no-progress", "-o"]);
    cmd.arg(&results);
    let out = output(cmd).await;
    // The unknown machine is not_found (a failed row): exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&results);
    let tagged: Vec<&str> = rows.iter().map(|r| r["tag_result"].as_str()).collect();
    assert_eq!(tagged, ["IR-7", "", "IR-7"]);
    assert_eq!(rows[1]["status"], "not_found");
    assert_eq!(tag_calls(&sim), 1);
    assert_eq!(carrying(&sim, "IR-7").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tag_or_a_token_that_cannot_tag_is_refused_before_any_call() {
    let sim = sim(config(&[])).await;
    let dir = TempDir::new("tag-refused");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 1)));
    for (tag, why) in [
        ("x".repeat(201), "201 characters"),
        ("a\u{1b}[2Jb".to_string(), "control character"),
        (" padded".to_string(), "start or end"),
    ] {
        let out = output(isolate(&sim, &input, &["--tag-result", &tag, "-o", "r.csv"])).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
        assert!(!text(&out).contains('\u{1b}'), "the value is escaped");
    }
    assert_eq!(stats(&sim).requests, 0, "nothing was sent");

    // The default roles carry Machine.Read.All, not Machine.ReadWrite.All.
    let plain = common::sim(sim_config(&[])).await;
    let input = dir.write("plain.csv", ids_csv(&windows_online(&plain, 1)));
    let results = dir.path("plain.results.csv");
    let mut cmd = isolate(&plain, &input, &["--tag-result", "IR-1", "-o"]);
    cmd.arg(&results);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Machine.ReadWrite.All (for --tag-result)"), "{}", text(&out));
    assert_eq!(stats(&plain).actions_created, 0);
    assert_eq!(api_calls(&plain, TAGS_API), 0);
}

/// Spends the tag lane's whole window (3 calls) from the test itself, so
/// the run's first tag call gets a 429.
async fn spend_the_tag_lane(sim: &Sim, machine: &str) {
    let token = access_token(&sim.url(), "tenant-1", "app-1", "x").await;
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(format!("{}/api/machines/AddOrRemoveTagForMultipleMachines", sim.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"Value": "other", "Action": "Add", "MachineIds": [machine]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_tagging_is_finished_by_the_resume_once_after_waiting_out_a_429() {
    // Three calls per API per 15 s: the run's two isolates and its
    // look-ups fit, the tag lane is spent by the test.
    let sim = sim(config(&["3/15s"])).await;
    let dir = TempDir::new("tag-resume");
    let machines = windows_online(&sim, 2);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let results = dir.path("hosts.results.csv");
    let run = |extra: &[&str]| {
        let mut cmd = isolate(&sim, &input, &["--tag-result", "IR-9", "--no-progress"]);
        cmd.args(extra).arg("-o").arg(&results);
        cmd
    };
    spend_the_tag_lane(&sim, &sim.fleet()[0].id).await;
    let first = output(run(&["--max-runtime", "3s"])).await;
    assert_eq!(first.status.code(), Some(75), "{}", text(&first));
    assert!(text(&first).contains("not tagged: 2 device(s)"), "{}", text(&first));
    let rows = read_results(&results);
    assert!(rows.iter().all(|r| r["status"] == "submitted" && r["tag_result"].is_empty()));
    assert!(carrying(&sim, "IR-9").await.is_empty());
    let throttled = |sim: &Sim| stats(sim).by_api[TAGS_API].throttled;
    assert!(throttled(&sim) >= 1, "the run's tag call met the spent window");
    let admitted = |sim: &Sim| stats(sim).by_api[TAGS_API].admitted;
    assert_eq!(admitted(&sim), 3);

    // The resume sends no action again, waits the 429 out and tags both.
    let second = output(run(&["--resume"])).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(text(&second).contains("tagged \"IR-9\": 2 device(s), 1 call(s)"), "{}", text(&second));
    assert_eq!(stats(&sim).actions_created, 2);
    assert_eq!(admitted(&sim), 4);
    let ids: HashSet<String> = machines.iter().map(|m| m.id.clone()).collect();
    assert_eq!(carrying(&sim, "IR-9").await, ids);
    assert!(read_results(&results).iter().all(|r| r["tag_result"] == "IR-9"));

    // Resumed again, nothing is tagged twice.
    let calls = tag_calls(&sim);
    let third = output(run(&["--resume"])).await;
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(text(&third).contains("tagged \"IR-9\": 2 device(s), 0 call(s)"), "{}", text(&third));
    assert_eq!(tag_calls(&sim), calls);
    assert!(read_results(&results).iter().all(|r| r["tag_result"] == "IR-9"));
}

/// A webhook receiver on a loopback port: answers every POST with
/// `status` and keeps the bodies.
async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/SECRET-PART-of-the-url", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then a body of content-length bytes.
                let body = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0usize);
                        if buf.len() >= end + 4 + len {
                            break String::from_utf8_lossy(&buf[end + 4..end + 4 + len])
                                .to_string();
                        }
                    }
                };
                kept.lock().unwrap().push(body);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_one_summary_with_the_counts() {
    let sim = sim(config(&[])).await;
    let dir = TempDir::new("notify");
    let machines = windows_online(&sim, 3);
    let csv = format!("{}{},nobody\n", ids_csv(&machines), "0".repeat(40));
    let input = dir.write("hosts.csv", csv);
    let (url, bodies) = receiver(200).await;
    let mut cmd = isolate(&sim, &input, &["--no-progress", "-o", "r.csv", "--tag-result", "T"]);
    cmd.current_dir(dir.path("")).env("MDEBULK_NOTIFY_URL", &url);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let message: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    let text_sent = message["text"].as_str().unwrap();
    assert!(text_sent.starts_with("mdebulk run: 4 row(s)"), "{text_sent}");
    assert!(text_sent.contains("submitted       3"), "{text_sent}");
    assert!(text_sent.contains("not_found       1"), "{text_sent}");
    assert!(text_sent.contains("tagged \"T\": 3 device(s)"), "{text_sent}");
    assert!(text_sent.ends_with("exit code 1"), "{text_sent}");
    assert_eq!(message.as_object().unwrap().len(), 1, "only the text: {message}");
    assert!(!text(&out).contains("SECRET-PART"), "the URL is never shown whole: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_refusing_receiver_leaves_the_exit_code_and_the_run_alone() {
    let sim = sim(config(&[])).await;
    let dir = TempDir::new("notify-dead");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    // A port nobody listens on any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks/SECRET-PART", l.local_addr().unwrap())
    };
    let (refusing, bodies) = receiver(403).await;
    for (n, url) in [closed, refusing].iter().enumerate() {
        let results = dir.path(&format!("r{n}.csv"));
        let mut cmd = isolate(&sim, &input, &["--no-progress", "--notify", url, "-o"]);
        cmd.arg(&results).arg("--force");
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let said = text(&out);
        assert_eq!(said.matches("could not be delivered").count(), 1, "{said}");
        assert!(!said.contains("SECRET-PART"), "{said}");
        assert_eq!(read_results(&results).len(), 2);
    }
    // A refusal is final: one attempt, not three.
    assert_eq!(bodies.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_prints_a_json_summary() {
    let sim = sim(config(&[])).await;
    let dir = TempDir::new("devices-json");
    let report = dir.path("all.csv");
    let out = output({
        let mut cmd = mdebulk(&sim);
        cmd.args(["devices", "--summary", "json", "-o"]).arg(&report);
        cmd
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["command"], "devices");
    assert_eq!(v["machines"], sim.fleet().len());
    assert_eq!(v["listed"], v["machines"]);
    assert_eq!(v["isolated"], 0);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["output"], report.display().to_string());

    // With the report on standard output, the summary goes to stderr.
    let out = output({
        let mut cmd = mdebulk(&sim);
        cmd.args(["devices", "--isolated", "--summary", "json"]);
        cmd
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let last = stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!((v["listed"].as_u64(), v["output"].is_null()), (Some(0), true));
}
