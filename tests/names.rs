//! Device names, Entra ID device ids and IP addresses resolved before any
//! action, the pre-flight, the OS check and the dry run: the real binary
//! against the real simulator over loopback HTTP. Costs are asserted by
//! counting calls in the simulator's stats, never by wall-clock time (the
//! estimate test compares two durations the binary itself reports).

mod common;

use std::time::Duration;

use common::*;
use mdebulk::api::action::ActionKind;
use mdebulk::api::model::Machine;
use mdebulk::sim::fleet::{twin_count, twin_of};
use mdebulk::sim::{Sim, SimConfig};

/// Calls to every action API together.
fn action_calls(sim: &Sim) -> u64 {
    ActionKind::ALL.iter().map(|a| api_calls(sim, a.path_segment())).sum()
}

/// Parses a duration as the summary prints it: `4.1s`, `2m05s`, `1h02m`.
fn parse_human(s: &str) -> Duration {
    let s = s.trim();
    if let Some((h, m)) = s.split_once('h') {
        let m = m.trim_end_matches('m');
        return Duration::from_secs(
            h.parse::<u64>().unwrap() * 3600 + m.parse::<u64>().unwrap() * 60,
        );
    }
    if let Some((m, sec)) = s.split_once('m') {
        let sec = sec.trim_end_matches('s');
        return Duration::from_secs(m.parse::<u64>().unwrap() * 60 + sec.parse::<u64>().unwrap());
    }
    Duration::from_secs_f64(s.trim_end_matches('s').parse::<f64>().unwrap())
}

/// The summary line starting with `prefix`, without it.
fn summary_value<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in the summary:\n{out}"))
}

/// The fleet's first online machine running `os`.
fn first_with_os(fleet: &[Machine], os: &str) -> Machine {
    fleet
        .iter()
        .find(|m| {
            m.os_platform.as_deref() == Some(os) && m.health_status.as_deref() == Some("Active")
        })
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_by_fqdn_short_name_and_any_case_and_twins_are_ambiguous() {
    let sim = sim(sim_config(&[])).await;
    let fleet = sim.fleet();
    let n = fleet.len();
    let t = twin_of(n, 0);
    let stale = &fleet[n - twin_count(n)];
    assert_eq!(stale.computer_dns_name, fleet[t].computer_dns_name, "the fleet's first twin");
    let dir = TempDir::new("names");
    let input = dir.write(
        "names.csv",
        format!(
            "device_name,owner\nhost-00001.contoso.test,a\nHOST-00002,b\nHost-00003.Contoso.Test,c\nhost-{t:05}.contoso.test,d\nhost-{t:05},e\nno-such-host,f\nhost-00001.fabrikam.test,g\n"
        ),
    );
    let mut cmd = mdebulk(&sim);
    cmd.args([
        "run",
        input.to_str().unwrap(),
        "--action",
        "isolate",
        "--comment",
        "IR-7",
        "--no-progress",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "ambiguous and not_found rows fail: {}", text(&out));
    let rows = read_results(&dir.path("names.results.csv"));
    assert_eq!(rows.len(), 7);
    for (row, i) in rows.iter().zip([1, 2, 3]) {
        assert_eq!(row["status"], "submitted", "{row:?}");
        assert_eq!(row["machine_id"], fleet[i].id, "the resolved id goes into machine_id");
        assert_eq!(row["action_id"].len(), 36);
    }
    // The input's device_name column is the runner's in the results: the
    // API's spelling of each machine acted on, the row's own where no single
    // machine matched.
    let names: Vec<&str> = rows.iter().map(|r| r["device_name"].as_str()).collect();
    let twin = format!("host-{t:05}.contoso.test");
    let short = format!("host-{t:05}");
    assert_eq!(
        names,
        [
            "host-00001.contoso.test",
            "host-00002.contoso.test",
            "host-00003.contoso.test",
            twin.as_str(),
            short.as_str(),
            "no-such-host",
            "host-00001.fabrikam.test"
        ]
    );
    for row in &rows[3..5] {
        assert_eq!(row["status"], "ambiguous", "{row:?}");
        assert_eq!(row["machine_id"], "");
        let msg = &row["error_message"];
        assert!(msg.contains(&fleet[t].id) && msg.contains(&stale.id), "both candidates: {msg}");
        assert!(msg.find(&fleet[t].id) < msg.find(&stale.id), "newest first: {msg}");
        assert!(
            msg.contains("lastSeen") && msg.contains("Inactive") && msg.contains("--pick latest"),
            "{msg}"
        );
    }
    for row in &rows[5..] {
        assert_eq!(row["status"], "not_found", "{row:?}");
        assert!(row["error_message"].contains("no machine named"), "{row:?}");
    }
    // Seven names fit one filter call; only the three resolved rows were sent.
    assert_eq!(api_calls(&sim, "GET machines"), 1);
    assert_eq!(api_calls(&sim, "isolate"), 3);

    // --pick latest: the twin resolves to its newest record, and rows naming
    // one device by name and by id are duplicates of each other.
    let input = dir.write(
        "pick.csv",
        format!(
            "device_name,machine_id\nhost-{t:05}.contoso.test,\nhost-{t:05},\n,{}\nHOST-00001,\n",
            fleet[1].id
        ),
    );
    let mut cmd = mdebulk(&sim);
    cmd.args([
        "run",
        input.to_str().unwrap(),
        "--action",
        "unisolate",
        "--comment",
        "IR-7",
        "--pick",
        "latest",
        "--no-progress",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("pick.results.csv"));
    let got: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["status"].as_str(), r["machine_id"].as_str())).collect();
    assert_eq!(
        got,
        [
            ("submitted", fleet[t].id.as_str()),
            ("duplicate", fleet[t].id.as_str()),
            ("submitted", fleet[1].id.as_str()),
            ("duplicate", fleet[1].id.as_str()),
        ]
    );
    assert_eq!(rows[0]["error_message"], "");
    assert_eq!(api_calls(&sim, "unisolate"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_names_cost_one_filter_call_and_many_names_one_listing_call() {
    let sim = sim(sim_config(&[])).await;
    let fleet = sim.fleet();
    assert_eq!(fleet.len(), 1000);
    let dir = TempDir::new("cost");
    let mut five = String::from("hostname\n");
    for i in 10..15 {
        five.push_str(&format!("host-{i:05}\n"));
    }
    let input = dir.write("five.csv", five);
    let cmd = isolate(&sim, &input, &["--dry-run"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "GET machines"), 1, "five names: one filter call");
    let rows = read_results(&dir.path("five.plan.csv"));
    for (row, i) in rows.iter().zip(10..15) {
        assert_eq!(
            (row["status"].as_str(), row["machine_id"].as_str()),
            ("planned", fleet[i].id.as_str())
        );
    }

    let mut many = String::from("hostname\n");
    for i in 300..600 {
        many.push_str(&format!("host-{i:05}.contoso.test\n"));
    }
    let input = dir.write("many.csv", many);
    let cmd = isolate(&sim, &input, &["--dry-run"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "twins are ambiguous: {}", text(&out));
    assert_eq!(api_calls(&sim, "GET machines"), 2, "300 names: one listing call");
    let rows = read_results(&dir.path("many.plan.csv"));
    let twins: Vec<usize> = (0..twin_count(1000)).map(|k| twin_of(1000, k)).collect();
    for (row, i) in rows.iter().zip(300..600) {
        if twins.contains(&i) {
            assert_eq!(row["status"], "ambiguous", "{i}");
        } else {
            assert_eq!(
                (row["status"].as_str(), row["machine_id"].as_str()),
                ("planned", fleet[i].id.as_str())
            );
        }
    }
    assert_eq!(action_calls(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_device_ids_and_ip_addresses_resolve_too() {
    let sim = sim(sim_config(&[])).await;
    let fleet = sim.fleet();
    let joined = fleet.iter().find(|m| m.aad_device_id.is_some()).unwrap();
    let by_ip = &fleet[42];
    let dir = TempDir::new("aad-ip");
    let input = dir.write(
        "other.csv",
        format!(
            "aadDeviceId,ip\n{},\n,{}\n,192.0.2.77\n{},\n",
            joined.aad_device_id.as_ref().unwrap().to_uppercase(),
            by_ip.last_ip_address.as_ref().unwrap(),
            "0e0e0e0e-0000-4000-8000-000000000000"
        ),
    );
    let cmd = isolate(&sim, &input, &["--dry-run"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&dir.path("other.plan.csv"));
    let got: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["status"].as_str(), r["machine_id"].as_str())).collect();
    assert_eq!(
        got,
        [
            ("planned", joined.id.as_str()),
            ("planned", by_ip.id.as_str()),
            ("not_found", ""),
            ("not_found", ""),
        ]
    );
    assert!(rows[2]["error_message"].contains("lastIpAddress"), "{:?}", rows[2]);
    assert_eq!(api_calls(&sim, "GET machines"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_flight_finds_a_pending_isolate_and_does_not_send_it_again() {
    // Actions stay Pending for a minute: the second run finds the first one's.
    let sim = sim(SimConfig { settle: Duration::from_secs(60), ..sim_config(&[]) }).await;
    let m = windows_online(&sim, 2);
    let dir = TempDir::new("preflight");
    let first = dir.write("first.csv", ids_csv(&m[..1]));
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", first.to_str().unwrap(), "--action", "isolate", "--comment", "x"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let earlier = read_results(&dir.path("first.results.csv"))[0]["action_id"].clone();
    assert_eq!(api_calls(&sim, "isolate"), 1);
    let list_before = api_calls(&sim, "GET machineactions");

    let second = dir.write("second.csv", ids_csv(&m));
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", second.to_str().unwrap(), "--action", "isolate", "--comment", "x"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("second.results.csv"));
    assert_eq!(rows[0]["status"], "already_pending");
    assert_eq!(rows[0]["action_id"], earlier);
    assert_eq!(rows[0]["action_status"], "Pending");
    assert_eq!(rows[0]["attempts"], "0", "nothing was sent for it");
    assert_eq!(rows[1]["status"], "submitted");
    assert_eq!(api_calls(&sim, "isolate"), 2, "only the second machine was sent");
    assert_eq!(api_calls(&sim, "GET machineactions"), list_before + 1, "one pre-flight call");
    assert_eq!(stats(&sim).duplicates_refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_of_linux_and_macos_machines_is_rejected_before_any_call() {
    let sim = sim(sim_config(&[])).await;
    let fleet = sim.fleet();
    let linux = first_with_os(&fleet, "Linux");
    let mac = first_with_os(&fleet, "macOS");
    let windows = windows_online(&sim, 1).remove(0);
    let dir = TempDir::new("offboard-os");
    let input = dir.write(
        "off.csv",
        format!(
            "machine_id,device_name,action,sha1\n{},,offboard,\n,{},offboard,\n{},,offboard,\n{},,offboard,\n{},,stop-and-quarantine,{}\n",
            linux.id,
            mac.computer_dns_name.as_deref().unwrap().to_uppercase(),
            windows.id,
            "f".repeat(40),
            linux.id,
            "a".repeat(40),
        ),
    );
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--comment", "retire", "--yes", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&dir.path("off.results.csv"));
    for (i, os) in [(0, "Linux"), (1, "macOS"), (4, "Linux")] {
        let r = &rows[i];
        assert_eq!(
            (r["status"].as_str(), r["error_code"].as_str()),
            ("rejected", "OsPlatformNotSupported"),
            "{r:?}"
        );
        assert!(r["error_message"].contains(&format!("not supported on {os} devices")), "{r:?}");
        assert_eq!(r["http_status"], "", "decided without a request");
    }
    assert_eq!(rows[1]["machine_id"], mac.id);
    assert_eq!(rows[2]["status"], "submitted");
    assert_eq!(rows[3]["status"], "not_found", "an id not in the tenant: {:?}", rows[3]);
    assert_eq!(api_calls(&sim, "offboard"), 1, "only the Windows machine was sent");
    assert_eq!(api_calls(&sim, "StopAndQuarantineFile"), 0);
    assert_eq!(api_calls(&sim, "GET machines"), 1, "the names and ids share one filter call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_no_action_and_writes_the_plan_with_its_estimate() {
    let sim = sim(sim_config(&[])).await;
    let fleet = sim.fleet();
    let linux = first_with_os(&fleet, "Linux");
    let w = windows_online(&sim, 3);
    let dir = TempDir::new("dry");
    let input = dir.write(
        "plan.csv",
        format!(
            "machine_id,device_name,action\n{},,isolate\n,{},isolate\n{},,isolate\n,ghost,isolate\n{},,offboard\n{},,offboard\nnot-an-id,,isolate\n",
            w[0].id,
            w[1].computer_dns_name.as_deref().unwrap(),
            w[1].id,
            linux.id,
            w[2].id,
        ),
    );
    let mut cmd = mdebulk(&sim);
    cmd.args([
        "run",
        input.to_str().unwrap(),
        "--dry-run",
        "--skip-invalid",
        "--comment",
        "x",
        "--limit",
        "2/1s",
    ]);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let rows = read_results(&dir.path("plan.plan.csv"));
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(
        statuses,
        ["planned", "planned", "duplicate", "not_found", "rejected", "planned", "invalid"]
    );
    assert_eq!(rows[1]["machine_id"], w[1].id);
    assert_eq!(action_calls(&sim), 0, "a dry run sends no action");
    assert_eq!(stats(&sim).actions_created, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("dry run: 7 row(s)"), "{stdout}");
    assert_eq!(summary_value(&stdout, "planned per action: "), "isolate 2, offboard 1");
    // Two isolations at 2/1s start at once: the estimate is nothing to wait.
    assert_eq!(
        parse_human(summary_value(&stdout, "estimated time under the quota: ")),
        Duration::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_estimates_the_quota_time_and_the_real_run_sends_every_row_unthrottled() {
    let sim = sim(sim_config(&["20/1s"])).await;
    let machines = windows_online(&sim, 100);
    let dir = TempDir::new("estimate");
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let args = |extra: &[&str]| {
        let mut cmd = mdebulk(&sim);
        cmd.args(["run", input.to_str().unwrap(), "--action", "isolate", "--comment", "x"])
            // A margin wide enough for a loaded test machine (a 429 would
            // cost a whole Retry-After second); answered calls do not wait
            // for it, so neither does the estimate.
            .args(["--limit", "20/1s", "--pace-margin", "100ms", "--no-progress", "--force"])
            .args(extra);
        cmd
    };
    let out = output(args(&["--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dry = String::from_utf8_lossy(&out.stdout).to_string();
    let estimate = parse_human(summary_value(&dry, "estimated time under the quota: "));
    assert_eq!(summary_value(&dry, "planned per action: "), "isolate 100");
    // 100 calls at 20 per second: four full windows (answered calls free
    // their slot a plain window after the answer, so the margin drops out).
    assert_eq!(estimate.as_millis(), 4000, "{dry}");
    assert_eq!(action_calls(&sim), 0);

    let out = output(args(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // How close the real run comes to the estimate is a time, measured by
    // the pacing bench (`cargo bench --bench pacing`), not asserted here.
    assert_eq!(api_calls(&sim, "isolate"), 100);
    assert_eq!(stats(&sim).throttled, 0);
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(status_counts(&rows).get("submitted"), Some(&100));
}
