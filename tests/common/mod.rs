//! Shared harness of the integration tests: a simulator started in-process
//! on 127.0.0.1:0, the real `mdebulk` binary run against it over loopback,
//! temporary directories, and results-file readers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mdebulk::api::model::Machine;
use mdebulk::sim::{Sim, SimConfig, Stats};

/// A temporary directory removed on drop: a thin wrapper over
/// `tempfile::TempDir` that keeps the tests' `new`/`path`/`write` calls.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A fresh directory named `mdebulk-test-<name>-<random>`; the name is
    /// there to tell a leftover directory's test.
    pub fn new(name: &str) -> TempDir {
        TempDir(
            tempfile::Builder::new().prefix(&format!("mdebulk-test-{name}-")).tempdir().unwrap(),
        )
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `content` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

/// Starts a simulator on a free loopback port.
pub async fn sim(config: SimConfig) -> Sim {
    Sim::start(SimConfig { listen: "127.0.0.1:0".into(), ..config }).await.unwrap()
}

/// Starts a simulator serving `n` tenants (`tenant-01` …) on a free
/// loopback port; the client of [`pointed_at`] is consented in every one.
pub async fn tenants_sim(n: usize, config: SimConfig) -> Sim {
    sim(SimConfig { tenants: Some(n), ..config }).await
}

/// The names of the tenants `sim` serves, in order.
pub fn tenant_names(sim: &Sim) -> Vec<String> {
    sim.tenants().into_iter().map(|t| t.name).collect()
}

/// The machines of one tenant of `sim` (by name or id).
pub fn tenant_machines(sim: &Sim, tenant: &str) -> Vec<Machine> {
    sim.tenant_fleet(tenant).expect("a tenant of the simulator")
}

/// A simulator with the given quotas and otherwise quiet defaults.
pub fn sim_config(limits: &[&str]) -> SimConfig {
    SimConfig {
        limits: limits.iter().map(|l| l.parse().unwrap()).collect(),
        settle: std::time::Duration::from_millis(300),
        ..SimConfig::default()
    }
}

/// An access token from the simulator at `base` for `client` in `tenant`,
/// asked the way an app asks Entra (client credentials, v2 endpoint).
pub async fn access_token(base: &str, tenant: &str, client: &str, secret: &str) -> String {
    access_token_with(&reqwest::Client::new(), base, tenant, client, secret).await
}

/// [`access_token`] through `http` (a client that trusts the simulator's CA,
/// say).
pub async fn access_token_with(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    client: &str,
    secret: &str,
) -> String {
    let scope = "https://api.securitycenter.microsoft.com/.default";
    scoped_token(http, base, tenant, client, secret, scope).await
}

/// [`access_token_with`] for another `scope` (Microsoft Graph's, say).
pub async fn scoped_token(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    client: &str,
    secret: &str,
    scope: &str,
) -> String {
    let reply: serde_json::Value = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().unwrap_or_else(|| panic!("{reply}")).to_string()
}

/// Replaces a machine's tags through the simulator's hook.
pub async fn set_tags(sim: &Sim, id: &str, tags: &[&str]) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/machines/{id}/tags", sim.url()))
        .json(&tags)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// `GET path` of the simulator's API with a token of the binary's
/// identity, as a script would ask it: the reply's JSON.
pub async fn api_json(sim: &Sim, path: &str) -> serde_json::Value {
    let token = access_token(&sim.url(), "tenant-1", "app-1", "s3cret-value-never-logged").await;
    reqwest::Client::new()
        .get(format!("{}{path}", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Stats straight from the running simulator.
pub fn stats(sim: &Sim) -> Stats {
    sim.stats()
}

/// `mdebulk` pointed at `sim`, with credentials in the environment.
pub fn mdebulk(sim: &Sim) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    pointed_at(&mut cmd, sim);
    cmd
}

/// Clears `cmd`'s environment but `PATH`, then points it at `sim` with the
/// credentials its default client accepts, and closes its standard input.
pub fn pointed_at(cmd: &mut Command, sim: &Sim) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", "s3cret-value-never-logged")
        .env("MDE_API_URL", sim.url())
        .env("MDE_LOGIN_URL", sim.url())
        .stdin(Stdio::null());
}

/// `mdebulk run INPUT --action isolate --comment x` against `sim`, plus `extra` flags.
pub fn isolate(sim: &Sim, input: &Path, extra: &[&str]) -> Command {
    let mut cmd = mdebulk(sim);
    cmd.arg("run").arg(input).args(["--action", "isolate", "--comment", "x"]).args(extra);
    cmd
}

/// Runs a command to completion off the async runtime (the simulator keeps
/// serving on the runtime's threads meanwhile).
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// stderr + stdout as text, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout))
}

/// Machines of the simulator's fleet that accept every action: online,
/// Windows, with a unique name.
pub fn windows_online(sim: &Sim, n: usize) -> Vec<Machine> {
    pick(sim, n, "Active", true)
}

/// `n` machines of the fleet with this health status and a unique name
/// (re-imaged twins left out), Windows only if asked.
pub fn pick(sim: &Sim, n: usize, health: &str, windows_only: bool) -> Vec<Machine> {
    let fleet = sim.fleet();
    let mut names: HashMap<String, usize> = HashMap::new();
    for m in &fleet {
        *names.entry(m.computer_dns_name.clone().unwrap_or_default()).or_default() += 1;
    }
    let picked: Vec<Machine> = fleet
        .into_iter()
        .filter(|m| {
            (!windows_only || !m.is_linux_or_macos())
                && m.health_status.as_deref() == Some(health)
                && names[m.computer_dns_name.as_deref().unwrap_or_default()] == 1
        })
        .take(n)
        .collect();
    assert_eq!(picked.len(), n, "the fleet has too few {health} machines");
    picked
}

/// Calls the simulator counted for one API (`by_api` key).
pub fn api_calls(sim: &Sim, api: &str) -> u64 {
    stats(sim).by_api.get(api).map_or(0, |a| a.calls)
}

/// An input CSV with `machine_id,owner` for these machines.
pub fn ids_csv(machines: &[Machine]) -> String {
    let mut s = String::from("machine_id,owner\n");
    for (i, m) in machines.iter().enumerate() {
        s.push_str(&format!("{},owner-{i}\n", m.id));
    }
    s
}

/// Reads a results CSV as header-keyed rows, in the dialect it was written
/// in (results repeat their input's delimiter and BOM): a leading UTF-8 BOM
/// is skipped and the delimiter is the header line's most frequent of
/// comma, semicolon and tab.
pub fn read_results(path: &Path) -> Vec<HashMap<String, String>> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xlsx")) {
        return read_workbook_results(path);
    }
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(&bytes);
    let header = body.split(|&b| b == b'\n' || b == b'\r').next().unwrap_or_default();
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (header.iter().filter(|b| *b == d).count(), *d == b','))
        .unwrap_or(b',');
    let mut r = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(body);
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers.iter().zip(rec.iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect()
        })
        .collect()
}

/// The cells of the first sheet of the workbook at `path`, as calamine
/// reads them (types kept).
pub fn read_workbook(path: &Path) -> (String, Vec<Vec<calamine::Data>>) {
    use calamine::Reader;
    let mut book =
        calamine::open_workbook_auto(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = book.sheet_names()[0].clone();
    let range = book.worksheet_range(&name).unwrap();
    (name, range.rows().map(|r| r.to_vec()).collect())
}

/// A results workbook's rows by header, each cell as a person reads it
/// (a whole number without `.0`).
fn read_workbook_results(path: &Path) -> Vec<HashMap<String, String>> {
    let text = |c: &calamine::Data| match c {
        calamine::Data::Float(f) if f.fract() == 0.0 => format!("{}", *f as i64),
        calamine::Data::Empty => String::new(),
        other => other.to_string(),
    };
    let (_, rows) = read_workbook(path);
    let header: Vec<String> = rows[0].iter().map(text).collect();
    rows[1..].iter().map(|r| header.iter().cloned().zip(r.iter().map(text)).collect()).collect()
}

/// Count of rows per status.
pub fn status_counts(rows: &[HashMap<String, String>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r["status"].clone()).or_default() += 1;
    }
    m
}
