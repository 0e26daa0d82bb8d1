//! Property tests of every parser that reads what the tool did not write
//! itself, or wrote and may find torn: input rows (CSV, TSV, JSONL, device
//! lists, in UTF-8, UTF-16 and Windows-1252, and workbook sheets, written
//! with random cells or damaged, through the public [`Input`]
//! API), journal recovery ([`Journal::open`]),
//! `Retry-After` ([`parse_retry_after`]), timestamps ([`parse_utc`],
//! [`format_utc`]) and results rows read back ([`parse_result_row`], and
//! whole results files through their writers and [`ResultsFile`]).
//!
//! Each target draws its cases from a small seeded generator (`fastrand`):
//! seed corpora taken from the README's formats and `samples/`, then
//! mutations (hostile tokens, cut and repeated ranges, flipped bytes,
//! invalid UTF-8, broken quoting, deep JSON). Every case checks the
//! target's properties: it never panics, every error names what it must (a
//! line), and what is read back is what was written.
//!
//! CI runs a bounded number of cases per target (a few seconds in all). By
//! hand:
//!
//! - `MDEBULK_FUZZ_CASES=N`: cases per target.
//! - `MDEBULK_FUZZ_SECS=S`: instead, each target runs for S seconds (only
//!   bounds a run; no test asserts a duration).
//! - `MDEBULK_FUZZ_SEED=X`: case i draws from seed X + i. A failure prints
//!   the seed that replays it alone (with `MDEBULK_FUZZ_CASES=1`).
//!
//! `MDEBULK_FUZZ_SECS=90 cargo test --release --test fuzz_parsers -- --nocapture`
//! prints how many cases each target ran.

mod common;

use std::collections::HashMap;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::TempDir;
use fastrand::Rng;
use mdebulk::api::action::{ActionKind, fold_name};
use mdebulk::api::error::{MAX_RETRY_AFTER, parse_retry_after};
use mdebulk::api::time::{format_utc, parse_utc};
use mdebulk::input::{Input, InputError, InputFormat, InputSpec, RowDefaults, plan_row};
use mdebulk::output::{ResultFormat, sink};
use mdebulk::results::{RUNNER_COLUMNS, ResultRow, Status, Timestamp, parse_result_row};
use mdebulk::run::identity::RowKey;
use mdebulk::run::journal::{Intent, Journal, KeyedRow, Record};
use mdebulk::run::rewrite::ResultsFile;
use reqwest::header::{DATE, HeaderMap, HeaderValue, RETRY_AFTER};

/// Seed of the first case when `MDEBULK_FUZZ_SEED` is not set: fixed, so CI
/// runs the same cases every time.
const DEFAULT_SEED: u64 = 0x6d64_6562_756c_6b00;

/// How much of a failing case's input a failure message shows.
const SHOWN_INPUT: usize = 3_000;

/// How many cases a target runs, from the environment.
enum Budget {
    /// This many cases.
    Cases(u64),
    /// As many as fit in this long.
    For(Duration),
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a whole number"),
    }
}

/// Runs `check` on `default_cases` inputs drawn by `generate` (or as the
/// environment says), each from its own seed, and fails with the seed and
/// the input of the first case that breaks a property or panics.
fn fuzz<T: Debug>(
    target: &str,
    default_cases: u64,
    generate: impl Fn(&mut Rng) -> T,
    check: impl Fn(&T) -> Result<(), String>,
) {
    let budget = match (env_u64("MDEBULK_FUZZ_SECS"), env_u64("MDEBULK_FUZZ_CASES")) {
        (Some(secs), _) => Budget::For(Duration::from_secs(secs)),
        (None, Some(n)) => Budget::Cases(n),
        (None, None) => Budget::Cases(default_cases),
    };
    let first = env_u64("MDEBULK_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let started = Instant::now();
    let mut done = 0u64;
    loop {
        let more = match budget {
            Budget::Cases(n) => done < n,
            Budget::For(d) => started.elapsed() < d,
        };
        if !more {
            break;
        }
        let seed = first.wrapping_add(done);
        let mut rng = Rng::with_seed(seed);
        let input = generate(&mut rng);
        let failure = match panic::catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(payload) => Some(format!("panicked: {}", panic_text(&payload))),
        };
        if let Some(why) = failure {
            let mut shown = format!("{input:?}");
            if shown.len() > SHOWN_INPUT {
                let mut cut = SHOWN_INPUT;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push_str("...");
            }
            panic!(
                "{target}: case {done} (seed {seed}) failed: {why}\ninput: {shown}\nreplay: MDEBULK_FUZZ_SEED={seed} MDEBULK_FUZZ_CASES=1 cargo test --test fuzz_parsers {target}"
            );
        }
        done += 1;
    }
    eprintln!(
        "{target}: {done} cases in {:.1} s (seeds {first}..{})",
        started.elapsed().as_secs_f64(),
        first.wrapping_add(done)
    );
}

/// The message of a panic payload.
fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

// ---------------------------------------------------------------------------
// Byte-level generators.

/// Tokens that break parsers: quoting, separators, line ends, BOMs, invalid
/// or partial UTF-8, JSON structure and escapes, formula triggers.
const HOSTILE: &[&[u8]] = &[
    b"\"",
    b"\"\"",
    b"\"a,b\"",
    b",",
    b";",
    b"\t",
    b"|",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x9a",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"'",
    b"=cmd|' /C calc'!A0",
    b"+1",
    b"-",
    b"@",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"{\"a\":{\"b\":1}}",
    b"[1,2]",
    b"\xe2\x80\xa8",
    b"Zo\xc3\xab",
    "東京🚀".as_bytes(),
    b" ",
    b"machine_id",
    b"device_name",
    b"line",
    b"status",
    b"isolate",
    b"1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
];

/// A hostile token, or a run of one (long cells, deep nesting).
fn hostile(rng: &mut Rng) -> Vec<u8> {
    let token = HOSTILE[rng.usize(..HOSTILE.len())];
    if rng.u8(..16) == 0 {
        token.repeat(rng.usize(1..=if token.len() == 1 { 3_000 } else { 200 }))
    } else {
        token.to_vec()
    }
}

/// Up to `max` random bytes, ASCII-heavy.
fn noise(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(..=max);
    (0..len).map(|_| if rng.bool() { rng.u8(0x20..0x7f) } else { rng.u8(..) }).collect()
}

/// Applies one to eight random edits to `bytes`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..=8) {
        let len = bytes.len();
        let at = rng.usize(..=len);
        match rng.u8(..9) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                bytes[i] ^= 1 << rng.u8(..8);
            }
            1 | 2 => {
                let token = hostile(rng);
                bytes.splice(at..at, token);
            }
            3 if len > 0 => {
                let end = (at + rng.usize(..=64)).min(len);
                bytes.drain(at..end);
            }
            4 if len > 0 => {
                let end = (at + rng.usize(..=200)).min(len);
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            5 => bytes.truncate(at),
            6 => {
                let end = (at + rng.usize(..=16)).min(len);
                let n = noise(rng, 16);
                bytes.splice(at..end, n);
            }
            7 => {
                // Repeat a whole line somewhere else: records out of shape.
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let line = lines[rng.usize(..lines.len())].to_vec();
                bytes.splice(at..at, line.into_iter().chain([b'\n']));
            }
            _ => {
                let n = noise(rng, 8);
                bytes.splice(at..at, n);
            }
        }
    }
}

/// Physical lines of a file, as the readers count them (the last one
/// counts even without its line end).
fn physical_lines(bytes: &[u8]) -> u64 {
    // `\n`, `\r\n` and a lone `\r` each end one line.
    let lone_cr =
        bytes.iter().enumerate().filter(|(i, b)| **b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
    bytes.iter().filter(|b| **b == b'\n').count() as u64 + lone_cr.count() as u64 + 1
}

// ---------------------------------------------------------------------------
// Input rows.

/// Inputs in the README's formats and the samples'.
const INPUT_SEEDS: &[(&str, &[u8])] = &[
    ("csv", include_bytes!("../samples/isolate.csv")),
    ("csv", include_bytes!("../samples/by-name.csv")),
    ("csv", include_bytes!("../samples/mistakes.csv")),
    ("csv", include_bytes!("../samples/mixed-actions.csv")),
    ("jsonl", include_bytes!("../samples/isolate.jsonl")),
    (
        "csv",
        b"\xef\xbb\xbfDeviceName;Comment;Owner\r\nhost-1;contain;Zo\xc3\xab\r\nhost-2;\"a;b\";\r\n",
    ),
    ("tsv", b"machine_id\taction\tcomment\towner\n1e5bc9d7e413ddd7902c2932e418702b84d0cc07\tisolate\tIR-1\t\"multi\nline\"\n"),
    (
        "csv",
        b"aadDeviceId,ip,comment\n80fe7bd2-6c5e-4f3a-9f53-8f7b8f1c2d3e,,c\n,10.0.0.1,c\n,fe80::1,c\n",
    ),
    (
        "jsonl",
        b"{\"machine_id\":\"1e5bc9d7e413ddd7902c2932e418702b84d0cc07\",\"ticket\":7,\"vip\":true,\"note\":null}\n\n{\"device_name\":\"h\",\"comment\":\"x\"}\n",
    ),
    (
        "csv",
        b"owner,line,machine_id,action,status,action_id,action_status,http_status,error_code,error_message,attempts,requested_at,finished_at\nann,2,1e5bc9d7e413ddd7902c2932e418702b84d0cc07,isolate,submitted,a-1,Pending,201,,,1,2024-05-01T08:00:00.0000000Z,2024-05-01T08:00:00.5000000Z\n'=bob,3,,isolate,error,,,503,'=x,\"multi\nline\",5,,\n",
    ),
    // German Excel: semicolons, Windows-1252 (ä, ü), CRLF.
    ("csv", b"Ger\xe4tename;Kommentar;Zust\xe4ndig\r\nhost-1;Eind\xe4mmung;J\xfcrgen\r\n\r\nhost-2;;\x80\r\n"),
    // Excel's "Unicode Text": UTF-16LE with a BOM, tabs, a header.
    (
        "txt",
        b"\xff\xfeD\0e\0v\0i\0c\0e\0N\0a\0m\0e\0\t\0C\0o\0m\0m\0e\0n\0t\0\r\0\n\0h\0\xe9\0\t\0x\0\r\0\n\0",
    ),
    // UTF-16BE with a BOM.
    ("csv", b"\xfe\xff\0h\0o\0s\0t\0\n\0a\0\n\0\xfc\0\n"),
    // A host list: comments, blank lines, every kind of device value.
    (
        "txt",
        b"# IR-9\nhost-1.corp.example\n\n 1E5BC9D7E413DDD7902C2932E418702B84D0CC07 \n10.0.0.7\r\n80fe7bd2-6c5e-4f3a-9f53-8f7b8f1c2d3e\r# end\r",
    ),
];

/// One input file's case: its extension and bytes.
#[derive(Debug)]
struct InputCase {
    /// `csv`, `tsv`, `jsonl`, `ndjson` or `txt`.
    extension: &'static str,
    /// The file's bytes (shown escaped on failure).
    bytes: Vec<u8>,
}

fn gen_input(rng: &mut Rng) -> InputCase {
    let (extension, seed) = INPUT_SEEDS[rng.usize(..INPUT_SEEDS.len())];
    let mut bytes = seed.to_vec();
    match rng.u8(..10) {
        // Untouched now and then: the seeds themselves must read.
        0 => {}
        // Something else entirely.
        1 => bytes = noise(rng, 400),
        // The header too (most edits there make the file unusable, which
        // is checked, but reads no rows).
        2..=4 => mutate(rng, &mut bytes),
        // The rows only, below an intact header.
        _ => {
            let body = bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1);
            let mut rows = bytes.split_off(body);
            mutate(rng, &mut rows);
            bytes.extend_from_slice(&rows);
        }
    }
    // Now and then a format the bytes were not written in.
    let extension = match rng.u8(..24) {
        0 => "csv",
        1 => "tsv",
        2 => "jsonl",
        3 => "ndjson",
        4 => "txt",
        _ => extension,
    };
    InputCase { extension, bytes }
}

/// What one pass over an input read, with the file name taken out so a
/// file and stdin can be compared.
#[derive(Debug, PartialEq)]
enum Item {
    /// A record: line, cells, and its problems as text.
    Record(u64, Vec<String>, Vec<String>),
    /// An error with the line it names.
    Error(u64, String),
}

/// The line an error names, if it is one of the errors a pass may yield.
fn error_line(e: &InputError) -> Option<u64> {
    match e {
        InputError::Json { line, .. }
        | InputError::Utf8 { line, .. }
        | InputError::Csv { line, .. }
        | InputError::UnclosedQuote { line, .. }
        | InputError::Decode { line, .. }
        | InputError::TooManyKeys { line, .. } => Some(*line),
        _ => None,
    }
}

/// How an input's lines are counted for the checks.
#[derive(Debug, Clone, Copy)]
struct Lines {
    /// Physical lines (line feeds + 1).
    count: u64,
    /// Items a pass may yield at most: one per line end of either kind
    /// (a CSV record may end at a bare CR), plus an error at the end.
    max_items: u64,
    /// Whether records must start on distinct lines: always, whatever the
    /// line ends (CR-only files included), since a row's line is what
    /// messages and results name it by.
    distinct: bool,
}

impl Lines {
    fn of(bytes: &[u8]) -> Lines {
        let ends = bytes.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64;
        Lines { count: physical_lines(bytes), max_items: ends + 2, distinct: true }
    }
}

/// Reads every record of `input` once, checking each.
fn read_pass(input: &Input, lines: Lines) -> Result<Vec<Item>, String> {
    let Lines { count: lines, max_items, distinct } = lines;
    let columns = input.columns();
    let width = columns.names().len();
    let defaults = RowDefaults {
        action: Some(ActionKind::Isolate),
        comment: Some("fuzz".to_string()),
        ..RowDefaults::default()
    };
    let mut items = Vec::new();
    let mut last_line = 0;
    let records = input.records().map_err(|e| format!("records() failed: {e}"))?;
    for item in records {
        // A pass makes progress: a bounded number of items.
        if items.len() as u64 >= max_items {
            return Err(format!("more than {max_items} items from {lines} lines"));
        }
        match item {
            Ok(record) => {
                let out_of_order =
                    record.line < last_line || (distinct && record.line == last_line);
                if record.line == 0 || record.line > lines || out_of_order {
                    return Err(format!(
                        "record at line {} (previous {last_line}, {lines} lines)",
                        record.line
                    ));
                }
                last_line = record.line;
                if record.values.len() != width {
                    return Err(format!(
                        "line {}: {} values for {width} columns",
                        record.line,
                        record.values.len()
                    ));
                }
                if let Some(p) = record.problems.iter().find(|p| p.line != record.line) {
                    return Err(format!("line {}: a problem names line {}", record.line, p.line));
                }
                if let Err(problems) = plan_row(&record, columns, &defaults) {
                    if problems.is_empty() {
                        return Err(format!("line {}: refused without a problem", record.line));
                    }
                    if let Some(p) = problems.iter().find(|p| p.line != record.line) {
                        return Err(format!(
                            "line {}: a planning problem names line {}",
                            record.line, p.line
                        ));
                    }
                }
                let problems = record.problems.iter().map(|p| p.to_string()).collect();
                items.push(Item::Record(record.line, record.values, problems));
            }
            Err(e) => {
                let Some(line) = error_line(&e) else {
                    return Err(format!("a pass yielded an error without a line: {e}"));
                };
                if line == 0 || line > lines {
                    return Err(format!("error names line {line} of {lines}: {e}"));
                }
                if !e.to_string().contains(&format!("line {line}")) {
                    return Err(format!("error message does not name its line {line}: {e}"));
                }
                last_line = last_line.max(line);
                items.push(Item::Error(line, e.to_string().replace(input.display_name(), "FILE")));
            }
        }
    }
    Ok(items)
}

/// What opening and reading an input gave: the columns and the items of
/// one pass, or the error at open (with the line it names, if any).
type Outcome = Result<(Vec<String>, Vec<Item>), Option<u64>>;

/// Opens and reads an input twice; `Err` when a property fails.
fn read_all(opened: Result<Input, InputError>, lines: Lines) -> Result<Outcome, String> {
    let input = match opened {
        Ok(input) => input,
        Err(e) => {
            let line = error_line(&e);
            if let Some(line) = line
                && (line == 0
                    || line > lines.count
                    || !e.to_string().contains(&format!("line {line}")))
            {
                return Err(format!("open error names line {line} of {}: {e}", lines.count));
            }
            if matches!(e, InputError::Io { .. } | InputError::UnknownFormat { .. }) {
                return Err(format!("unexpected open error: {e}"));
            }
            return Ok(Err(line));
        }
    };
    let first = read_pass(&input, lines)?;
    let again = read_pass(&input, lines)?;
    if first != again {
        return Err("a second pass read something else".to_string());
    }
    Ok(Ok((input.columns().names().to_vec(), first)))
}

fn check_input(case: &InputCase) -> Result<(), String> {
    let dir = TempDir::new("fuzz-input");
    let path = dir.write(&format!("input.{}", case.extension), &case.bytes);
    let lines = Lines::of(&case.bytes);
    let opened = Input::open(&InputSpec { path: Some(path), ..InputSpec::default() });
    // A `.txt` is a list or a tab-separated sheet, judged by its content;
    // stdin is told which the file turned out to be.
    let judged = opened.as_ref().ok().map(Input::format);
    let from_file = read_all(opened, lines)?;
    // Standard input is spooled and read the same way: same outcome. A
    // `.txt` that did not open may have been judged either way.
    let formats: &[InputFormat] = match (case.extension, judged) {
        ("csv", _) => &[InputFormat::Csv],
        ("tsv", _) => &[InputFormat::Tsv],
        ("txt", Some(InputFormat::Tsv)) => &[InputFormat::Tsv],
        ("txt", Some(_)) => &[InputFormat::Lines],
        ("txt", None) => &[InputFormat::Tsv, InputFormat::Lines],
        _ => &[InputFormat::Jsonl],
    };
    let mut from_stdin = Vec::new();
    for &format in formats {
        from_stdin.push(read_all(Input::from_reader(&case.bytes[..], Some(format)), lines)?);
    }
    if !from_stdin.contains(&from_file) {
        return Err(format!("file and stdin differ:\n{from_file:?}\n{from_stdin:?}"));
    }
    Ok(())
}

#[test]
fn input_rows_never_panic_and_every_error_names_its_line() {
    fuzz("input_rows", 400, gen_input, check_input);
}

// ---------------------------------------------------------------------------
// Journal recovery.

/// Text for the string fields of rows and intents.
const TEXTS: &[&str] = &[
    "",
    "plain",
    "quote \" and backslash \\ inside",
    "control \u{1} \u{1f} tab\tnew\nline\r",
    "Zoë 東京 🚀",
    "=cmd|' /C calc'!A0",
    "\u{7f} delete \u{2028}",
    "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
    "isolate",
];

fn text(rng: &mut Rng) -> String {
    let mut s = TEXTS[rng.usize(..TEXTS.len())].to_string();
    if rng.u8(..4) == 0 {
        s.extend((0..rng.usize(..12)).map(|_| rng.char(..)));
    }
    s
}

/// A row's or an intent's time: none a quarter of the time, else any
/// instant the format can say.
fn stamp(rng: &mut Rng) -> Option<Timestamp> {
    match rng.u8(..4) {
        0 => None,
        _ => Some(Timestamp::from(
            UNIX_EPOCH + Duration::new(rng.u64(0..253_402_300_800), rng.u32(..1_000_000_000)),
        )),
    }
}

/// A time's text as results files and journals hold it (empty for none).
fn timestamp(rng: &mut Rng) -> String {
    Timestamp::text_of(stamp(rng))
}

fn result_row(rng: &mut Rng, line: u64) -> ResultRow {
    ResultRow {
        line,
        machine_id: text(rng),
        action: text(rng),
        status: rng.bool().then(|| Status::ALL[rng.usize(..Status::ALL.len())]),
        action_id: text(rng),
        action_status: text(rng),
        http_status: rng.bool().then(|| rng.u16(100..=599)),
        error_code: text(rng),
        error_message: text(rng),
        attempts: if rng.bool() { rng.u32(..10) } else { rng.u32(..) },
        requested_at: stamp(rng),
        finished_at: stamp(rng),
        tag_result: text(rng),
    }
}

/// A journal's case: the lines written (each with its line end, but for a
/// torn last one) and, for the check, which were written intact.
#[derive(Debug)]
struct JournalCase {
    /// Each line's bytes.
    lines: Vec<Vec<u8>>,
    /// Whether the last line lacks its line end (a torn write).
    torn: bool,
}

fn gen_journal(rng: &mut Rng) -> JournalCase {
    let n = rng.usize(..40);
    // Few distinct rows, so records of one row meet.
    let span = rng.u64(1..=12);
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        let key = if rng.u8(..20) == 0 {
            text(rng)
        } else {
            format!("isolate|id:{}|||", rng.u64(1..=span))
        };
        let line = rng.u64(1..=span);
        let record = if rng.bool() {
            Record::Intent(Intent {
                key,
                line,
                machine_id: text(rng),
                action: text(rng),
                at: stamp(rng),
            })
        } else {
            Record::Row(KeyedRow { key, row: result_row(rng, line) })
        };
        let mut bytes = match serde_json::to_vec(&record) {
            Ok(b) => b,
            Err(e) => panic!("a journal record always encodes: {e}"),
        };
        match rng.u8(..6) {
            0 => mutate(rng, &mut bytes),
            1 => bytes = noise(rng, 80),
            _ => {}
        }
        // A record's own encoding never holds a line end (strings escape
        // it), but a mutation may: then it is several lines.
        bytes.push(b'\n');
        lines.push(bytes);
    }
    let torn = !lines.is_empty() && rng.u8(..3) == 0;
    if torn && let Some(last) = lines.last_mut() {
        last.pop();
        if rng.bool() {
            let cut = rng.usize(..=last.len());
            last.truncate(cut);
        }
    }
    JournalCase { lines, torn }
}

/// What recovery must know of the rows the readable lines name, read the
/// way a run writes them: each row key's last word (settled, or in doubt:
/// a request left, or its look-up failed).
fn expected_recovery(complete: &[u8]) -> HashMap<String, bool> {
    let mut settled = HashMap::new();
    for line in complete.split_inclusive(|b| *b == b'\n') {
        match serde_json::from_slice::<Record>(line) {
            Ok(Record::Intent(i)) => {
                settled.insert(i.key, false);
            }
            Ok(Record::Row(r)) => match r.row.status {
                Some(Status::InDoubt) => {
                    settled.insert(r.key, false);
                }
                Some(Status::NotSent) | None => {}
                Some(_) => {
                    settled.insert(r.key, true);
                }
            },
            Ok(_) | Err(_) => {}
        }
    }
    settled
}

fn check_journal(case: &JournalCase) -> Result<(), String> {
    let dir = TempDir::new("fuzz-journal");
    let path = dir.path("results.csv.journal");
    let bytes: Vec<u8> = case.lines.concat();
    std::fs::write(&path, &bytes).map_err(|e| e.to_string())?;
    let good = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let want = expected_recovery(&bytes[..good]);
    let (journal, got) = Journal::open(&path, false).map_err(|e| format!("open: {e}"))?;
    for (key, settled) in &want {
        let k = RowKey::from_journal(key.clone());
        // A request in doubt is never forgotten (forgetting it would send it
        // again blindly); a settled row is kept, unless a later record made
        // it doubtful again.
        let known = got.in_doubt.contains_key(&k) || got.rows.contains_key(&k);
        if !known {
            return Err(format!(
                "{key:?} ({}) forgotten",
                if *settled { "settled" } else { "in doubt" }
            ));
        }
        if got.rows.contains_key(&k) && got.in_doubt.contains_key(&k) {
            return Err(format!("{key:?} is both settled and in doubt"));
        }
    }
    // A torn tail is cut off, so the next record starts on a line of its own.
    let len = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    if len != good as u64 {
        return Err(format!(
            "file is {len} bytes after recovery, expected {good} (torn: {})",
            case.torn
        ));
    }
    let fresh = ResultRow {
        line: u64::MAX - 1,
        status: Some(Status::Submitted),
        error_message: "after recovery".to_string(),
        ..ResultRow::default()
    };
    let fresh_key = "isolate|id:after-recovery|||";
    journal.row_nowait(fresh_key, &fresh);
    // Dropping writes what is queued and releases the lock.
    drop(journal);
    let (_journal, again) = Journal::open(&path, false).map_err(|e| format!("reopen: {e}"))?;
    if again.rows.get(&RowKey::from_journal(fresh_key.to_string())) != Some(&fresh) {
        return Err("a row appended after recovery does not read back".to_string());
    }
    let mut expected = got.rows;
    expected.insert(RowKey::from_journal(fresh_key.to_string()), fresh);
    if again.rows != expected {
        return Err("reopening changed the recovered rows".to_string());
    }
    Ok(())
}

#[test]
fn journal_recovery_never_panics_and_never_forgets_a_row() {
    fuzz("journal_recovery", 300, gen_journal, check_journal);
}

// ---------------------------------------------------------------------------
// Retry-After.

/// A `Retry-After` header value and, maybe, a `Date` header, as bytes (a
/// header may carry any visible byte and obs-text).
#[derive(Debug)]
struct RetryCase {
    /// `Retry-After`.
    retry_after: Vec<u8>,
    /// `Date`, when there is one.
    date: Option<Vec<u8>>,
    /// Our clock.
    now: SystemTime,
}

fn http_date(rng: &mut Rng) -> Vec<u8> {
    let t = UNIX_EPOCH + Duration::from_secs(rng.u64(0..253_402_300_799));
    httpdate::fmt_http_date(t).into_bytes()
}

fn header_value(rng: &mut Rng) -> Vec<u8> {
    let mut v = match rng.u8(..8) {
        0 => rng.u64(..).to_string().into_bytes(),
        1 => rng.u64(..1_000).to_string().into_bytes(),
        2 => "9".repeat(rng.usize(1..40)).into_bytes(),
        3 | 4 => http_date(rng),
        5 => b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec(),
        6 => noise(rng, 40),
        _ => format!(" {} ", rng.u32(..)).into_bytes(),
    };
    if rng.u8(..3) == 0 {
        mutate(rng, &mut v);
    }
    v
}

fn gen_retry(rng: &mut Rng) -> RetryCase {
    RetryCase {
        retry_after: header_value(rng),
        date: rng.bool().then(|| if rng.bool() { http_date(rng) } else { header_value(rng) }),
        now: UNIX_EPOCH + Duration::from_secs(rng.u64(0..253_402_300_799)),
    }
}

/// The headers of a case; `None` when the bytes cannot be a header value
/// (control bytes), which the HTTP stack refuses before any parser sees it.
fn retry_headers(case: &RetryCase) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_bytes(&case.retry_after).ok()?);
    if let Some(date) = &case.date {
        headers.insert(DATE, HeaderValue::from_bytes(date).ok()?);
    }
    Some(headers)
}

/// A header value as text: only when it is visible ASCII (or tabs), as
/// the HTTP stack reads headers; anything else is unreadable.
fn header_text(bytes: &[u8]) -> Option<&str> {
    let visible = bytes.iter().all(|b| (32..127).contains(b) || *b == b'\t');
    if visible { std::str::from_utf8(bytes).ok() } else { None }
}

fn check_retry(case: &RetryCase) -> Result<(), String> {
    let Some(headers) = retry_headers(case) else { return Ok(()) };
    let got = parse_retry_after(&headers, case.now);
    // A header value is text only when it is visible ASCII (or tabs).
    let value = header_text(&case.retry_after);
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return match got {
            None => Ok(()),
            Some(d) => Err(format!("no readable value, yet a wait of {d:?}")),
        };
    };
    let want = if value.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds, however many digits: more than the cap is the cap.
        Some(value.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs))
    } else if let Ok(at) = httpdate::parse_http_date(value) {
        // An HTTP-date, from the reply's Date when it has a readable one.
        let reference = case
            .date
            .as_deref()
            .and_then(header_text)
            .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
            .unwrap_or(case.now);
        Some(at.duration_since(reference).unwrap_or(Duration::ZERO))
    } else {
        None
    };
    let want = want.map(|w| w.min(MAX_RETRY_AFTER));
    if got != want {
        return Err(format!("{value:?}: got {got:?}, expected {want:?}"));
    }
    Ok(())
}

#[test]
fn retry_after_never_panics_and_reads_seconds_and_dates() {
    fuzz("retry_after", 20_000, gen_retry, check_retry);
}

/// A `Retry-After` of more seconds than the monotonic clock can add (e.g.
/// `9999999999999999999`, which fits a `u64`) once panicked the runner's
/// `Instant::now() + wait`: every wait the parser returns is capped, so it
/// can always be added to the clock.
#[test]
fn retry_after_waits_can_be_added_to_the_clock() {
    fuzz("retry_after_waits", 20_000, gen_retry, |case| {
        let Some(headers) = retry_headers(case) else { return Ok(()) };
        match parse_retry_after(&headers, case.now) {
            Some(wait) if Instant::now().checked_add(wait).is_none() => {
                Err(format!("a wait of {wait:?} cannot be added to the clock"))
            }
            _ => Ok(()),
        }
    });
}

// ---------------------------------------------------------------------------
// Timestamps.

/// Strings near the service's timestamp format, and far from it.
fn gen_timestamp_text(rng: &mut Rng) -> String {
    let mut bytes = match rng.u8(..4) {
        0 => noise(rng, 40),
        _ => timestamp(rng).into_bytes(),
    };
    match rng.u8(..4) {
        0 => {}
        1 => {
            // One character swapped for a multi-byte one, at a position the
            // parser slices at.
            let at = rng.usize(..=bytes.len().min(30));
            let c = ["é", "東", "🚀", "٣", "\u{0}"][rng.usize(..5)];
            let end = (at + 1).min(bytes.len());
            bytes.splice(at..end, c.bytes());
        }
        _ => mutate(rng, &mut bytes),
    }
    match rng.u8(..5) {
        0 => bytes.extend_from_slice(b"+00:00"),
        1 => bytes.push(b' '),
        _ => {}
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn timestamps_round_trip_to_100_ns() {
    fuzz(
        "timestamps_round_trip",
        20_000,
        |rng| UNIX_EPOCH + Duration::new(rng.u64(0..253_402_300_800), rng.u32(..1_000_000_000)),
        |t| {
            let text = format_utc(*t);
            let ok_shape = text.len() == 28
                && text.as_bytes()[10] == b'T'
                && text.ends_with('Z')
                && text.as_bytes()[19] == b'.';
            if !ok_shape {
                return Err(format!("{t:?} formats as {text:?}"));
            }
            // Seven fractional digits: 100 ns ticks.
            let ticks = t.duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
            let want =
                UNIX_EPOCH + Duration::new(ticks.as_secs(), ticks.subsec_nanos() / 100 * 100);
            match parse_utc(&text) {
                Some(back) if back == want => Ok(()),
                other => Err(format!("{text:?} reads back as {other:?}, expected {want:?}")),
            }
        },
    );
}

#[test]
fn timestamps_text_never_panics_and_what_reads_writes_back() {
    fuzz("timestamps_text", 20_000, gen_timestamp_text, |s| {
        let Some(t) = parse_utc(s) else { return Ok(()) };
        // Whatever reads, writes and reads back as itself (to 100 ns).
        let text = format_utc(t);
        let again =
            parse_utc(&text).ok_or(format!("{s:?} read, but its text {text:?} does not"))?;
        if format_utc(again) != text {
            return Err(format!("{s:?} → {text:?} → {:?}", format_utc(again)));
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Results rows.

/// A results row as `(column, cell)` pairs: runner columns in any spelling,
/// unknown columns, hostile cells.
fn gen_cells(rng: &mut Rng) -> Vec<(String, String)> {
    let spell = |rng: &mut Rng, name: &str| -> String {
        match rng.u8(..4) {
            0 => name.to_uppercase(),
            1 => name.replace('_', " "),
            2 => name.replace('_', "-"),
            _ => name.to_string(),
        }
    };
    let cell = |rng: &mut Rng| -> String {
        match rng.u8(..8) {
            0 => rng.u64(..).to_string(),
            1 => format!("-{}", rng.u32(..)),
            2 => "9".repeat(rng.usize(1..30)),
            3 => Status::ALL[rng.usize(..Status::ALL.len())].as_str().to_uppercase(),
            4 => timestamp(rng),
            5 => String::from_utf8_lossy(&noise(rng, 20)).into_owned(),
            6 => format!(" {} ", rng.u16(..)),
            _ => text(rng),
        }
    };
    (0..rng.usize(..20))
        .map(|_| {
            let name = if rng.u8(..5) == 0 {
                text(rng)
            } else {
                let n = RUNNER_COLUMNS[rng.usize(..RUNNER_COLUMNS.len())];
                spell(rng, n)
            };
            (name, cell(rng))
        })
        .collect()
}

#[test]
fn results_cells_never_panic_and_every_error_names_a_runner_column() {
    fuzz("results_cells", 5_000, gen_cells, |cells| {
        match parse_result_row(cells.iter().map(|(n, v)| (n, v))) {
            Ok(_) => Ok(()),
            Err(errors) if errors.is_empty() => Err("refused without an error".to_string()),
            Err(errors) => match errors
                .iter()
                .find(|e| !RUNNER_COLUMNS.iter().any(|c| fold_name(c) == fold_name(&e.column)))
            {
                Some(e) => Err(format!("error on a column that is not the runner's: {e}")),
                None => Ok(()),
            },
        }
    });
}

/// A results file's case: the format, the user's columns and the rows.
#[derive(Debug)]
struct ResultsCase {
    /// CSV or JSONL.
    format: ResultFormat,
    /// The user's column names.
    user_columns: Vec<String>,
    /// Each row: user cells, runner row.
    rows: Vec<(Vec<String>, ResultRow)>,
}

/// Text a runner field keeps as written: the reader trims these.
fn trimmed_text(rng: &mut Rng) -> String {
    text(rng).trim().to_string()
}

fn gen_results(rng: &mut Rng) -> ResultsCase {
    let format = if rng.bool() { ResultFormat::Csv } else { ResultFormat::Jsonl };
    let user_columns: Vec<String> = (0..rng.usize(..4)).map(|i| format!("owner{i}")).collect();
    let rows = (0..rng.usize(1..12))
        .map(|i| {
            let user = user_columns.iter().map(|_| text(rng)).collect();
            let mut row = result_row(rng, 2 + i as u64);
            row.machine_id = trimmed_text(rng);
            row.action = trimmed_text(rng);
            row.action_id = trimmed_text(rng);
            row.action_status = trimmed_text(rng);
            (user, row)
        })
        .collect();
    ResultsCase { format, user_columns, rows }
}

/// A writer into a shared buffer, handed to a sink that wants to own it.
#[derive(Clone, Default)]
struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_results(case: &ResultsCase) -> Result<(), String> {
    let buffer = Buffer::default();
    let mut out = sink(case.format, buffer.clone(), &case.user_columns);
    for (user, row) in &case.rows {
        out.write_row(user, row).map_err(|e| format!("write: {e}"))?;
    }
    out.flush().map_err(|e| format!("flush: {e}"))?;
    drop(out);
    let bytes = buffer.0.lock().map_err(|_| "poisoned".to_string())?.clone();
    let dir = TempDir::new("fuzz-results");
    let path = dir.write(&format!("run.results.{}", case.format.extension()), &bytes);
    read_back(&path, case)
}

fn read_back(path: &Path, case: &ResultsCase) -> Result<(), String> {
    let file = ResultsFile::open(path).map_err(|e| format!("open: {e}"))?;
    if file.user_columns() != case.user_columns.as_slice() {
        return Err(format!("user columns read back as {:?}", file.user_columns()));
    }
    let entries = file.entries().map_err(|e| format!("entries: {e}"))?;
    let mut n = 0;
    for (entry, (user, row)) in entries.zip(&case.rows) {
        let entry = entry.map_err(|e| format!("row {n}: {e}"))?;
        if entry.user != *user || entry.row != *row {
            return Err(format!("row {n} read back as {entry:?}"));
        }
        n += 1;
    }
    if n != case.rows.len() {
        return Err(format!("{n} rows read back of {}", case.rows.len()));
    }
    Ok(())
}

#[test]
fn results_rows_read_back_exactly_as_written() {
    fuzz("results_rows", 400, gen_results, check_results);
}

// ---------------------------------------------------------------------------
// Workbooks: sheets written with random cells, and damaged workbook bytes.

/// One workbook case: rows of cells written with rust_xlsxwriter at the
/// given sheet rows, or the committed fixture's bytes damaged.
#[derive(Debug)]
enum WorkbookCase {
    /// `(sheet row, cells)`, rows ascending; the header is the first.
    Written(Vec<(u32, Vec<WorkbookCell>)>),
    /// Bytes of a workbook that may be damaged anywhere.
    Damaged(Vec<u8>),
}

/// A cell as written.
#[derive(Debug, Clone)]
enum WorkbookCell {
    /// A text cell.
    Text(String),
    /// A number cell (finite).
    Number(f64),
    /// A boolean cell.
    Bool(bool),
}

fn gen_workbook(rng: &mut Rng) -> WorkbookCase {
    if rng.u8(..4) == 0 {
        let mut bytes = include_bytes!("fixtures/handmade.xlsx").to_vec();
        mutate(rng, &mut bytes);
        return WorkbookCase::Damaged(bytes);
    }
    let width = rng.usize(1..=5);
    let mut row = rng.u32(..4);
    let mut rows = Vec::new();
    let header: Vec<WorkbookCell> = (0..width)
        .map(|c| WorkbookCell::Text(if c == 0 { "device_name".into() } else { format!("c{c}") }))
        .collect();
    rows.push((row, header));
    for _ in 0..rng.usize(..20) {
        row += rng.u32(1..=3);
        let cells = (0..width)
            .map(|c| match (c, rng.u8(..6)) {
                (0, _) => WorkbookCell::Text(format!("host-{}", rng.u16(..))),
                (_, 0) => WorkbookCell::Number(rng.i64(-(1 << 53)..(1 << 53)) as f64),
                (_, 1) => {
                    let f = f64::from_bits(rng.u64(..));
                    WorkbookCell::Number(if f.is_finite() { f } else { 0.5 })
                }
                (_, 2) => WorkbookCell::Bool(rng.bool()),
                (_, 3) => WorkbookCell::Number(rng.f64() * 1e16),
                _ => WorkbookCell::Text(text(rng)),
            })
            .collect();
        rows.push((row, cells));
    }
    WorkbookCase::Written(rows)
}

fn check_workbook(case: &WorkbookCase) -> Result<(), String> {
    let dir = TempDir::new("fuzz-workbook");
    let path = dir.path("book.xlsx");
    let rows = match case {
        WorkbookCase::Damaged(bytes) => {
            std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
            match Input::open(&InputSpec { path: Some(path), ..InputSpec::default() }) {
                Ok(input) => {
                    let lines: Vec<u64> = input
                        .records()
                        .map_err(|e| e.to_string())?
                        .map(|r| r.map(|r| r.line).map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?;
                    if lines.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(format!("rows out of order: {lines:?}"));
                    }
                }
                Err(
                    InputError::Workbook { .. }
                    | InputError::Empty { .. }
                    | InputError::NoTargetColumn { .. },
                ) => {}
                Err(e) => return Err(format!("unexpected error: {e}")),
            }
            return Ok(());
        }
        WorkbookCase::Written(rows) => rows,
    };
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, cells) in rows {
        for (c, cell) in cells.iter().enumerate() {
            let c = c as u16;
            match cell {
                WorkbookCell::Text(t) => sheet.write_string(*r, c, t).map(|_| ()),
                WorkbookCell::Number(n) => sheet.write_number(*r, c, *n).map(|_| ()),
                WorkbookCell::Bool(b) => sheet.write_boolean(*r, c, *b).map(|_| ()),
            }
            .map_err(|e| e.to_string())?;
        }
    }
    book.save(&path).map_err(|e| e.to_string())?;
    let input = Input::open(&InputSpec { path: Some(path), ..InputSpec::default() })
        .map_err(|e| format!("open: {e}"))?;
    let read: Vec<_> = input
        .records()
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    // Rows whose cells are all blank are skipped, like blank lines.
    let blank = |cells: &[WorkbookCell]| {
        cells.iter().all(|c| matches!(c, WorkbookCell::Text(t) if t.trim().is_empty()))
    };
    let expected: Vec<_> = rows[1..].iter().filter(|(_, cells)| !blank(cells)).collect();
    if read.len() != expected.len() {
        return Err(format!("{} rows read, {} written", read.len(), expected.len()));
    }
    for (record, (row, cells)) in read.iter().zip(expected) {
        if record.line != u64::from(*row) + 1 {
            return Err(format!("sheet row {} read as line {}", row + 1, record.line));
        }
        for (value, cell) in record.values.iter().zip(cells) {
            let ok = match cell {
                WorkbookCell::Text(t) => value == t,
                // The text a person sees: never an exponent, and exactly
                // the number written.
                WorkbookCell::Number(n) => {
                    !value.contains(['e', 'E']) && value.parse::<f64>().ok() == Some(*n)
                        || (*n == 0.0 && value == "0")
                }
                WorkbookCell::Bool(b) => value == if *b { "TRUE" } else { "FALSE" },
            };
            if !ok {
                return Err(format!("line {}: {cell:?} read as {value:?}", record.line));
            }
        }
    }
    Ok(())
}

#[test]
fn workbook_cells_read_back_as_written_and_damaged_workbooks_never_panic() {
    fuzz("workbooks", 60, gen_workbook, check_workbook);
}
