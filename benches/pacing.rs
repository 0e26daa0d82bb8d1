//! Pacing at the limit: how long the real pipeline takes to send N actions
//! to one API under compressed quotas, against the best the quotas allow.
//!
//! Quotas `100/1s` and `1500/60s` on both sides (the API's `100/60s` and
//! `1500/3600s` compressed 60 times), the simulator counting by each window
//! model in turn, 20 ms simulated latency, concurrency 100, results to a file
//! with its journal (as a real run). For each N and model it reports the
//! wall time T(N) of the whole run (survey, token, journal and finish
//! included), the bound T_min(N) = `mdebulk::pace::minimum_time` (when the
//! N-th call may start at the earliest), their ratio, and the 429s the
//! simulator answered. Target: T(N) ≤ 1.02 × T_min(N) + 0.25 s, zero 429s,
//! every row `submitted`.
//!
//! It also reports where the time between taking a pacing slot and being
//! counted by the server goes: each action's creation time on the simulator
//! (the instant it counted the call) against the row's `requested_at` (the
//! instant the runner took its slot). The pacer's margin must cover the
//! spread of that lag, or a call reaches the server less than a window after
//! the call it must follow and draws a 429.
//!
//! `cargo bench --bench pacing [-- N... MODEL... margin=DURATION]`: numbers
//! pick the sizes (default 100 500 1500 1600), `sliding`, `fixed`, `bucket`
//! the models (default all three), `margin=` the runner's `--pace-margin`
//! (default: none given, the CLI default of 1% of each window, at most
//! 250 ms). `PACING_N`, `PACING_MODELS` (comma-separated) and `PACING_MARGIN`
//! do the same from the environment; `PACING_TRACE=1` adds the lag of every
//! batch of 100 rows. N = 1600 crosses the long window and takes about 60 s
//! per model.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use mdebulk::api::client::Client;
use mdebulk::api::odata::ListQuery;
use mdebulk::api::time::parse_utc;
use mdebulk::pace::{Limit, WindowModel, format_duration, minimum_time, parse_duration};
use mdebulk::results::Status;
use mdebulk::run::ResultsTarget;
use mdebulk::sim::{FleetSpec, SimConfig};

use common::{RUN_THREAD, Scratch, SimHost};

/// The sizes when none is asked for.
const DEFAULT_SIZES: [u64; 4] = [100, 500, 1500, 1600];
/// Simulated latency of every request.
const LATENCY: Duration = Duration::from_millis(20);
/// Rows in flight.
const CONCURRENCY: usize = 100;

/// The compressed quotas, on both sides.
fn limits() -> Vec<Limit> {
    common::compressed_limits()
}

/// What to run.
struct Selection {
    /// Values of N.
    sizes: Vec<u64>,
    /// Server window models.
    models: Vec<WindowModel>,
    /// `--pace-margin`, when one is given.
    margin: Option<Duration>,
    /// Print the lag of every batch.
    trace: bool,
}

/// Sizes, models and margin from the arguments, else the environment, else the defaults.
fn selection() -> Selection {
    let mut words = common::args();
    if words.is_empty() {
        for var in ["PACING_N", "PACING_MODELS"] {
            if let Ok(v) = std::env::var(var) {
                words.extend(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
            }
        }
        if let Ok(v) = std::env::var("PACING_MARGIN") {
            words.push(format!("margin={v}"));
        }
    }
    let mut s = Selection {
        sizes: Vec::new(),
        models: Vec::new(),
        margin: None,
        trace: std::env::var("PACING_TRACE").is_ok_and(|v| !v.is_empty() && v != "0"),
    };
    for w in &words {
        if let Some(m) = w.strip_prefix("margin=") {
            s.margin = Some(parse_duration(m).unwrap_or_else(|e| panic!("margin: {e}")));
        } else if let Ok(n) = w.parse::<u64>() {
            assert!(n > 0, "N must be at least 1");
            s.sizes.push(n);
        } else {
            s.models.push(w.parse::<WindowModel>().unwrap_or_else(|e| panic!("{e}")));
        }
    }
    if s.sizes.is_empty() {
        s.sizes = DEFAULT_SIZES.to_vec();
    }
    if s.models.is_empty() {
        s.models = vec![WindowModel::Sliding, WindowModel::Fixed, WindowModel::Bucket];
    }
    s
}

/// One row as the server saw it.
#[derive(Debug, Clone, Copy)]
struct Timed {
    /// When the runner took the row's first pacing slot (`requested_at`).
    slot: SystemTime,
    /// When the simulator counted the call that created the action.
    counted: SystemTime,
    /// Attempts the row needed (more than one: it drew a 429).
    attempts: u32,
}

impl Timed {
    fn lag(&self) -> Duration {
        self.counted.duration_since(self.slot).unwrap_or_default()
    }
}

/// What one case measured.
struct Outcome {
    /// Wall time of the whole run.
    wall: Duration,
    /// The quota's lower bound for the N-th call.
    bound: Duration,
    /// 429s the simulator answered.
    throttled: u64,
    /// Rows that ended `submitted`.
    submitted: u64,
    /// Actions the simulator created.
    created: u64,
    /// Every row, in input order.
    rows: Vec<Timed>,
}

fn run_case(model: WindowModel, n: u64, margin: Option<Duration>) -> Outcome {
    let host = SimHost::start(SimConfig {
        fleet: FleetSpec::Generate { machines: (n as usize + 100).max(2000) },
        limits: limits(),
        window: model,
        latency: LATENCY,
        ..SimConfig::default()
    });
    let dir = Scratch::new(&format!("pacing-{model}-{n}"));
    let input = dir.path("hosts.csv");
    let results = dir.path("hosts.results.csv");
    common::ids_csv(&input, &host.machine_ids(n as usize));
    let mut config =
        common::run_config(&input, ResultsTarget::File(results.clone()), limits(), CONCURRENCY);
    config.pace_margin = margin;
    let rt = common::runtime(RUN_THREAD);
    let client = common::client(&host.url());
    let t0 = Instant::now();
    let summary = common::run_pipeline(&rt, &config, client.clone());
    let wall = t0.elapsed();
    let stats = host.stats();
    let rows = timed_rows(&rt, &client, &results);
    host.shutdown();
    Outcome {
        wall,
        bound: minimum_time(&limits(), n),
        throttled: stats.throttled,
        submitted: summary.get(Status::Submitted),
        created: stats.actions_created,
        rows,
    }
}

/// Joins the results file with the simulator's actions (one list call, on
/// the list API, whose quota the run did not touch).
fn timed_rows(rt: &tokio::runtime::Runtime, client: &Client, results: &Path) -> Vec<Timed> {
    let listed = rt.block_on(client.list_actions(&ListQuery::default())).expect("list actions");
    let created: HashMap<String, SystemTime> = listed
        .value
        .value
        .into_iter()
        .filter_map(|a| Some((a.machine_id, parse_utc(a.creation_date_time_utc.as_deref()?)?)))
        .collect();
    let mut reader = csv::Reader::from_path(results).expect("results file");
    let headers = reader.headers().expect("results header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect("results column");
    let (machine, requested, attempts) = (col("machine_id"), col("requested_at"), col("attempts"));
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.expect("results row");
        let slot = record.get(requested).and_then(parse_utc);
        let counted = record.get(machine).and_then(|m| created.get(m)).copied();
        let attempts = record.get(attempts).and_then(|a| a.parse().ok()).unwrap_or(0);
        if let (Some(slot), Some(counted)) = (slot, counted) {
            rows.push(Timed { slot, counted, attempts });
        }
    }
    rows
}

/// Milliseconds with one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The lag line: slot → counted over rows sent once, and the smallest
/// server-side distance between call k and call k − N for each limit.
fn lag_summary(rows: &[Timed]) -> String {
    let mut lags: Vec<Duration> = rows.iter().filter(|r| r.attempts == 1).map(Timed::lag).collect();
    lags.sort_unstable();
    let (Some(lo), Some(hi)) = (lags.first(), lags.last()) else {
        return "no rows".to_string();
    };
    let mut counted: Vec<SystemTime> = rows.iter().map(|r| r.counted).collect();
    counted.sort_unstable();
    let gaps: Vec<String> = limits()
        .into_iter()
        .filter_map(|l| {
            let n = l.calls as usize;
            (n..counted.len())
                .filter_map(|k| counted[k].duration_since(counted[k - n]).ok())
                .min()
                .map(|g| format!("{l} {} s", common::secs(g, 4)))
        })
        .collect();
    format!(
        "slot→counted lag {}..{} ms (median {}, spread {}); retried rows {}; smallest counted k−N→k: {}",
        ms(*lo),
        ms(*hi),
        ms(lags[lags.len() / 2]),
        ms(*hi - *lo),
        rows.iter().filter(|r| r.attempts > 1).count(),
        if gaps.is_empty() { "-".to_string() } else { gaps.join(", ") }
    )
}

/// The lag of every batch of 100 rows (`PACING_TRACE=1`).
fn batch_trace(rows: &[Timed]) {
    let Some(first) = rows.first() else { return };
    for (b, batch) in rows.chunks(100).enumerate() {
        let once: Vec<Duration> =
            batch.iter().filter(|r| r.attempts == 1).map(Timed::lag).collect();
        let slot = batch.iter().map(|r| r.slot).min().unwrap_or(first.slot);
        println!(
            "           batch {b:>3}: slot at {} s, lag {}..{} ms, {} retried",
            common::secs(slot.duration_since(first.slot).unwrap_or_default(), 4),
            once.iter().min().map_or("-".to_string(), |d| ms(*d)),
            once.iter().max().map_or("-".to_string(), |d| ms(*d)),
            batch.len() - once.len()
        );
    }
}

fn main() {
    let sel = selection();
    let limits_text: Vec<String> = limits().iter().map(|l| l.to_string()).collect();
    let margin_text = sel
        .margin
        .map_or("default (1% of each window, at most 250ms)".to_string(), format_duration);
    println!(
        "pacing: limits {} (client and server), latency {} ms, concurrency {CONCURRENCY}, pace margin {margin_text}",
        limits_text.join(" + "),
        LATENCY.as_millis()
    );
    println!(
        "{:<8} {:>6} {:>9} {:>9} {:>7} {:>5} {:>9}  verdict",
        "model", "N", "T (s)", "Tmin (s)", "T/Tmin", "429s", "submitted"
    );
    let case_margin =
        sel.margin.map_or(String::new(), |m| format!(", margin {}", format_duration(m)));
    let mut all_ok = true;
    for &model in &sel.models {
        for &n in &sel.sizes {
            let o = run_case(model, n, sel.margin);
            let allowed = o.bound.mul_f64(1.02) + Duration::from_millis(250);
            let ok = o.wall <= allowed && o.throttled == 0 && o.submitted == n && o.created == n;
            all_ok &= ok;
            let ratio = if o.bound.is_zero() {
                "-".to_string()
            } else {
                format!("{:.4}", o.wall.as_secs_f64() / o.bound.as_secs_f64())
            };
            println!(
                "{:<8} {:>6} {:>9} {:>9} {:>7} {:>5} {:>9}  {}",
                model.to_string(),
                n,
                common::secs(o.wall, 3),
                common::secs(o.bound, 3),
                ratio,
                o.throttled,
                o.submitted,
                if ok { "ok" } else { "MISSED" }
            );
            println!("           {}", lag_summary(&o.rows));
            if sel.trace {
                batch_trace(&o.rows);
            }
            common::table_row(
                "pacing",
                &format!("{model}, N = {n}{case_margin}"),
                &format!(
                    "T = {} s, T_min = {} s, T/T_min = {ratio}, 429s = {}, submitted {}/{n}",
                    common::secs(o.wall, 3),
                    common::secs(o.bound, 2),
                    o.throttled,
                    o.submitted
                ),
                &format!("T ≤ {} s, 0 × 429", common::secs(allowed, 2)),
                ok,
            );
        }
    }
    println!("pacing: {}", if all_ok { "every case within target" } else { "TARGET MISSED" });
}
