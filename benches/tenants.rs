//! Many tenants side by side: how long one run over T tenants × N rows
//! takes, against the best one tenant's quota allows for N rows.
//!
//! The quota is per app and tenant, so a run over 20 tenants may go 20
//! times faster than one over a single tenant — if each tenant is paced on
//! its own and the tenants overlap rather than add up. One simulator serves
//! T tenants (`--tenants T`), each with its own fleet and its own quota
//! `100/1s` + `1500/60s` (the API's compressed 60 times, as in the `pacing`
//! bench), 20 ms simulated latency; the input lists N machines of each
//! tenant, interleaved row by row as an MSSP's queue file would be, with a
//! `tenant` column; each tenant has its own client (its own login and
//! token), pacer and pool of 100 rows in flight; results go to a file with
//! a journal per tenant, as a real run. Target: T_wall ≤ 1.05 × T_min(N) +
//! 0.5 s, zero 429s in every tenant, every row `submitted`.
//!
//! `cargo bench --bench tenants [-- TENANTS [ROWS]]` (default 20 500).

mod common;

use std::time::{Duration, Instant};

use mdebulk::api::client::Client;
use mdebulk::input::TenantNames;
use mdebulk::pace::{Limit, WindowModel, minimum_time};
use mdebulk::results::Status;
use mdebulk::run::tenants::TenantSide;
use mdebulk::run::{ResultsTarget, Stop};
use mdebulk::sim::{FleetSpec, SimConfig};

use common::{RUN_THREAD, Scratch, SimHost};

/// Simulated latency of every request.
const LATENCY: Duration = Duration::from_millis(20);
/// Rows in flight, per tenant.
const CONCURRENCY: usize = 100;

/// The compressed quotas, on both sides, for every tenant.
fn limits() -> Vec<Limit> {
    common::compressed_limits()
}

fn main() {
    if std::env::var_os("TENANTS_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let args: Vec<usize> = common::args().iter().filter_map(|a| a.parse().ok()).collect();
    let tenants = args.first().copied().unwrap_or(20);
    let rows = args.get(1).copied().unwrap_or(500);
    let host = SimHost::start(SimConfig {
        tenants: Some(tenants),
        fleet: FleetSpec::Generate { machines: rows + 100 },
        limits: limits(),
        window: WindowModel::Sliding,
        latency: LATENCY,
        ..SimConfig::default()
    });
    let names: Vec<String> = host.sim().tenants().into_iter().map(|t| t.name).collect();
    let fleets: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let fleet = host.sim().tenant_fleet(n).expect("a tenant");
            fleet.into_iter().take(rows).map(|m| m.id).collect()
        })
        .collect();
    let dir = Scratch::new("tenants");
    let input = dir.path("queue.csv");
    let results = dir.path("queue.results.csv");
    let mut csv = String::with_capacity(tenants * rows * 56 + 32);
    csv.push_str("tenant,machine_id\n");
    for i in 0..rows {
        for (name, ids) in names.iter().zip(&fleets) {
            csv.push_str(&format!("{name},{}\n", ids[i]));
        }
    }
    std::fs::write(&input, csv).expect("write input");

    let mut config =
        common::run_config(&input, ResultsTarget::File(results.clone()), limits(), CONCURRENCY);
    config.defaults.tenants = Some(TenantNames::new(names.iter().map(|n| (n.clone(), n.clone()))));
    let sides: Vec<TenantSide<Client>> = names
        .iter()
        .map(|n| TenantSide {
            name: n.clone(),
            tenant_id: n.clone(),
            api: host.url(),
            limits: limits(),
            transport: common::client_in(&host.url(), n),
        })
        .collect();
    let rt = common::runtime(RUN_THREAD);
    // The simulator makes its signing key on the first login (a real
    // Entra ID has had its keys for years): made before the clock starts.
    rt.block_on(common::bearer(&reqwest::Client::new(), &host.url(), &names[0], "warm-up"));
    let t0 = Instant::now();
    tracing::info!("run begins");
    let summary = rt
        .block_on(mdebulk::run::tenants::run(&config, sides, Stop::new()))
        .expect("the run over many tenants");
    let wall = t0.elapsed();
    let began = std::time::SystemTime::now() - wall;
    let stats = host.stats();
    if std::env::var_os("TENANTS_TRACE").is_some() {
        trace(&results, began);
    }
    host.shutdown();

    let bound = minimum_time(&limits(), rows as u64);
    let allowed = bound.mul_f64(1.05) + Duration::from_millis(500);
    let total = (tenants * rows) as u64;
    let submitted = summary.get(Status::Submitted);
    let throttled: Vec<u64> = names.iter().map(|n| stats.tenants[n].throttled).collect();
    let created: Vec<u64> = names.iter().map(|n| stats.tenants[n].actions_created).collect();
    let ok = wall <= allowed
        && throttled.iter().all(|t| *t == 0)
        && submitted == total
        && created.iter().all(|c| *c == rows as u64);
    let ratio = wall.as_secs_f64() / bound.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "tenants: {tenants} tenants × {rows} rows, limits 100/1s + 1500/60s per tenant, latency {} ms, concurrency {CONCURRENCY} per tenant",
        LATENCY.as_millis()
    );
    println!(
        "T = {} s, T_min({rows}) = {} s, T/T_min = {ratio:.4}, 429s = {} (most in one tenant {}), submitted {submitted}/{total}, actions per tenant {}..{}: {}",
        common::secs(wall, 3),
        common::secs(bound, 2),
        throttled.iter().sum::<u64>(),
        throttled.iter().max().unwrap_or(&0),
        created.iter().min().unwrap_or(&0),
        created.iter().max().unwrap_or(&0),
        if ok { "ok" } else { "TARGET MISSED" }
    );
    common::table_row(
        "tenants",
        &format!("{tenants} tenants × {rows} rows, one run"),
        &format!(
            "T = {} s, T_min({rows}) = {} s, T/T_min = {ratio:.4}, 429s = {} in every tenant, submitted {submitted}/{total}",
            common::secs(wall, 3),
            common::secs(bound, 2),
            throttled.iter().max().unwrap_or(&0)
        ),
        &format!("T ≤ {} s, 0 × 429", common::secs(allowed, 2)),
        ok,
    );
}

/// Where the time went (`TENANTS_TRACE=1`): per tenant, the first and the
/// last request's slot after the run began.
fn trace(results: &std::path::Path, began: std::time::SystemTime) {
    let mut reader = csv::Reader::from_path(results).expect("results file");
    let headers = reader.headers().expect("header").clone();
    let col = |n: &str| headers.iter().position(|h| h == n).expect("column");
    let (tenant, requested) = (col("tenant"), col("requested_at"));
    let mut spans: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for record in reader.records() {
        let record = record.expect("row");
        let Some(at) = record.get(requested).and_then(mdebulk::api::time::parse_utc) else {
            continue;
        };
        let secs = at.duration_since(began).unwrap_or_default().as_secs_f64();
        let e = spans.entry(record[tenant].to_string()).or_insert((f64::MAX, 0.0));
        e.0 = e.0.min(secs);
        e.1 = e.1.max(secs);
    }
    for (t, (first, last)) in spans {
        println!("  {t}: first slot {first:.3} s, last {last:.3} s");
    }
}
