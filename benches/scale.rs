//! Scale: a generated input of 1,000,000 rows through `mdebulk run
//! --dry-run`, the release binary as a child process: wall time, CPU time
//! and peak resident memory (`VmHWM`). Target for 1,000,000 rows: under
//! 10 s and under 100 MB (10^6 bytes).
//!
//! The input is streamed, twice (survey, then execution); the one structure
//! that must grow with it is the duplicate check, which remembers a 128-bit
//! key and the first line of every valid row (a `HashMap<[u64; 2], u64>`
//! sized from the survey). The same run at a tenth of the size gives the
//! growth per row, which must not exceed that map's own size per row (plus
//! 4 bytes): anything more would mean rows are being held.
//!
//! The child is sampled every 2 ms through `/proc/<pid>/status` (`VmHWM`,
//! a high-water mark, so only growth in the last 2 ms before exit could be
//! missed) and `/proc/<pid>/stat` (utime + stime).
//!
//! `cargo bench --bench scale [-- ROWS...]` (default 100000 1000000).

mod common;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ProcSample, Scratch};

/// Time between two samples of the child.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// Wall-time target for the largest input.
const WALL_TARGET: Duration = Duration::from_secs(10);
/// Peak-RSS target for the largest input, in MB (10^6 bytes).
const RSS_TARGET_MB: f64 = 100.0;

/// Bytes of the runner's duplicate map for `rows` valid rows: hashbrown
/// gives a table sized for `n` entries the next power of two of `8n/7`
/// buckets, each holding one 24-byte entry (`[u64; 2]` key, `u64` line) and
/// one control byte.
fn duplicate_map_bytes(rows: usize) -> f64 {
    let buckets = if rows < 8 { 8 } else { (rows * 8).div_ceil(7).next_power_of_two() };
    (buckets * 25) as f64
}

/// Writes `rows` rows of `machine_id,owner,ticket`, every machine id distinct.
fn generate(path: &Path, rows: usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("input"));
    writeln!(out, "machine_id,owner,ticket").expect("write input");
    for i in 0..rows {
        // 24 random hex digits, then the row number: distinct, 40 hex digits.
        let high = rng.u128(..) >> 32;
        writeln!(out, "{high:024x}{i:016x},owner-{},IR-{}", i % 997, 1000 + i % 50)
            .expect("write input");
    }
    out.flush().expect("write input");
}

/// What one dry run measured.
struct Outcome {
    /// From spawn to exit.
    wall: Duration,
    /// The last sample before exit.
    last: ProcSample,
    /// Data rows of the results file.
    rows_out: usize,
    /// Of those, rows with status `planned`.
    planned: usize,
}

fn dry_run(input: &Path, results: &Path) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // A dry run sends no action but makes its read calls (the pre-flight
        // look-up of pending actions): against the simulator, in-process.
        .args(["run", "--dry-run", "--simulate", "--action", "isolate", "--comment", "bench"])
        .arg("--no-progress")
        .arg("--force")
        .arg("-o")
        .arg(results)
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("mdebulk binary");
    let pid = child.id();
    let mut last = ProcSample::default();
    let status = loop {
        if let Some(s) = common::sample(pid) {
            last = ProcSample {
                cpu: s.cpu.max(last.cpu),
                peak_rss_kib: s.peak_rss_kib.max(last.peak_rss_kib),
            };
        }
        if let Some(status) = child.try_wait().expect("wait for mdebulk") {
            break status;
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let wall = t0.elapsed();
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
        .unwrap_or_default();
    assert!(status.success(), "mdebulk --dry-run failed ({status}): {stderr}");
    let mut reader = csv::Reader::from_path(results).expect("results file");
    let column = reader
        .headers()
        .expect("results header")
        .iter()
        .position(|h| h == "status")
        .expect("status column");
    let (mut rows_out, mut planned) = (0, 0);
    for record in reader.records() {
        let record = record.expect("results row");
        rows_out += 1;
        if record.get(column) == Some("planned") {
            planned += 1;
        }
    }
    Outcome { wall, last, rows_out, planned }
}

fn main() {
    let mut sizes: Vec<usize> = common::args().iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![100_000, 1_000_000];
    }
    sizes.sort_unstable();
    println!(
        "scale: mdebulk run --dry-run on generated inputs ({})",
        env!("CARGO_BIN_EXE_mdebulk")
    );
    let largest = *sizes.last().expect("at least one size");
    let mut measured = Vec::new();
    for &rows in &sizes {
        let dir = Scratch::new(&format!("scale-{rows}"));
        let input = dir.path("hosts.csv");
        generate(&input, rows);
        let size_mb = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let o = dry_run(&input, &dir.path("hosts.results.csv"));
        let rss_mb = o.last.peak_rss_kib as f64 * 1024.0 / 1e6;
        let all_planned = o.rows_out == rows && o.planned == rows;
        println!(
            "{rows:>9} rows ({size_mb:.1} MB): wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {} rows planned",
            o.wall.as_secs_f64(),
            o.last.cpu.as_secs_f64(),
            o.planned
        );
        let (target, ok) = if rows == largest {
            (
                format!("< {} s, < {RSS_TARGET_MB:.0} MB", WALL_TARGET.as_secs()),
                o.wall < WALL_TARGET && rss_mb < RSS_TARGET_MB && all_planned,
            )
        } else {
            ("-".to_string(), all_planned)
        };
        common::table_row(
            "scale",
            &format!("{rows} rows through --dry-run ({size_mb:.0} MB CSV)"),
            &format!(
                "wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {}/{rows} planned",
                o.wall.as_secs_f64(),
                o.last.cpu.as_secs_f64(),
                o.planned
            ),
            &target,
            ok,
        );
        measured.push((rows, o.last.peak_rss_kib));
    }
    if let (Some(&(small, small_kib)), Some(&(big, big_kib))) = (measured.first(), measured.last())
        && big > small
    {
        let rows = (big - small) as f64;
        let per_row = (big_kib as f64 - small_kib as f64) * 1024.0 / rows;
        let map_per_row = (duplicate_map_bytes(big) - duplicate_map_bytes(small)) / rows;
        println!(
            "memory growth: {per_row:.1} bytes per input row between {small} and {big} rows (the duplicate map accounts for {map_per_row:.1})"
        );
        common::table_row(
            "scale",
            &format!("peak RSS growth, {small} → {big} rows"),
            &format!(
                "{per_row:.1} bytes per row, of which the duplicate map {map_per_row:.1}; rows streamed"
            ),
            &format!("≤ {:.1} (map + 4)", map_per_row + 4.0),
            per_row <= map_per_row + 4.0,
        );
    }
}
