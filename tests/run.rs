//! `mdebulk run` end to end: the real binary against the real simulator
//! over loopback HTTP. Quotas are compressed so runs take seconds; nothing
//! here asserts wall-clock speed, only counts.

mod common;

use std::time::Duration;

use common::*;
use mdebulk::pace::WindowModel;
use mdebulk::sim::SimConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolates_every_row_and_writes_one_result_row_each_in_input_order() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("basic");
    let machines = windows_online(&sim, 25);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "isolate", "--comment", "IR-42 contain"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 25);
    for (i, (row, m)) in rows.iter().zip(&machines).enumerate() {
        assert_eq!(row["machine_id"], m.id);
        assert_eq!(row["owner"], format!("owner-{i}"), "user columns are carried through");
        assert_eq!(row["line"], (i + 2).to_string());
        assert_eq!(row["status"], "submitted");
        assert_eq!(row["action"], "isolate");
        assert_eq!(row["http_status"], "201");
        assert_eq!(row["action_id"].len(), 36, "an action id for every row");
        assert_eq!(row["action_status"], "Pending");
        assert_eq!(row["attempts"], "1");
        assert!(row["requested_at"].ends_with('Z') && row["finished_at"].ends_with('Z'));
    }
    let s = stats(&sim);
    assert_eq!(s.actions_created, 25);
    assert_eq!(s.throttled, 0);
    assert_eq!(s.duplicate_submissions, 0);
    let all = text(&out);
    assert!(!all.contains("s3cret-value-never-logged"), "the secret leaked: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_window_model_sees_zero_429s_at_compressed_quotas() {
    for model in [WindowModel::Sliding, WindowModel::Fixed, WindowModel::Bucket] {
        let sim = sim(SimConfig { window: model, ..sim_config(&["20/1s", "60/4s"]) }).await;
        let dir = TempDir::new("windows");
        let machines = windows_online(&sim, 90);
        let input = dir.write("hosts.csv", ids_csv(&machines));
        let cmd = isolate(&sim, &input, &["--limit", "20/1s", "--limit", "60/4s", "--no-progress"]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{model}: {}", text(&out));
        let s = stats(&sim);
        assert_eq!(s.throttled, 0, "{model}: the runner drew 429s");
        assert_eq!(s.actions_created, 90, "{model}");
        let rows = read_results(&dir.path("hosts.results.csv"));
        assert_eq!(status_counts(&rows).get("submitted"), Some(&90), "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_load_429_storms_lose_no_row() {
    let sim = sim(SimConfig { foreign_load: 0.6, ..sim_config(&["20/1s"]) }).await;
    let dir = TempDir::new("foreign");
    let machines = windows_online(&sim, 40);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let cmd = isolate(&sim, &input, &["--limit", "20/1s"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stats(&sim);
    assert!(s.throttled > 0, "foreign load should have caused 429s");
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r["status"] == "submitted"));
    assert_eq!(s.actions_created, 40);
    assert_eq!(s.duplicate_submissions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_and_dropped_connections_lose_no_row_and_never_act_twice() {
    let sim = sim(SimConfig { error_rate: 0.3, seed: 7, ..sim_config(&[]) }).await;
    let dir = TempDir::new("errors");
    let machines = windows_online(&sim, 60);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let cmd =
        isolate(&sim, &input, &["--limit", "none", "--backoff", "10ms", "--max-attempts", "10"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stats(&sim);
    assert!(s.errors_injected > 0);
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{:?}", status_counts(&rows));
    assert_eq!(s.actions_created, 60);
    assert_eq!(s.duplicate_submissions, 0, "an unanswered request was sent again blindly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_fails_no_row() {
    let sim = sim(SimConfig { token_ttl: Duration::from_secs(1), ..sim_config(&["10/1s"]) }).await;
    let dir = TempDir::new("token");
    let machines = windows_online(&sim, 35);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let cmd = isolate(&sim, &input, &["--limit", "10/1s"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{:?}", status_counts(&rows));
    assert!(stats(&sim).token_requests > 1, "the token should have been refreshed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_a_run_can_record() {
    let sim = sim(SimConfig { settle: Duration::from_secs(600), ..sim_config(&[]) }).await;
    let dir = TempDir::new("statuses");
    let fleet = sim.fleet();
    let win = windows_online(&sim, 3);
    let linux = fleet.iter().find(|m| m.os_platform.as_deref() == Some("Linux")).unwrap();
    // Make one machine busy with a pending isolation first.
    let mut first = mdebulk(&sim);
    let pre = dir.write("pre.csv", format!("machine_id\n{}\n", win[2].id));
    first.args(["run", pre.to_str().unwrap(), "--action", "isolate", "--comment", "first"]);
    assert_eq!(output(first).await.status.code(), Some(0));
    let csv = format!(
        "machine_id,action,sha1\n\
         {a},isolate,\n\
         {missing},isolate,\n\
         {linux},offboard,\n\
         {busy},isolate,\n\
         {a},isolate,\n\
         not-an-id,isolate,\n\
         {b},stop-and-quarantine,{sha}\n",
        a = win[0].id,
        b = win[1].id,
        busy = win[2].id,
        missing = "0123456789abcdef0123456789abcdef01234567",
        linux = linux.id,
        sha = "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508",
    );
    let input = dir.write("mixed.csv", csv);
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--comment", "IR", "--skip-invalid", "--yes"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "some rows failed: {}", text(&out));
    let rows = read_results(&dir.path("mixed.results.csv"));
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(
        statuses,
        [
            "submitted",
            "not_found",
            "rejected",
            "already_pending",
            "duplicate",
            "invalid",
            "submitted"
        ]
    );
    assert_eq!(rows[2]["error_code"], "OsPlatformNotSupported");
    assert_eq!(rows[1]["http_status"], "404");
    assert!(rows[5]["error_message"].contains("machine"), "{}", rows[5]["error_message"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_end_in_error() {
    let sim = sim(SimConfig { error_rate: 1.0, ..sim_config(&[]) }).await;
    let dir = TempDir::new("exhausted");
    let machines = windows_online(&sim, 2);
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "unisolate", "--comment", "x"]).args([
        "--backoff",
        "1ms",
        "--max-attempts",
        "3",
        "--limit",
        "none",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    // Every answer is a fault: rows end in error, or in doubt when the
    // request may have been processed and the look-up failed too.
    assert!(
        rows.iter().all(|r| r["status"] == "error" || r["status"] == "in_doubt"),
        "{:?}",
        status_counts(&rows)
    );
    assert!(rows.iter().all(|r| r["attempts"].parse::<u32>().unwrap() <= 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sends_nothing_and_exits_2_naming_line_and_column() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("bad");
    let good = windows_online(&sim, 1)[0].id.clone();
    let cases: Vec<(&str, String, Vec<&str>, Vec<&str>)> = vec![
        (
            "bad-id.csv",
            format!("machine_id,comment\n{good},x\nnot-hex,x\n"),
            vec!["--action", "isolate"],
            vec!["line 3", "machine_id", "not-hex"],
        ),
        (
            "bad-sha.csv",
            format!("machine_id,sha1\n{good},abc\n"),
            vec!["--action", "stop-and-quarantine", "--comment", "x"],
            vec!["line 2", "sha1", "abc"],
        ),
        (
            "bad-action.csv",
            format!("machine_id,action\n{good},nuke\n"),
            vec!["--comment", "x"],
            vec!["line 2", "action", "nuke"],
        ),
        (
            "no-comment.csv",
            format!("machine_id\n{good}\n"),
            vec!["--action", "isolate"],
            vec!["comment"],
        ),
        (
            "no-id.csv",
            "owner,ticket\nbob,1\n".to_string(),
            vec!["--action", "isolate", "--comment", "x"],
            vec!["no-id.csv"],
        ),
        (
            "bad-type.csv",
            format!("machine_id,isolation_type\n{good},partial\n"),
            vec!["--action", "isolate", "--comment", "x"],
            vec!["line 2", "isolation_type", "partial"],
        ),
    ];
    for (name, content, flags, expect) in cases {
        let input = dir.write(name, content);
        let mut cmd = mdebulk(&sim);
        cmd.args(["run", input.to_str().unwrap()]).args(&flags);
        let out = output(cmd).await;
        let err = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        for e in expect {
            assert!(err.contains(e), "{name}: expected {e:?} in {err}");
        }
        assert!(
            !dir.path(&name.replace(".csv", ".results.csv")).exists(),
            "{name}: a results file was written"
        );
    }
    assert_eq!(stats(&sim).requests, 0, "a request was sent for a bad file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_is_refused_without_yes() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("offboard");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 3)));
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "offboard", "--comment", "bye"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"));
    assert_eq!(stats(&sim).requests, 0);
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "offboard", "--comment", "bye", "--yes"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stats(&sim).actions_created, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreadsheet_quirks_bom_semicolons_crlf_quotes_aliases_and_jsonl() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("quirks");
    let m = windows_online(&sim, 4);
    // Excel export: BOM, semicolons, CRLF, quoted field with a separator and a newline, alias header.
    let excel = format!(
        "\u{feff}DeviceId;Owner;Comment\r\n{};\"Doe; Jane\";\"multi\r\nline\"\r\n{};=SUM(A1);IR\r\n",
        m[0].id, m[1].id
    );
    let input = dir.write("excel.csv", excel);
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--action", "release"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("excel.results.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["Owner"], "Doe; Jane");
    assert_eq!(rows[0]["action"], "unisolate");
    assert_eq!(rows[1]["Owner"], "'=SUM(A1)", "formulas are neutralised for spreadsheets");
    // JSONL with JSONL results.
    let jsonl = format!(
        "{{\"MachineId\":\"{}\",\"action\":\"StopAndQuarantineFile\",\"sha1\":\"{}\",\"ticket\":7}}\n\n{{\"machine_id\":\"{}\",\"action\":\"isolate\",\"isolation_type\":\"Selective\"}}\n",
        m[2].id, "A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508", m[3].id
    );
    let input = dir.write("rows.jsonl", jsonl);
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", input.to_str().unwrap(), "--comment", "x", "-o"]).arg(dir.path("out.jsonl"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let text_out = std::fs::read_to_string(dir.path("out.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> =
        text_out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["status"], "submitted");
    assert_eq!(lines[0]["ticket"], "7");
    assert_eq!(lines[1]["line"], 3);
    // stdin needs --input-format and -o.
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "-", "--input-format", "tsv", "--action", "scan", "--comment", "x", "-o"])
        .arg(dir.path("stdin.results.csv"))
        .stdin(std::process::Stdio::piped());
    let tsv = format!("machine id\tscan_type\n{}\tFull\n", m[0].id);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(tsv.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("stdin.results.csv"));
    assert_eq!(rows[0]["status"], "submitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_results_file_is_never_overwritten_without_force() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("exists");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    let results = dir.write("hosts.results.csv", "precious\n");
    let cmd = isolate(&sim, &input, &[]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--force"));
    assert_eq!(std::fs::read_to_string(&results).unwrap(), "precious\n");
    assert_eq!(stats(&sim).requests, 0);
    let cmd = isolate(&sim, &input, &["--force"]);
    assert_eq!(output(cmd).await.status.code(), Some(0));
    assert_eq!(read_results(&results).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_for_cron_and_no_escape_codes_off_a_terminal() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("cron");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 3)));
    let cmd = isolate(&sim, &input, &["--log-format", "json", "-v"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\u{1b}'), "escape codes in a non-terminal stderr");
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(stderr.lines().any(|l| l.starts_with('{')), "no JSON log lines: {stderr}");
    assert!(!stderr.contains("s3cret-value-never-logged"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("submitted"));
}
