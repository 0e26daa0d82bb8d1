//! The runner's own overhead: `--limit none`, zero latency, one machine per
//! row of a simulated fleet as large as the input.
//!
//! Three scenarios, each in a fresh child process (this same executable,
//! re-run with `MDEBULK_BENCH_CHILD` set) so that CPU times and memory are
//! its own:
//!
//! - `durable`: results to a file, with the journal (an intent in the file
//!   before every request, a record after it, group commits with
//!   `fdatasync`): what `mdebulk run` does.
//! - `stdout`: results to standard output (the child's is `/dev/null`):
//!   no journal, no results file. The difference is the cost of durability.
//! - `raw`: no runner at all: the same number of action POSTs from a plain
//!   reqwest loop at the same concurrency, to show what the simulator and
//!   the HTTP stack cost on their own.
//!
//! The simulator runs on its own runtime in the same process; CPU time is
//! split between it and the rest from the threads' own counters
//! (`/proc/self/task/*/stat`). Reported: rows per second, CPU seconds per
//! 1,000 rows (whole process, simulator, runner = the rest). Targets:
//! ≥ 5,000 rows/s durable, durability costing ≤ 10% of the throughput,
//! every row `submitted`.
//!
//! The cost of durability is measured in *pairs*: a durable run and a
//! stdout run back to back (which goes first alternates), the cost of each
//! pair being `1 − rate(durable) / rate(stdout)`; the median over the pairs
//! is reported with its quartiles. A shared two-core machine drifts by ±15%
//! over tens of seconds, which swamps a difference of a few percent between
//! two medians taken minutes apart; the two runs of a pair see the same
//! machine. `raw` runs three times, after the pairs.
//!
//! `cargo bench --bench overhead [-- ROWS [CONCURRENCY [PAIRS]]]` (defaults
//! 50000, 32 — the CLI's default concurrency — and 15).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mdebulk::results::Status;
use mdebulk::run::ResultsTarget;
use mdebulk::sim::{FleetSpec, SimConfig};

use common::{CpuMark, RUN_THREAD, Scratch, SimHost};

/// Environment variable naming the scenario a child process runs.
const CHILD: &str = "MDEBULK_BENCH_CHILD";
/// Environment variable naming the file a child writes its report to.
const REPORT: &str = "MDEBULK_BENCH_REPORT";

/// What a child measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Wall time of the run (or of the request loop).
    wall: Duration,
    /// CPU of the whole process during it.
    cpu: Duration,
    /// CPU of the simulator's threads during it.
    sim_cpu: Duration,
    /// Rows that ended `submitted` (requests answered 201 for `raw`).
    submitted: u64,
    /// Actions the simulator created.
    created: u64,
    /// 429s the simulator answered.
    throttled: u64,
}

impl Measured {
    fn encode(&self) -> String {
        format!(
            "wall={}\ncpu={}\nsim_cpu={}\nsubmitted={}\ncreated={}\nthrottled={}\n",
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            self.sim_cpu.as_secs_f64(),
            self.submitted,
            self.created,
            self.throttled
        )
    }

    fn decode(text: &str) -> Measured {
        let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let f = |k: &str| -> f64 { kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        Measured {
            wall: Duration::from_secs_f64(f("wall")),
            cpu: Duration::from_secs_f64(f("cpu")),
            sim_cpu: Duration::from_secs_f64(f("sim_cpu")),
            submitted: f("submitted") as u64,
            created: f("created") as u64,
            throttled: f("throttled") as u64,
        }
    }

    fn rows_per_sec(&self, rows: usize) -> f64 {
        rows as f64 / self.wall.as_secs_f64()
    }

    /// CPU seconds per 1,000 rows: (process, simulator, the rest).
    fn cpu_per_1000(&self, rows: usize) -> (f64, f64, f64) {
        let k = rows as f64 / 1000.0;
        let total = self.cpu.as_secs_f64() / k;
        let sim = self.sim_cpu.as_secs_f64() / k;
        (total, sim, (total - sim).max(0.0))
    }
}

/// A simulator without quotas or latency, with one machine per row.
fn start_sim(rows: usize) -> SimHost {
    SimHost::start(SimConfig {
        fleet: FleetSpec::Generate { machines: rows },
        limits: Vec::new(),
        latency: Duration::ZERO,
        settle: Duration::ZERO,
        ..SimConfig::default()
    })
}

/// The child side: runs one scenario and returns what it measured.
fn child(scenario: &str, rows: usize, concurrency: usize) -> Measured {
    let host = start_sim(rows);
    let ids = host.machine_ids(rows);
    let rt = common::runtime(RUN_THREAD);
    let (wall, cpu, sim_cpu, submitted) = match scenario {
        "raw" => raw_loop(&rt, &host.url(), ids, concurrency),
        "durable" | "stdout" => {
            let dir = Scratch::new("overhead");
            let input = dir.path("hosts.csv");
            common::ids_csv(&input, &ids);
            let results_path = dir.path("hosts.results.csv");
            let results = if scenario == "durable" {
                ResultsTarget::File(results_path.clone())
            } else {
                ResultsTarget::Stdout
            };
            let config = common::run_config(&input, results, Vec::new(), concurrency);
            let client = common::client(&host.url());
            let mark = CpuMark::now();
            let t0 = Instant::now();
            let summary = common::run_pipeline(&rt, &config, client);
            let wall = t0.elapsed();
            let (cpu, sim_cpu) = mark.since();
            if scenario == "durable" {
                let text = std::fs::read_to_string(&results_path).expect("results file");
                assert_eq!(text.lines().count(), rows + 1, "one result row per input row");
            }
            (wall, cpu, sim_cpu, summary.get(Status::Submitted))
        }
        other => panic!("unknown scenario {other:?}"),
    };
    let stats = host.stats();
    host.shutdown();
    Measured {
        wall,
        cpu,
        sim_cpu,
        submitted,
        created: stats.actions_created,
        throttled: stats.throttled,
    }
}

/// `ids.len()` isolate POSTs from `concurrency` tasks sharing one keep-alive
/// client, as the runner does but with nothing else: (wall, CPU, simulator
/// CPU, 201 answers).
fn raw_loop(
    rt: &tokio::runtime::Runtime,
    base: &str,
    ids: Vec<String>,
    concurrency: usize,
) -> (Duration, Duration, Duration, u64) {
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let bearer = Arc::new(common::bearer(&http, base, "bench-tenant", "raw-loop").await);
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let created = Arc::new(AtomicUsize::new(0));
        let base = Arc::new(base.to_string());
        let mark = CpuMark::now();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (http, ids, next, created, base, bearer) = (
                    http.clone(),
                    ids.clone(),
                    next.clone(),
                    created.clone(),
                    base.clone(),
                    bearer.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else { break };
                        let res = http
                            .post(format!("{base}/api/machines/{id}/isolate"))
                            .header("Authorization", bearer.as_str())
                            .json(&serde_json::json!({"Comment": "bench"}))
                            .send()
                            .await
                            .expect("request");
                        let status = res.status().as_u16();
                        let _ = res.bytes().await.expect("body");
                        assert_eq!(status, 201, "POST for machine {id}");
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
        let wall = t0.elapsed();
        let (cpu, sim_cpu) = mark.since();
        (wall, cpu, sim_cpu, created.load(Ordering::Relaxed) as u64)
    })
}

/// The parent side: runs `scenario` in a child process and reads its report.
fn spawn(scenario: &str, rows: usize, concurrency: usize, dir: &Scratch) -> Measured {
    let report = dir.path(&format!("{scenario}.report"));
    let exe = std::env::current_exe().expect("own executable");
    let status = Command::new(exe)
        .env(CHILD, scenario)
        .env(REPORT, &report)
        .arg(rows.to_string())
        .arg(concurrency.to_string())
        .stdin(Stdio::null())
        // The `stdout` scenario writes 100,000 result rows there.
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("child process");
    assert!(status.success(), "scenario {scenario} failed: {status}");
    Measured::decode(&std::fs::read_to_string(&report).expect("child report"))
}

/// The run of `runs` with the median rate, and the lowest and highest rates.
fn median(runs: &[Measured], rows: usize) -> (Measured, f64, f64) {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.rows_per_sec(rows).total_cmp(&b.rows_per_sec(rows)));
    let lo = sorted.first().map_or(0.0, |m| m.rows_per_sec(rows));
    let hi = sorted.last().map_or(0.0, |m| m.rows_per_sec(rows));
    (sorted[sorted.len() / 2], lo, hi)
}

/// The `q` quantile of `values` (linear between the two nearest).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = q * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// One line of a run's numbers.
fn report(scenario: &str, m: &Measured, rows: usize) {
    let (total, sim, rest) = m.cpu_per_1000(rows);
    println!(
        "{scenario:<8} {:>8.0} rows/s  wall {:>6.2} s  CPU/1000 rows: {total:.3} s (simulator {sim:.3} s, {} {rest:.3} s)  submitted {}  created {}  429s {}",
        m.rows_per_sec(rows),
        m.wall.as_secs_f64(),
        if scenario == "raw" { "client" } else { "runner" },
        m.submitted,
        m.created,
        m.throttled
    );
}

fn main() {
    let args = common::args();
    let rows: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let concurrency: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let pairs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(15).max(1);
    if let Ok(scenario) = std::env::var(CHILD) {
        let m = child(&scenario, rows, concurrency);
        let path = std::env::var(REPORT).expect("report path");
        std::fs::write(path, m.encode()).expect("write report");
        return;
    }
    println!(
        "overhead: {rows} rows, --limit none, zero latency, concurrency {concurrency}, one machine per row, {pairs} pairs of durable and stdout runs (order alternating), then 3 raw runs"
    );
    let dir = Scratch::new("overhead-reports");
    let mut runs: HashMap<&str, Vec<Measured>> = HashMap::new();
    // Per pair: the cost in throughput and in CPU time.
    let mut costs = Vec::new();
    let mut cpu_costs = Vec::new();
    for pair in 0..pairs {
        let order = if pair % 2 == 0 { ["durable", "stdout"] } else { ["stdout", "durable"] };
        let mut this = HashMap::new();
        for scenario in order {
            let m = spawn(scenario, rows, concurrency, &dir);
            report(scenario, &m, rows);
            this.insert(scenario, m);
            runs.entry(scenario).or_default().push(m);
        }
        let (d, s) = (this["durable"], this["stdout"]);
        let cost = 1.0 - d.rows_per_sec(rows) / s.rows_per_sec(rows);
        costs.push(cost);
        cpu_costs.push(1.0 - s.cpu.as_secs_f64() / d.cpu.as_secs_f64());
        println!("pair {}: durability cost {:.1}%", pair + 1, cost * 100.0);
    }
    for _ in 0..3 {
        let m = spawn("raw", rows, concurrency, &dir);
        report("raw", &m, rows);
        runs.entry("raw").or_default().push(m);
    }
    let all_sent = |runs: &[Measured]| {
        runs.iter()
            .all(|m| m.submitted == rows as u64 && m.created == rows as u64 && m.throttled == 0)
    };
    let (durable, d_lo, d_hi) = median(&runs["durable"], rows);
    let (stdout, s_lo, s_hi) = median(&runs["stdout"], rows);
    let (raw, r_lo, r_hi) = median(&runs["raw"], rows);
    let rate = durable.rows_per_sec(rows);
    let cost = quantile(&costs, 0.5);
    let (q1, q3) = (quantile(&costs, 0.25), quantile(&costs, 0.75));
    let cpu_cost = quantile(&cpu_costs, 0.5);
    let (d_total, d_sim, d_rest) = durable.cpu_per_1000(rows);
    let (s_total, s_sim, s_rest) = stdout.cpu_per_1000(rows);
    let (r_total, r_sim, r_rest) = raw.cpu_per_1000(rows);
    let busy = |m: &Measured| m.cpu.as_secs_f64() / m.wall.as_secs_f64();
    println!(
        "medians: durable {rate:.0} rows/s ({d_lo:.0}..{d_hi:.0}), stdout {:.0} ({s_lo:.0}..{s_hi:.0}), raw {:.0} ({r_lo:.0}..{r_hi:.0})",
        stdout.rows_per_sec(rows),
        raw.rows_per_sec(rows)
    );
    println!(
        "cores busy: durable {:.2}, stdout {:.2}, raw {:.2}; simulator share of the durable run's CPU {:.0}%",
        busy(&durable),
        busy(&stdout),
        busy(&raw),
        100.0 * durable.sim_cpu.as_secs_f64() / durable.cpu.as_secs_f64()
    );
    println!(
        "durability cost: {:.1}% of the throughput (median of {pairs} pairs, quartiles {:.1}%..{:.1}%); {:.1}% of the CPU time",
        cost * 100.0,
        q1 * 100.0,
        q3 * 100.0,
        cpu_cost * 100.0
    );
    common::table_row(
        "overhead",
        &format!("{rows} rows, durable (results file + journal), concurrency {concurrency}"),
        &format!(
            "{rate:.0} rows/s (median of {pairs}, {d_lo:.0}..{d_hi:.0}); CPU {d_total:.3} s per 1,000 rows (simulator {d_sim:.3}, runner {d_rest:.3}); all submitted"
        ),
        "≥ 5,000 rows/s, all submitted",
        rate >= 5000.0 && all_sent(&runs["durable"]),
    );
    common::table_row(
        "overhead",
        "same, results to stdout (no journal)",
        &format!(
            "{:.0} rows/s ({s_lo:.0}..{s_hi:.0}); CPU {s_total:.3} s per 1,000 rows (simulator {s_sim:.3}, runner {s_rest:.3}); all submitted",
            stdout.rows_per_sec(rows)
        ),
        "-",
        all_sent(&runs["stdout"]),
    );
    common::table_row(
        "overhead",
        "durability cost (durable vs stdout, run in pairs)",
        &format!(
            "{:.1}% of the throughput (median of {pairs} pairs, quartiles {:.1}%..{:.1}%); {:.1}% of the CPU time",
            cost * 100.0,
            q1 * 100.0,
            q3 * 100.0,
            cpu_cost * 100.0
        ),
        "≤ 10%",
        cost <= 0.10,
    );
    common::table_row(
        "overhead",
        &format!("simulator alone: plain reqwest loop, {rows} POSTs, concurrency {concurrency}"),
        &format!(
            "{:.0} POSTs/s ({r_lo:.0}..{r_hi:.0}); CPU {r_total:.3} s per 1,000 (simulator {r_sim:.3}, client {r_rest:.3})",
            raw.rows_per_sec(rows)
        ),
        "-",
        all_sent(&runs["raw"]),
    );
}
