//! `mdebulk simulate` as a process: the listening line, serving, SIGTERM,
//! and one clear error line with exit code 2 for bad input.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn simulate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.arg("simulate").args(args);
    cmd
}

/// Runs a command that must fail: returns its exit code and stderr lines.
fn fails(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = simulate(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    (out.status.code(), err.lines().map(String::from).collect())
}

#[test]
fn prints_the_listening_line_serves_and_stops_on_sigterm() {
    let mut child = simulate(&["--listen", "127.0.0.1:0", "--machines", "10", "--limit", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let port: u16 = url.strip_prefix("http://127.0.0.1:").unwrap().parse().unwrap();
    assert_ne!(port, 0);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (count, stats) = rt.block_on(async {
        let http = reqwest::Client::new();
        let token = common::access_token(&url, "t", "a", "b").await;
        let list: serde_json::Value = http
            .get(format!("{url}/api/machines"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stats: serde_json::Value =
            http.get(format!("{url}/_sim/stats")).send().await.unwrap().json().await.unwrap();
        (list["value"].as_array().unwrap().len(), stats)
    });
    assert_eq!(count, 10);
    assert_eq!(stats["requests"], 2);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let graph =
        rest.strip_prefix("graph on http://127.0.0.1:").unwrap_or_else(|| panic!("{rest:?}"));
    let graph_port: u16 = graph.strip_suffix('\n').unwrap().parse().unwrap();
    assert_ne!(graph_port, port, "Graph has its own listener");
    assert!(!graph.contains(' '), "the two address lines are all stdout carries: {rest:?}");
}

#[test]
fn unreadable_or_invalid_fleet_file() {
    let (code, lines) = fails(&["--listen", "127.0.0.1:0", "--fleet", "/nonexistent/fleet.json"]);
    assert_eq!(code, Some(2));
    assert_eq!(lines, ["error: cannot read fleet file /nonexistent/fleet.json: no such file"]);

    let mut file =
        tempfile::Builder::new().prefix("sim-cli-bad-fleet-").suffix(".json").tempfile().unwrap();
    file.write_all(b"{\"value\": [{\"computerDnsName\": \"x\"}]}").unwrap();
    let path = file.into_temp_path();
    let (code, lines) = fails(&["--listen", "127.0.0.1:0", "--fleet", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("error: invalid fleet file {}: machine #1:", path.display())),
        "{lines:?}"
    );
    assert!(lines[0].contains("id"), "{lines:?}");
}

#[test]
fn bad_limit_syntax() {
    let (code, lines) = fails(&["--listen", "127.0.0.1:0", "--limit", "100/60"]);
    assert_eq!(code, Some(2));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("error: invalid limit \"100/60\""), "{lines:?}");
    let (code, lines) = fails(&["--listen", "127.0.0.1:0", "--limit", "none", "--limit", "5/1s"]);
    assert_eq!((code, lines.len()), (Some(2), 1), "{lines:?}");
}

#[test]
fn port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, lines) = fails(&["--listen", &addr]);
    assert_eq!(code, Some(2));
    assert_eq!(lines, [format!("error: cannot listen on {addr}: address in use")]);
}
