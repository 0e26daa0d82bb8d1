//! Throughput of the simulator with quotas off: many concurrent keep-alive
//! clients doing simple calls over loopback, a fixed number of requests per
//! scenario, requests per second printed. The simulator must never be the
//! bottleneck of a run: the goal is at least 10,000 requests/s on two cores.
//!
//! `cargo bench --bench sim_throughput` (optionally `-- REQUESTS CLIENTS`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mdebulk::sim::{FleetSpec, Sim, SimConfig};

/// Builds request number `i` on a client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Sends `total` requests from `clients` concurrent tasks; `make` builds the
/// request for number `i`. Returns requests per second; panics on any
/// unexpected status, so a fast wrong answer cannot pass for speed.
async fn drive(clients: usize, total: usize, expect: u16, make: MakeRequest) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let next = next.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            // One keep-alive connection per client.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let res = make(&http, i).send().await.expect("request");
                let status = res.status().as_u16();
                let _ = res.bytes().await.expect("body");
                assert_eq!(status, expect, "request {i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let total: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let clients: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let sim = Sim::start(SimConfig {
            listen: "127.0.0.1:0".into(),
            fleet: FleetSpec::Generate { machines: 1000 },
            limits: Vec::new(),
            settle: Duration::ZERO,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let base = sim.url();
        let bearer = Arc::new(common::bearer(&reqwest::Client::new(), &base, "bench", "bench").await);
        let fleet = sim.fleet();
        let ids: Arc<Vec<String>> = Arc::new(fleet.iter().map(|m| m.id.clone()).collect());
        // Actions on offline machines (the re-imaged twins) stay Pending, so
        // POSTs go to online ones only.
        let online: Arc<Vec<String>> = Arc::new(
            fleet
                .iter()
                .filter(|m| m.health_status.as_deref() == Some("Active"))
                .map(|m| m.id.clone())
                .collect(),
        );
        println!("sim_throughput: {total} requests per scenario, {clients} keep-alive clients, limits none");

        let (b, i, u) = (bearer.clone(), ids.clone(), base.clone());
        let get = drive(
            clients,
            total,
            200,
            Arc::new(move |http, n| {
                http.get(format!("{u}/api/machines/{}", i[n % i.len()]))
                    .header("Authorization", b.as_str())
            }),
        )
        .await;
        println!("GET  machines/{{id}}:     {get:>9.0} requests/s");

        // Settle 0 ends every action at once, so each POST creates a new one.
        let (b, i, u) = (bearer.clone(), online.clone(), base.clone());
        let post = drive(
            clients,
            total / 4,
            201,
            Arc::new(move |http, n| {
                http.post(format!("{u}/api/machines/{}/runAntiVirusScan", i[n % i.len()]))
                    .header("Authorization", b.as_str())
                    .json(&serde_json::json!({"Comment": "bench", "ScanType": "Quick"}))
            }),
        )
        .await;
        println!("POST machines/{{id}}/scan: {post:>9.0} requests/s");

        let stats = sim.stats();
        assert_eq!(stats.actions_created as usize, total / 4);
        let verdict = if get >= 10_000.0 { "ok" } else { "BELOW 10,000 requests/s" };
        println!("simple GETs: {verdict}");
        sim.shutdown().await;
    });
}
