//! Guardrails before any action call: the blast-radius cap
//! (`--max-devices`, `--max-percent`, `--allow-large`). Calls are counted.

mod common;

use common::*;
use mdebulk::sim::{FleetSpec, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rows_than_max_devices_are_refused_before_any_action_unless_allowed() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("cap");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 6)));
    let out = output(isolate(&sim, &input, &["--max-devices", "5", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("6 rows would isolate") && all.contains("--max-devices 5"), "{all}");
    assert!(all.contains("--allow-large"), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 0);
    assert!(!dir.path("hosts.results.csv").exists(), "a refused run leaves no results");

    // A dry run says what it would need and plans every row.
    let out = output(isolate(&sim, &input, &["--max-devices", "5", "--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status_counts(&read_results(&dir.path("hosts.plan.csv"))).get("planned"), Some(&6));

    // Scans are not capped; --allow-large lets isolations through (no
    // terminal here, so nothing is asked).
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "scan", "--scan-type", "quick"]);
    cmd.args(["--comment", "x", "--max-devices", "5", "--force", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let flags = ["--max-devices", "5", "--allow-large", "--force", "--no-progress"];
    let out = output(isolate(&sim, &input, &flags)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rows_than_max_percent_of_the_active_devices_are_refused() {
    let config =
        SimConfig { fleet: FleetSpec::Generate { machines: 40 }, ..sim_config(&["100/60s"]) };
    let sim = sim(config).await;
    let dir = TempDir::new("percent");
    let active =
        sim.fleet().iter().filter(|m| m.health_status.as_deref() == Some("Active")).count();
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 6)));
    // 10% of the active devices is fewer than 6.
    assert!(active * 10 / 100 < 6, "{active}");
    let listings = api_calls(&sim, "GET machines");
    let out = output(isolate(&sim, &input, &["--max-percent", "10", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains(&format!("of the tenant's {active} active devices")), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 0);
    assert_eq!(api_calls(&sim, "GET machines") - listings, 1, "one listing counts them");
    // Within the share, the run goes on.
    let out = output(isolate(&sim, &input, &["--max-percent", "50", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 6);
}
