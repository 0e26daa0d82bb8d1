//! Inputs that break naive readers, end to end: the real binary against the
//! real simulator. Every one either runs with the right line numbers or is
//! refused with exit 2, a short message naming the file and line, and no
//! request sent.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use mdebulk::sim::Sim;

/// Asserts `out` is an input error (exit 2) that names each of `expect`,
/// sent nothing and wrote no results beside `input`.
fn assert_refused(sim: &Sim, out: &Output, input: &Path, expect: &[&str]) {
    let err = text(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in {err}");
    }
    let results = input.with_extension("results.csv");
    assert!(!results.exists(), "a results file was written: {}", results.display());
    assert_eq!(stats(sim).requests, 0, "a request was sent for a refused file: {err}");
}

/// The machine ids of `n` machines that accept every action.
fn ids(sim: &Sim, n: usize) -> Vec<String> {
    windows_online(sim, n).into_iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_only_and_mixed_line_ends_give_each_row_its_own_line() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("cr-lines");
    let m = ids(&sim, 3);
    // Excel's "CSV (Macintosh)": a lone CR ends every line.
    let mac = dir
        .write("mac.csv", format!("machine_id,owner\r{},ann\r\r{},bob\r{},cy\r", m[0], m[1], m[2]));
    let out = output(isolate(&sim, &mac, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("mac.results.csv"));
    let lines: Vec<&str> = rows.iter().map(|r| r["line"].as_str()).collect();
    assert_eq!(lines, ["2", "4", "5"]);
    assert_eq!(rows[1]["owner"], "bob");
    // A bad row in a mixed file is reported on its own line.
    let mixed = dir.write("mixed.csv", format!("machine_id\r\n{}\r{}\n\rnot-hex\r\n", m[0], m[1]));
    let before = stats(&sim).requests;
    let out = output(isolate(&sim, &mixed, &[])).await;
    let err = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mixed.csv: line 5, column machine_id: \"not-hex\""), "{err}");
    assert_eq!(stats(&sim).requests, before, "a request was sent for a refused file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unterminated_quote_is_an_error_at_its_line_and_nothing_is_sent() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("quote");
    let m = ids(&sim, 3);
    // The quote in the last column would swallow every later row.
    let input = dir.write(
        "open.csv",
        format!("machine_id,comment\n{},ok\n{},\"IR-7 contain\n{},x\n", m[0], m[1], m[2]),
    );
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(
        &sim,
        &out,
        &input,
        &["open.csv: line 3, column comment: a quote opens a field here and is never closed"],
    );
    // Closed, but only hundreds of lines later: a missing quote too.
    let mut far = format!("machine_id,comment\n{},\"IR-7\n", m[0]);
    for _ in 0..300 {
        far.push_str(&format!("{},x\n", m[1]));
    }
    far.push_str(&format!("{},\"late\"\n", m[2]));
    let input = dir.write("far.csv", far);
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(&sim, &out, &input, &["far.csv: line 2, column comment", "253 line breaks"]);
    // JSONL: an unterminated string is a JSON error on its own line.
    let input = dir.write(
        "open.jsonl",
        format!(
            "{{\"machine_id\":\"{}\"}}\n{{\"machine_id\":\"{}\",\"comment\":\"a}}\n",
            m[0], m[1]
        ),
    );
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(&sim, &out, &input, &["open.jsonl: line 2, column"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_11_mb_cell_and_escape_codes_make_short_escaped_messages() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("big-cell");
    let good = ids(&sim, 1).remove(0);
    let big = format!("\x1b]0;owned\x07\x1b[2J{}", "A".repeat(11 * 1024 * 1024));
    let input = dir.write("big.csv", format!("machine_id,owner\n{good},ann\n{big},bob\n"));
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(
        &sim,
        &out,
        &input,
        &["line 3, column machine_id: \"\\x1b]0;owned\\x07\\x1b[2JAAA"],
    );
    assert!(out.stderr.len() < 1024, "{} bytes on stderr", out.stderr.len());
    assert!(!out.stderr.contains(&0x1b) && !out.stdout.contains(&0x1b), "a raw ESC was printed");
    assert!(text(&out).contains("more bytes)"), "{}", text(&out));
    // In a header, and in an action that is not one.
    let input = dir.write("esc.csv", "\x1b[31mowner,\u{9b}2Jticket\nann,1\n");
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(&sim, &out, &input, &["[\\x1b[31mowner, \\u{9b}2Jticket]"]);
    assert!(
        !out.stderr.contains(&0x1b) && !String::from_utf8_lossy(&out.stderr).contains('\u{9b}')
    );
    let input = dir.write("act.csv", format!("machine_id,action\n{good},\"\x1b[5mnuke\nnow\"\n"));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--comment", "x"]);
    let out = output(cmd).await;
    assert_refused(&sim, &out, &input, &["line 2, column action: \"\\x1b[5mnuke\\nnow\""]);
    assert!(!out.stderr.contains(&0x1b), "a raw ESC was printed: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_over_the_limit_is_refused_before_any_call() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("comment");
    let m = ids(&sim, 2);
    let huge = "c".repeat(11 * 1024 * 1024);
    let input =
        dir.write("long.csv", format!("machine_id,comment\n{},IR-1\n{},{huge}\n", m[0], m[1]));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate"]);
    let out = output(cmd).await;
    assert_refused(
        &sim,
        &out,
        &input,
        &[
            "line 3, column comment",
            "the comment is 11534336 characters; mdebulk sends at most 4000",
        ],
    );
    assert!(out.stderr.len() < 1024, "{} bytes on stderr", out.stderr.len());
    // The flag is held to the same limit.
    let input = dir.write("ok.csv", format!("machine_id\n{}\n", m[0]));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate", "--comment"]).arg("c".repeat(5000));
    let out = output(cmd).await;
    assert_refused(
        &sim,
        &out,
        &input,
        &["--comment is 5000 characters long; mdebulk sends at most 4000"],
    );
    // At the limit, it is sent.
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate", "--comment"]).arg("c".repeat(4000));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stats(&sim).actions_created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_files_are_read_and_utf32_refused_naming_the_encoding() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("utf16");
    let good = ids(&sim, 3);
    let utf16le = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
    let csv = |id: &str| format!("machine_id,comment\r\n{id},Zoë\r\n");
    // What Windows PowerShell 5's Out-File writes (with a BOM), and the same
    // without one: decoded, each row on its own line.
    for (name, bytes, id) in [
        ("bom.csv", [&b"\xFF\xFE"[..], &utf16le(&csv(&good[0]))].concat(), &good[0]),
        ("nobom.csv", utf16le(&csv(&good[1])), &good[1]),
        ("wide.jsonl", utf16le(&format!("{{\"machine_id\":\"{}\"}}\n", good[2])), &good[2]),
    ] {
        let input = dir.write(name, bytes);
        let out = output(isolate(&sim, &input, &[])).await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let rows = read_results(&input.with_extension("results.csv"));
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(
            (rows[0]["machine_id"].as_str(), rows[0]["status"].as_str()),
            (id.as_str(), "submitted")
        );
    }
    // UTF-32, which no spreadsheet writes, is refused naming it.
    let before = stats(&sim).requests;
    let wide: Vec<u8> = csv(&good[0]).chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
    let input = dir.write("utf32.csv", wide);
    let out = output(isolate(&sim, &input, &[])).await;
    let err = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("utf32.csv: the file is UTF-32LE"), "{err}");
    assert!(!err.contains("no machine id") && !err.contains("not valid UTF-8"), "{err}");
    assert_eq!(stats(&sim).requests, before, "a request was sent for a refused file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_only_file_is_an_empty_queue_and_says_so() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("empty-queue");
    for (name, flags) in [("dry.csv", &["--dry-run"][..]), ("run.csv", &[][..])] {
        let input = dir.write(name, "machine_id,comment\r\n");
        let out = output(isolate(&sim, &input, flags)).await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("no rows to act on"), "{name}: {stdout}");
        assert!(
            read_results(&input.with_extension(if flags.is_empty() {
                "results.csv"
            } else {
                "plan.csv"
            }))
            .is_empty()
        );
    }
    assert_eq!(stats(&sim).actions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_with_a_new_key_on_every_line_is_refused() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("keys");
    let good = ids(&sim, 1).remove(0);
    let mut jsonl = String::new();
    for i in 0..20_000 {
        jsonl.push_str(&format!("{{\"machine_id\":\"{good}\",\"field_{i}\":\"v\"}}\n"));
    }
    let input = dir.write("keys.jsonl", jsonl);
    let out = output(isolate(&sim, &input, &[])).await;
    assert_refused(
        &sim,
        &out,
        &input,
        &["keys.jsonl: line 256: key \"field_255\"", "at most 256 distinct keys"],
    );
}
