//! Runs whose devices come from an Advanced Hunting query (`--query`,
//! `--query-file`): the real binary asks the simulator's Microsoft Graph
//! listener once, over loopback, with a Graph token, and acts on the
//! result's `DeviceId`s (and `SHA1`s) as ordinary rows. Calls are counted,
//! never timed.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use mdebulk::sim::{FleetSpec, Sim, SimConfig};
use serde_json::{Value, json};

/// The stats key of Graph's hunting API.
const HUNTING: &str = "POST security/runHuntingQuery";

/// A simulator of 200 machines with the documented quotas.
async fn small_sim() -> Sim {
    sim(SimConfig {
        fleet: FleetSpec::Generate { machines: 200 },
        ..sim_config(&["100/60s", "1500/3600s"])
    })
    .await
}

/// A token from the simulator's login for `scope`, as the binary's
/// identity (`tenant-1`, `app-1`) asks it.
async fn token_for(sim: &Sim, scope: &str) -> String {
    let http = reqwest::Client::new();
    scoped_token(&http, &sim.url(), "tenant-1", "app-1", "s3cret-value-never-logged", scope).await
}

/// A Graph token.
async fn graph_token(sim: &Sim) -> String {
    token_for(sim, "https://graph.microsoft.com/.default").await
}

/// `POST runHuntingQuery` with `token`: the status and the body.
async fn hunt(sim: &Sim, token: &str, query: &str) -> (u16, Value, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1.0/security/runHuntingQuery", sim.graph_url()))
        .bearer_auth(token)
        .json(&json!({ "Query": query }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap_or(Value::Null), retry_after)
}

/// The fleet as the API lists it (`GET machines`), with a token.
async fn machines_through_the_api(sim: &Sim) -> Vec<Value> {
    api_json(sim, "/api/machines").await["value"].as_array().unwrap().clone()
}

/// Replaces a machine's tags, or the files it has seen, through the hooks.
async fn set_hook(sim: &Sim, id: &str, what: &str, values: &[&str]) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/machines/{id}/{what}", sim.url()))
        .json(&values)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// `mdebulk run --query KQL --action ACTION --comment IR -o OUT` plus `extra`.
fn query_run(
    sim: &Sim,
    kql: &str,
    action: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Command {
    let mut cmd = mdebulk(sim);
    cmd.env("MDE_GRAPH_URL", sim.graph_url())
        .args(["run", "--query", kql, "--action", action, "--comment", "IR"])
        .args(["--no-progress", "-o", out.to_str().unwrap()])
        .args(extra);
    cmd
}

/// The `machine_id`s of results rows, as a set.
fn ids_of(rows: &[HashMap<String, String>]) -> BTreeSet<String> {
    rows.iter().map(|r| r["machine_id"].to_ascii_lowercase()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_isolates_exactly_the_matching_devices_and_a_resume_does_not_ask_again() {
    let sim = small_sim().await;
    let dir = TempDir::new("query");
    let kql = "DeviceInfo\n| where OSPlatform == 'WindowsServer2019' and MachineGroup =~ 'servers'\n    and SensorHealthState == \"Active\"";
    // The same devices, from the fleet as the API lists it.
    let want: BTreeSet<String> = machines_through_the_api(&sim)
        .await
        .iter()
        .filter(|m| {
            m["osPlatform"] == "WindowsServer2019"
                && m["rbacGroupName"].as_str().unwrap().eq_ignore_ascii_case("Servers")
                && m["healthStatus"] == "Active"
        })
        .map(|m| m["id"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(want.len() >= 2, "the fleet has servers to isolate: {want:?}");

    let out_path = dir.path("servers.results.csv");
    let out = output(query_run(&sim, kql, "isolate", &out_path, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    // DeviceInfo holds two reports per device: each device is one row.
    assert_eq!(rows.len(), want.len(), "{}", text(&out));
    assert_eq!(ids_of(&rows), want);
    let found_by = &rows[0]["found_by"];
    assert!(found_by.starts_with("query:") && found_by.len() == 18, "{found_by}");
    for r in &rows {
        assert_eq!(r["status"], "submitted");
        assert_eq!(&r["found_by"], found_by);
    }
    assert_eq!(api_calls(&sim, HUNTING), 1);
    assert_eq!(api_calls(&sim, "isolate"), want.len() as u64);
    let targets = dir.path("servers.results.targets.csv");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&targets).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a file listing devices is the owner's");
    }

    // More servers match now; a resume acts on the rows it began with and
    // asks Graph nothing.
    let offline_server = sim.fleet().into_iter().find(|m| {
        m.os_platform.as_deref() == Some("WindowsServer2019")
            && m.extra["rbacGroupName"] == "Servers"
            && m.health_status.as_deref() != Some("Active")
    });
    if let Some(m) = &offline_server {
        let r = reqwest::Client::new()
            .post(format!("{}/_sim/machines/{}/online", sim.url(), m.id))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let out = output(query_run(&sim, kql, "isolate", &out_path, &["--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ids_of(&read_results(&out_path)), want);
    assert_eq!(api_calls(&sim, HUNTING), 1, "a resume reads its targets file");
    assert_eq!(api_calls(&sim, "isolate"), want.len() as u64, "nothing was sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_file_dry_run_lists_the_devices_and_sends_no_action() {
    let sim = small_sim().await;
    let dir = TempDir::new("query-dry");
    let machines = windows_online(&sim, 3);
    for m in &machines[..2] {
        set_hook(&sim, &m.id, "tags", &["IR-7731", "Finance"]).await;
    }
    set_hook(&sim, &machines[2].id, "tags", &["IR-77310"]).await;
    // A BOM, a comment, a term that must match whole, and a collapse.
    let file = dir.write(
        "hunt.kql",
        "\u{feff}// devices tagged by the incident\nDeviceInfo\n| where DeviceManualTags has 'ir-7731'\n| summarize arg_max(Timestamp, *) by DeviceId\n",
    );
    let plan = dir.path("plan.csv");
    let mut cmd = mdebulk(&sim);
    cmd.env("MDE_GRAPH_URL", sim.graph_url())
        .args(["run", "--query-file", file.to_str().unwrap(), "--action", "isolate"])
        .args(["--comment", "IR", "--dry-run", "--no-progress", "-o", plan.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&plan);
    let want: BTreeSet<String> = machines[..2].iter().map(|m| m.id.to_ascii_lowercase()).collect();
    assert_eq!(ids_of(&rows), want);
    for r in &rows {
        assert_eq!(r["status"], "planned");
    }
    assert_eq!(api_calls(&sim, HUNTING), 1);
    assert_eq!(stats(&sim).actions_created, 0);

    // The same query on standard input.
    let plan2 = dir.path("plan2.csv");
    let mut cmd = mdebulk(&sim);
    cmd.env("MDE_GRAPH_URL", sim.graph_url())
        .args(["run", "--query-file", "-", "--action", "isolate", "--comment", "IR"])
        .args(["--dry-run", "--no-progress", "-o", plan2.to_str().unwrap()])
        .stdin(std::fs::File::open(&file).unwrap());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ids_of(&read_results(&plan2)), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_without_device_ids_is_refused_before_any_action() {
    let sim = small_sim().await;
    let dir = TempDir::new("query-no-id");
    let out_path = dir.path("out.csv");
    let out = output(query_run(
        &sim,
        "DeviceInfo | project DeviceName, OSPlatform | take 5",
        "isolate",
        &out_path,
        &[],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("no DeviceId column") && all.contains("\"DeviceName\", \"OSPlatform\""),
        "{all}"
    );
    assert_eq!(api_calls(&sim, HUNTING), 1);
    assert_eq!(stats(&sim).actions_created, 0);
    assert!(!out_path.exists(), "no results file for a run that sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_quarantine_takes_each_rows_file_from_the_query() {
    let sim = small_sim().await;
    let dir = TempDir::new("query-sha1");
    let (f1, f2) =
        ("0a1b2c3d4e5f60718293a4b5c6d7e8f901234567", "f0e1d2c3b4a5968778695a4b3c2d1e0f12345678");
    let machines = windows_online(&sim, 2);
    set_hook(&sim, &machines[0].id, "files", &[f1, f2]).await;
    set_hook(&sim, &machines[1].id, "files", &[f2]).await;
    let kql =
        format!("DeviceFileEvents | where SHA1 in ('{f1}', '{f2}') | distinct DeviceId, SHA1");
    let out_path = dir.path("sq.csv");
    let out = output(query_run(&sim, &kql, "stop-and-quarantine", &out_path, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    let mut pairs: Vec<(String, String)> =
        rows.iter().map(|r| (r["machine_id"].to_ascii_lowercase(), r["sha1"].clone())).collect();
    pairs.sort();
    let mut want = vec![
        (machines[0].id.to_ascii_lowercase(), f1.to_string()),
        (machines[0].id.to_ascii_lowercase(), f2.to_string()),
        (machines[1].id.to_ascii_lowercase(), f2.to_string()),
    ];
    want.sort();
    assert_eq!(pairs, want, "one row per device and file");
    // The service holds one stop-and-quarantine per device at a time: the
    // device with two files has its second row already_pending, to replay
    // once the first has finished.
    let statuses = status_counts(&rows);
    assert_eq!(statuses.get("submitted"), Some(&2), "{rows:?}");
    assert_eq!(statuses.get("already_pending"), Some(&1), "{rows:?}");
    let pending = rows.iter().find(|r| r["status"] == "already_pending").unwrap();
    assert_eq!(pending["machine_id"].to_ascii_lowercase(), machines[0].id.to_ascii_lowercase());
    assert_eq!(api_calls(&sim, "StopAndQuarantineFile"), 3);

    // Without a SHA1 column (and no --sha1), nothing is sent.
    let out_path = dir.path("sq2.csv");
    let kql = format!("DeviceFileEvents | where SHA1 == '{f1}' | distinct DeviceId");
    let out = output(query_run(&sim, &kql, "stop-and-quarantine", &out_path, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no SHA1 column"), "{}", text(&out));
    assert_eq!(api_calls(&sim, "StopAndQuarantineFile"), 3);
    // With --sha1, the file is that one on every device found.
    let out =
        output(query_run(&sim, &kql, "stop-and-quarantine", &out_path, &["--sha1", f1])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&out_path);
    assert_eq!(ids_of(&rows), BTreeSet::from([machines[0].id.to_ascii_lowercase()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_construct_gets_graphs_error_shape_a_clear_message_and_exit_2() {
    let sim = small_sim().await;
    let dir = TempDir::new("query-bad");
    let kql = "DeviceInfo | extend Risk = 1 | project DeviceId";
    let (status, body, _) = hunt(&sim, &graph_token(&sim).await, kql).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("The tabular operator 'extend' is not supported"), "{message}");
    for key in ["date", "request-id", "client-request-id"] {
        assert!(body["error"]["innerError"][key].is_string(), "{body}");
    }

    let out_path = dir.path("out.csv");
    let out = output(query_run(&sim, kql, "isolate", &out_path, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("the hunting query failed; nothing was sent")
            && all.contains("HTTP 400 BadRequest")
            && all.contains("'extend' is not supported")
            && all.contains("refused the query as written"),
        "{all}"
    );
    assert_eq!(stats(&sim).actions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_refuses_an_mde_token_and_the_api_a_graph_token() {
    let sim = small_sim().await;
    let mde = token_for(&sim, "https://api.securitycenter.microsoft.com/.default").await;
    let graph = graph_token(&sim).await;
    let (status, body, _) = hunt(&sim, &mde, "DeviceInfo | take 1").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(body["error"]["message"].as_str().unwrap().contains("Invalid audience"));
    let (status, _, _) = hunt(&sim, "", "DeviceInfo | take 1").await;
    assert_eq!(status, 401);
    let (status, body, _) = hunt(&sim, &graph, "DeviceInfo | take 1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    let r = reqwest::Client::new()
        .get(format!("{}/api/machines", sim.url()))
        .bearer_auth(&graph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a Graph token is no token of the API");
    // Each token carries its own service's permissions only.
    let roles = |t: &str| mdebulk::api::auth::token_permissions(t).unwrap();
    assert_eq!(roles(&graph), ["ThreatHunting.Read.All"]);
    assert!(!roles(&mde).iter().any(|r| r == "ThreatHunting.Read.All"));
    assert!(roles(&mde).iter().any(|r| r == "Machine.Isolate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_threat_hunting_the_run_names_the_permission_and_sends_nothing() {
    let sim = sim(SimConfig {
        fleet: FleetSpec::Generate { machines: 50 },
        roles: vec!["Machine.Isolate".into(), "Machine.Read.All".into()],
        ..sim_config(&["100/60s", "1500/3600s"])
    })
    .await;
    let dir = TempDir::new("query-403");
    let out_path = dir.path("out.csv");
    let out =
        output(query_run(&sim, "DeviceInfo | distinct DeviceId", "isolate", &out_path, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("HTTP 403") && all.contains("ThreatHunting.Read.All"), "{all}");
    assert_eq!(stats(&sim).actions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_graph_is_waited_out_and_the_query_asked_again() {
    // One call per API every 2 s: the test's own query spends Graph's.
    let sim =
        sim(SimConfig { fleet: FleetSpec::Generate { machines: 50 }, ..sim_config(&["1/2s"]) })
            .await;
    let dir = TempDir::new("query-429");
    let target = &windows_online(&sim, 1)[0];
    set_hook(&sim, &target.id, "tags", &["IR-429"]).await;
    let kql = "DeviceInfo | where DeviceManualTags has 'IR-429' | distinct DeviceId";
    let (status, _, _) = hunt(&sim, &graph_token(&sim).await, kql).await;
    assert_eq!(status, 200);
    let (status, body, retry_after) = hunt(&sim, &graph_token(&sim).await, kql).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert!(retry_after.is_some(), "a 429 says when to come back");

    let out_path = dir.path("out.csv");
    let out = output(query_run(&sim, kql, "isolate", &out_path, &["--limit", "none"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let by = stats(&sim).by_api[HUNTING].clone();
    assert!(by.throttled >= 2, "the run met a 429 too: {by:?}");
    assert_eq!(by.admitted, 2, "the test's query and the run's, once the wait was over");
    assert_eq!(ids_of(&read_results(&out_path)), BTreeSet::from([target.id.to_ascii_lowercase()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_points_the_query_at_its_own_graph() {
    let dir = TempDir::new("query-simulate");
    let plan = dir.path("plan.csv");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "run",
            "--simulate",
            "--query",
            "DeviceInfo | where OSPlatform == 'Linux' | distinct DeviceId",
        ])
        .args(["--action", "isolate", "--comment", "rehearsal", "--dry-run", "--no-progress"])
        .args(["-o", plan.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&plan);
    // The in-process simulator's fleet of 1000: one device in ten is Linux.
    assert!(!rows.is_empty() && rows.len() < 200, "{}", rows.len());
    assert!(rows.iter().all(|r| r["status"] == "planned"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_speaks_tls_when_the_simulator_does() {
    let sim = Sim::start(SimConfig {
        listen: "127.0.0.1:0".into(),
        fleet: FleetSpec::Generate { machines: 20 },
        tls: Some(mdebulk::sim::SimTls::Generate),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert!(sim.graph_url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem_bundle(sim.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only(ca).no_proxy().build().unwrap();
    let scope = "https://graph.microsoft.com/.default";
    let token = scoped_token(&http, &sim.url(), "t1", "app", "x", scope).await;
    let reply: Value = http
        .post(format!("{}/v1.0/security/runHuntingQuery", sim.graph_url()))
        .bearer_auth(&token)
        .json(&json!({"Query": "DeviceInfo | distinct DeviceId"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["results"].as_array().unwrap().len(), 20);
    assert_eq!(reply["schema"], json!([{"name": "DeviceId", "type": "String"}]));
    assert!(reply["@odata.context"].as_str().unwrap().starts_with(&sim.graph_url()));
}
