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
//! The names path: `names=N` resolves N distinct device names against an
//! N-machine simulated tenant (a simulator on its own runtime in this
//! process, so only the runner's memory is read), through the paged
//! `GET machines` listing. What grows there is what the look-up keeps per
//! name and per machine, and one listing page at a time. Target for
//! 100,000 names: at most 60 MB.
//!
//! The workbook path: `xlsx=N` writes an N-row `.xlsx` (rust_xlsxwriter;
//! machine id, owner, a number-formatted ticket) and runs it through
//! `--dry-run`. A workbook cannot be streamed: the sheet is read whole at
//! open, so its peak memory grows with the sheet (no target: it is
//! measured and reported in the README).
//!
//! `cargo bench --bench scale [-- ROWS... names=N... xlsx=N...]` (default
//! 100000 1000000 names=100000 xlsx=100000; `names=0` and `xlsx=0` skip
//! those paths).

mod common;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ProcSample, Scratch, SimHost};
use mdebulk::sim::fleet::{host_name, twin_count};
use mdebulk::sim::{FleetSpec, SimConfig};

/// Time between two samples of the child.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// Wall-time target for the largest input.
const WALL_TARGET: Duration = Duration::from_secs(10);
/// Peak-RSS target for the largest input, in MB (10^6 bytes).
const RSS_TARGET_MB: f64 = 100.0;
/// Peak-RSS target of the names path for 100,000 names, in MB.
const NAMES_RSS_TARGET_MB: f64 = 60.0;

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

/// Writes an `.xlsx` of `rows` rows of `machine_id,owner,ticket` (the
/// ticket a number), every machine id distinct.
fn generate_workbook(path: &Path, rows: usize) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["machine_id", "owner", "ticket"].into_iter().enumerate() {
        sheet.write_string(0, c as u16, h).expect("write workbook");
    }
    for i in 0..rows {
        let high = rng.u128(..) >> 32;
        let r = i as u32 + 1;
        sheet.write_string(r, 0, format!("{high:024x}{i:016x}")).expect("write workbook");
        sheet.write_string(r, 1, format!("owner-{}", i % 997)).expect("write workbook");
        sheet.write_number(r, 2, (1000 + i % 50) as f64).expect("write workbook");
    }
    book.save(path).expect("write workbook");
}

/// The workbook path: an `xlsx`-row workbook through `--dry-run`.
fn workbook_path(rows: usize) {
    let dir = Scratch::new(&format!("scale-xlsx-{rows}"));
    let input = dir.path("hosts.xlsx");
    generate_workbook(&input, rows);
    let size_mb = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let o = dry_run(&input, &dir.path("hosts.results.csv"), Api::InProcess);
    let rss_mb = o.last.peak_rss_kib as f64 * 1024.0 / 1e6;
    println!(
        "{rows:>9} rows of .xlsx ({size_mb:.1} MB): wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {} rows planned",
        o.wall.as_secs_f64(),
        o.last.cpu.as_secs_f64(),
        o.planned
    );
    common::table_row(
        "scale",
        &format!("{rows} rows of .xlsx through --dry-run ({size_mb:.1} MB workbook, read whole)"),
        &format!(
            "wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {}/{rows} planned or not_found",
            o.wall.as_secs_f64(),
            o.last.cpu.as_secs_f64(),
            o.decided
        ),
        "-",
        o.rows_out == rows && o.decided == rows,
    );
}

/// Writes one `device_name` row per generated device name `host_name(i)`,
/// `i < names`: every name distinct.
fn generate_names(path: &Path, names: usize) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("input"));
    writeln!(out, "device_name,owner").expect("write input");
    for i in 0..names {
        writeln!(out, "{},owner-{}", host_name(i), i % 997).expect("write input");
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
    /// Rows `planned` or `not_found`: a generated machine id is not in the
    /// simulated tenant, and the dry run's id check says so; every row
    /// reaching one of the two is a row that went the whole way.
    decided: usize,
    /// Data rows per status.
    statuses: BTreeMap<String, usize>,
}

/// Where the dry run's read calls go.
enum Api<'a> {
    /// `--simulate`: a default simulator inside the runner.
    InProcess,
    /// A simulator at this URL, without quotas (`--limit none`).
    At(&'a str),
}

fn dry_run(input: &Path, results: &Path, api: Api<'_>) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // A dry run sends no action but makes its read calls (the device
    // look-ups, the pre-flight look-up of pending actions).
    cmd.args(["run", "--dry-run", "--action", "isolate", "--comment", "bench"]);
    match &api {
        Api::InProcess => {
            cmd.arg("--simulate");
        }
        Api::At(url) => {
            cmd.env("AZURE_TENANT_ID", "bench-tenant")
                .env("AZURE_CLIENT_ID", "mdebulk-bench")
                .env("AZURE_CLIENT_SECRET", "bench")
                .env("MDE_API_URL", *url)
                .env("MDE_LOGIN_URL", *url)
                .args(["--limit", "none"]);
        }
    }
    cmd.arg("--no-progress")
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
    // Exit 1 says some rows failed: the names path has ambiguous and
    // unknown names on purpose, and the generated machine ids are not in the
    // simulated tenant, which a dry run checks (counted below).
    assert!(
        status.success() || status.code() == Some(1),
        "mdebulk --dry-run failed ({status}): {stderr}"
    );
    let mut reader = csv::Reader::from_path(results).expect("results file");
    let column = reader
        .headers()
        .expect("results header")
        .iter()
        .position(|h| h == "status")
        .expect("status column");
    let mut statuses = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("results row");
        *statuses.entry(record.get(column).unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    let rows_out = statuses.values().sum();
    let planned = statuses.get("planned").copied().unwrap_or(0);
    let decided = planned + statuses.get("not_found").copied().unwrap_or(0);
    Outcome { wall, last, rows_out, planned, decided, statuses }
}

/// The names path: `names` distinct device names against a `names`-machine
/// tenant. The generated fleet's last `twin_count` records repeat the name
/// of an earlier device under a new id, so that many names are
/// `ambiguous`, and as many of the input's names (those of the last
/// indices) match nothing: every other name is `planned`.
fn names_path(names: usize) {
    let dir = Scratch::new(&format!("names-{names}"));
    let input = dir.path("names.csv");
    generate_names(&input, names);
    let host = SimHost::start(SimConfig {
        fleet: FleetSpec::Generate { machines: names },
        limits: Vec::new(),
        ..SimConfig::default()
    });
    let o = dry_run(&input, &dir.path("names.results.csv"), Api::At(&host.url()));
    let listing_calls = host.stats().by_api.get("GET machines").map_or(0, |a| a.calls);
    host.shutdown();
    let rss_mb = o.last.peak_rss_kib as f64 * 1024.0 / 1e6;
    let twins = twin_count(names);
    let count = |s: &str| o.statuses.get(s).copied().unwrap_or(0);
    let expected = count("planned") == names - 2 * twins
        && count("ambiguous") == twins
        && count("not_found") == twins
        && o.rows_out == names;
    println!(
        "{names:>9} names in a {names}-machine tenant: wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {listing_calls} listing calls, statuses {:?}",
        o.wall.as_secs_f64(),
        o.last.cpu.as_secs_f64(),
        o.statuses
    );
    let (target, ok) = if names == 100_000 {
        (format!("≤ {NAMES_RSS_TARGET_MB:.0} MB"), expected && rss_mb <= NAMES_RSS_TARGET_MB)
    } else {
        ("-".to_string(), expected)
    };
    common::table_row(
        "scale",
        &format!("names path: {names} names in a {names}-machine tenant (--dry-run)"),
        &format!(
            "wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {listing_calls} listing calls; {} planned, {} ambiguous, {} not_found",
            o.wall.as_secs_f64(),
            o.last.cpu.as_secs_f64(),
            count("planned"),
            count("ambiguous"),
            count("not_found")
        ),
        &target,
        ok,
    );
}

fn main() {
    let args = common::args();
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mut names: Vec<usize> =
        args.iter().filter_map(|a| a.strip_prefix("names=").and_then(|n| n.parse().ok())).collect();
    let mut workbooks: Vec<usize> =
        args.iter().filter_map(|a| a.strip_prefix("xlsx=").and_then(|n| n.parse().ok())).collect();
    if sizes.is_empty() && names.is_empty() && workbooks.is_empty() {
        sizes = vec![100_000, 1_000_000];
        names = vec![100_000];
        workbooks = vec![100_000];
    }
    workbooks.retain(|&n| n > 0);
    for &n in &workbooks {
        workbook_path(n);
    }
    names.retain(|&n| n > 0);
    for &n in &names {
        names_path(n);
    }
    if sizes.is_empty() {
        return;
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
        let o = dry_run(&input, &dir.path("hosts.results.csv"), Api::InProcess);
        let rss_mb = o.last.peak_rss_kib as f64 * 1024.0 / 1e6;
        let all_planned = o.rows_out == rows && o.decided == rows;
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
                "wall {:.2} s, CPU {:.2} s, peak RSS {rss_mb:.1} MB, {}/{rows} planned or not_found",
                o.wall.as_secs_f64(),
                o.last.cpu.as_secs_f64(),
                o.decided
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
