//! Shared pieces of the whole-run benchmarks (`pacing`, `overhead`, `scale`):
//! a simulator on its own runtime, a client and a run configuration built the
//! way `mdebulk run` builds them, scratch directories, CPU and memory readings
//! from `/proc`, and the table rows `benches/run_all.sh` collects.
//!
//! The simulator runs on a dedicated tokio runtime whose threads are named
//! [`SIM_THREAD`], the runner on another named [`RUN_THREAD`]: per-thread CPU
//! time from `/proc/self/task` then splits the cost of a run between the
//! simulator and the runner exactly, although both live in one process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mdebulk::api::action::ActionKind;
use mdebulk::api::auth::{Credentials, Secret};
use mdebulk::api::client::{Client, ClientConfig};
use mdebulk::api::cloud::Cloud;
use mdebulk::input::{InputSpec, RowDefaults};
use mdebulk::pace::Limit;
use mdebulk::run::{Existing, ResultsTarget, RetryPolicy, RunConfig, Stop, Summary};
use mdebulk::sim::{Sim, SimConfig, Stats};

/// Name prefix of the simulator runtime's threads.
pub const SIM_THREAD: &str = "bench-sim";
/// Name prefix of the runner runtime's threads.
pub const RUN_THREAD: &str = "bench-run";

/// The benchmark's own arguments: what follows `cargo bench --bench X --`,
/// minus the `--bench` flag cargo adds.
pub fn args() -> Vec<String> {
    std::env::args().skip(1).filter(|a| a != "--bench").collect()
}

/// A multi-thread runtime whose threads are named `name`.
pub fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A simulator on 127.0.0.1:0, served by its own runtime.
pub struct SimHost {
    /// The simulator's runtime; it serves as long as this lives.
    rt: tokio::runtime::Runtime,
    /// The running simulator (taken on shutdown).
    sim: Option<Sim>,
}

impl SimHost {
    /// Builds the fleet and starts serving on a free loopback port.
    pub fn start(config: SimConfig) -> SimHost {
        let rt = runtime(SIM_THREAD);
        let sim = rt
            .block_on(Sim::start(SimConfig { listen: "127.0.0.1:0".into(), ..config }))
            .expect("simulator");
        SimHost { rt, sim: Some(sim) }
    }

    /// The running simulator.
    pub fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("simulator running")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.sim().url()
    }

    /// The simulator's counters.
    pub fn stats(&self) -> Stats {
        self.sim().stats()
    }

    /// Ids of the first `n` machines of the fleet (all distinct).
    pub fn machine_ids(&self, n: usize) -> Vec<String> {
        let ids: Vec<String> = self.sim().fleet().into_iter().take(n).map(|m| m.id).collect();
        assert_eq!(ids.len(), n, "the fleet has fewer than {n} machines");
        ids
    }

    /// Stops the simulator and waits for its server task.
    pub fn shutdown(mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// The client `mdebulk run` would build for this simulator (client
/// credentials, token fetched from the simulator's login endpoint).
pub fn client(url: &str) -> Arc<Client> {
    client_in(url, "bench-tenant")
}

/// [`client`], logged in to `tenant` (one of a simulator's `--tenants`).
pub fn client_in(url: &str, tenant: &str) -> Arc<Client> {
    let config = ClientConfig {
        api_base: url.to_string(),
        login_base: url.to_string(),
        scope: Cloud::Global.scope().to_string(),
        credentials: Credentials::ClientSecret {
            tenant_id: tenant.into(),
            client_id: "mdebulk-bench".into(),
            client_secret: Secret::new("bench".to_string()),
        },
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        extra_roots: Vec::new(),
        proxy: None,
        graph: None,
    };
    Arc::new(Client::new(config).expect("client"))
}

/// The API's quotas, `100/60s` and `1500/3600s`, compressed 60 times:
/// `100/1s` and `1500/60s`, for the client and the simulator alike.
pub fn compressed_limits() -> Vec<Limit> {
    vec![
        Limit::new(100, Duration::from_secs(1)).expect("valid limit"),
        Limit::new(1500, Duration::from_secs(60)).expect("valid limit"),
    ]
}

/// An `Authorization` header value for a bare HTTP loop: a client-credentials
/// token from the simulator's v2 login endpoint, as `client_id` of `tenant`.
pub async fn bearer(http: &reqwest::Client, base: &str, tenant: &str, client_id: &str) -> String {
    let token: serde_json::Value = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", "bench"),
            ("scope", Cloud::Global.scope()),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token body");
    format!("Bearer {}", token["access_token"].as_str().expect("access token"))
}

/// The configuration `mdebulk run INPUT --action isolate --comment bench
/// --limit ... --concurrency N --force --no-progress` gives, with results
/// going to `results`.
pub fn run_config(
    input: &Path,
    results: ResultsTarget,
    limits: Vec<Limit>,
    concurrency: usize,
) -> RunConfig {
    RunConfig {
        targets: None,
        input: InputSpec { path: Some(input.to_path_buf()), ..InputSpec::default() },
        results,
        defaults: RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("bench".to_string()),
            ..RowDefaults::default()
        },
        limits,
        pace_margin: None,
        concurrency,
        policy: RetryPolicy::default(),
        skip_invalid: false,
        existing: Existing::Force,
        only: None,
        dry_run: false,
        yes: true,
        interactive: false,
        progress: false,
        max_runtime: None,
        pick_latest: false,
        skip_satisfied: false,
        // Benchmarks measure whole runs of any size: no blast-radius cap.
        max_devices: u64::MAX,
        max_percent: None,
        tag_result: None,
        allow_large: true,
        wait: None,
        in_flight_grace: Duration::from_secs(5),
        command_line: Vec::new(),
        api: "bench".to_string(),
        tenant: "bench".to_string(),
        protect: None,
        skip_protected: false,
        planner: String::new(),
        approval: None,
        login_failure_stops: false,
    }
}

/// Runs the real pipeline on `rt` and returns its summary.
pub fn run_pipeline(
    rt: &tokio::runtime::Runtime,
    config: &RunConfig,
    client: Arc<Client>,
) -> Summary {
    rt.block_on(mdebulk::run::pipeline::run(config, client, Stop::new())).expect("run")
}

/// An input CSV with a `machine_id` column listing `ids`.
pub fn ids_csv(path: &Path, ids: &[String]) {
    let mut s = String::with_capacity(ids.len() * 42 + 16);
    s.push_str("machine_id\n");
    for id in ids {
        s.push_str(id);
        s.push('\n');
    }
    std::fs::write(path, s).expect("write input");
}

/// A scratch directory under the system temporary directory, removed on
/// drop (a `tempfile::TempDir` under the benches' name).
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// Creates `mdebulk-bench-<name>-<random>`.
    pub fn new(name: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("mdebulk-bench-{name}-"))
            .tempdir()
            .expect("scratch directory");
        Scratch(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 on
/// every Linux this runs on).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the command name (which may hold spaces) start at field
    // 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / clock_ticks() as f64))
}

/// CPU time (user + system) of this whole process so far, exited threads included.
pub fn process_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_cpu(&s)).unwrap_or_default()
}

/// CPU time of this process's live threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let short = &prefix[..prefix.len().min(15)];
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(short))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| stat_cpu(&s))
        .sum()
}

/// CPU readings of a stretch of work: the whole process and the simulator's threads.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// Process CPU at the mark.
    process: Duration,
    /// Simulator threads' CPU at the mark.
    sim: Duration,
}

impl CpuMark {
    /// Reads both now.
    pub fn now() -> CpuMark {
        CpuMark { process: process_cpu(), sim: threads_cpu(SIM_THREAD) }
    }

    /// CPU used since `self`: (whole process, simulator threads only).
    pub fn since(&self) -> (Duration, Duration) {
        let now = CpuMark::now();
        (now.process.saturating_sub(self.process), now.sim.saturating_sub(self.sim))
    }
}

/// A reading of another process from `/proc/<pid>`: CPU so far and peak RSS.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime.
    pub cpu: Duration,
    /// `VmHWM`: the peak resident set size, in KiB.
    pub peak_rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` once the
/// process has exited (a zombie has no memory figures).
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cpu = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(ProcSample { cpu, peak_rss_kib })
}

/// Environment variable that makes the benches print their table rows
/// (`benches/run_all.sh` sets it).
pub const TABLE_ENV: &str = "MDEBULK_BENCH_TABLE";

/// Prints one row of the summary table, as a line starting with `@row `
/// that `benches/run_all.sh` collects; only when [`TABLE_ENV`] is set, so a
/// plain `cargo bench` shows just the readable report.
pub fn table_row(bench: &str, case: &str, result: &str, target: &str, ok: bool) {
    if std::env::var_os(TABLE_ENV).is_none() {
        return;
    }
    println!(
        "@row | {bench} | {case} | {result} | {target} | {} |",
        if ok { "yes" } else { "**no**" }
    );
}

/// Seconds with `digits` decimals.
pub fn secs(d: Duration, digits: usize) -> String {
    format!("{:.*}", digits, d.as_secs_f64())
}
