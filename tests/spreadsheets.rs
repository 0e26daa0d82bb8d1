//! Spreadsheets as responders really have them, end to end: the real binary
//! against the simulator with the files Excel and Defender's own portal
//! write (Windows-1252 and UTF-16 text, German `;` sheets, headerless host
//! lists, Advanced Hunting exports), and results that come back in the
//! input's own dialect so the same spreadsheet opens them in columns.

mod common;

use std::collections::HashMap;

use common::*;
use mdebulk::api::model::Machine;

/// `text` in Windows-1252 (every character of it must have a byte there).
fn cp1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '€' => 0x80,
            c if (c as u32) < 0x80 || (0xA0..=0xFF).contains(&(c as u32)) => c as u8,
            c => panic!("{c:?} is not in this test's Windows-1252 table"),
        })
        .collect()
}

/// `text` in UTF-16LE with a byte order mark: Excel's "Unicode Text".
fn utf16le_bom(text: &str) -> Vec<u8> {
    [&b"\xFF\xFE"[..], &text.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>()]
        .concat()
}

/// The device name of a machine, as the fleet knows it.
fn name(m: &Machine) -> &str {
    m.computer_dns_name.as_deref().unwrap()
}

/// The first line of a results file, without its BOM, and whether it had one
/// and ended its lines with CRLF.
fn shape(path: &std::path::Path) -> (String, bool, bool) {
    let bytes = std::fs::read(path).unwrap();
    let bom = bytes.starts_with(b"\xEF\xBB\xBF");
    let text = String::from_utf8(bytes).unwrap();
    let text = text.trim_start_matches('\u{feff}');
    let crlf = text.contains("\r\n");
    (text.lines().next().unwrap().to_string(), bom, crlf)
}

/// Values of `column` in file order.
fn column(rows: &[HashMap<String, String>], column: &str) -> Vec<String> {
    rows.iter().map(|r| r[column].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excels_plain_csv_in_windows_1252_is_read_with_its_accents_and_a_warning() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("cp1252");
    let m = windows_online(&sim, 2);
    let content =
        format!("DeviceId,Owner\r\n{},Zoë Müller\r\n\r\n{},Jérôme € ü\r\n", m[0].id, m[1].id);
    let input = dir.write("excel.csv", cp1252(&content));
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not valid UTF-8 (first at line 2); reading it as Windows-1252"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Windows-1252").count(), 1, "one warning: {stderr}");
    let results = dir.path("excel.results.csv");
    let rows = read_results(&results);
    assert_eq!(column(&rows, "Owner"), ["Zoë Müller", "Jérôme € ü"]);
    assert_eq!(column(&rows, "line"), ["2", "4"]);
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    // Comma and CRLF as the input had them, and a BOM: without one, Excel
    // takes UTF-8 for its own code page and garbles the accents.
    let (header, bom, crlf) = shape(&results);
    assert!(header.starts_with("DeviceId,Owner,line,machine_id,"), "{header}");
    assert!(bom && crlf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excels_unicode_text_is_utf16_tab_separated_with_a_header() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("unicode-text");
    let m = windows_online(&sim, 2);
    let content = format!(
        "DeviceName\tComment\tNotiz\r\n{}\tIR-1\tßäö\r\n{}\tIR-2\t東京\r\n",
        name(&m[0]),
        name(&m[1])
    );
    let input = dir.write("export.txt", utf16le_bom(&content));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let results = dir.path("export.results.csv");
    let rows = read_results(&results);
    assert_eq!(column(&rows, "machine_id"), [m[0].id.clone(), m[1].id.clone()]);
    assert_eq!(column(&rows, "Notiz"), ["ßäö", "東京"]);
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    let (header, bom, crlf) = shape(&results);
    // The DeviceName column lives on as the runner's device_name.
    assert!(header.starts_with("Comment\tNotiz\tline\tmachine_id\tdevice_name\t"), "{header}");
    assert_eq!(column(&rows, "device_name"), [name(&m[0]), name(&m[1])]);
    assert!(bom && crlf);
    // A broken UTF-16 file names the encoding and the line.
    let mut bad = utf16le_bom("DeviceName\r\nh1\r\n");
    bad.extend_from_slice(&[0x00, 0xDC, b'\r', 0, b'\n', 0]);
    let input = dir.write("broken.txt", bad);
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("broken.txt: line 3: not valid UTF-16LE"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn german_excel_semicolons_windows_1252_kommentar_round_trip_in_their_dialect() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("german");
    let m = windows_online(&sim, 2);
    let content = format!(
        "Gerätename;Kommentar;Zuständig\r\n{};Eindämmung IR-7;Jürgen\r\n\r\nno-such-host.example;Prüfung;Änne\r\n{};Eindämmung;Öztürk\r\n",
        name(&m[0]),
        name(&m[1])
    );
    let input = dir.write("geraete.csv", cp1252(&content));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "one row is not found: {}", text(&out));
    let results = dir.path("geraete.results.csv");
    let rows = read_results(&results);
    assert_eq!(column(&rows, "line"), ["2", "4", "5"]);
    assert_eq!(column(&rows, "status"), ["submitted", "not_found", "submitted"]);
    assert_eq!(column(&rows, "Zuständig"), ["Jürgen", "Änne", "Öztürk"]);
    assert_eq!(column(&rows, "Kommentar"), ["Eindämmung IR-7", "Prüfung", "Eindämmung"]);
    let (header, bom, crlf) = shape(&results);
    assert!(header.starts_with("Gerätename;Kommentar;Zuständig;line;machine_id;"), "{header}");
    assert!(bom && crlf, "German Excel opens it in columns with its umlauts");

    // `status --wait` rewrites the file in place and keeps its dialect.
    let mut cmd = mdebulk(&sim);
    cmd.arg("status").arg(&results).arg("--wait");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&results);
    assert_eq!(column(&rows, "status"), ["succeeded", "not_found", "succeeded"]);
    assert_eq!(column(&rows, "Zuständig"), ["Jürgen", "Änne", "Öztürk"]);
    assert_eq!(shape(&results), (header.clone(), true, true));

    // Undo releases the two isolations; its results keep the dialect too.
    let undo = dir.path("undo.csv");
    let mut cmd = mdebulk(&sim);
    cmd.arg("undo").arg(&results).args(["--yes", "--comment", "IR-7 Freigabe", "-o"]).arg(&undo);
    let out = output(cmd).await;
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let undone = read_results(&undo);
    assert_eq!(column(&undone, "Zuständig"), ["Jürgen", "Änne", "Öztürk"]);
    assert_eq!(undone.iter().filter(|r| r["action"] == "unisolate").count(), 2, "{undone:?}");
    let (undo_header, bom, crlf) = shape(&undo);
    assert!(undo_header.starts_with("Gerätename;Kommentar;Zuständig;line;"), "{undo_header}");
    assert!(bom && crlf);

    // The results replay with --only, and the replay's results are in the
    // same dialect.
    let replay = dir.path("replay.csv");
    let mut cmd = mdebulk(&sim);
    cmd.arg("run")
        .arg(&results)
        .args(["--only", "not_found", "--action", "isolate", "-o"])
        .arg(&replay);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&replay);
    assert_eq!(column(&rows, "Zuständig"), ["Änne"]);
    assert_eq!(column(&rows, "status"), ["not_found"]);
    let (replay_header, bom, crlf) = shape(&replay);
    assert!(replay_header.starts_with("Gerätename;Kommentar;Zuständig;line;"), "{replay_header}");
    assert!(bom && crlf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headerless_host_list_is_classified_line_by_line() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("hosts");
    let m = windows_online(&sim, 3);
    let content = format!(
        "# contain after IR-9\n{}\n\n  {}  \n# by id too\n{}\nnot-a-host.example\n",
        name(&m[0]),
        m[1].id.to_uppercase(),
        name(&m[2])
    );
    let input = dir.write("hosts.txt", content);
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(column(&rows, "line"), ["2", "4", "6", "7"]);
    assert_eq!(
        column(&rows, "device"),
        [
            name(&m[0]).to_string(),
            m[1].id.to_uppercase(),
            name(&m[2]).into(),
            "not-a-host.example".into()
        ]
    );
    assert_eq!(
        column(&rows, "machine_id")[..3],
        [m[0].id.clone(), m[1].id.clone(), m[2].id.clone()]
    );
    assert_eq!(column(&rows, "status"), ["submitted", "submitted", "submitted", "not_found"]);
    // The same list on stdin, named by --input-format.
    let mut cmd = isolate(&sim, std::path::Path::new("-"), &["--input-format", "lines", "-o"]);
    cmd.arg(dir.path("stdin.csv")).stdin(std::process::Stdio::piped());
    let list = format!("{}\n", m[0].id);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(column(&read_results(&dir.path("stdin.csv")), "line"), ["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advanced_hunting_export_goes_through_with_action_isolate() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("hunting");
    let m = windows_online(&sim, 2);
    let sha1 = "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508";
    let mut content = String::from(
        "Timestamp,DeviceId,DeviceName,ActionType,SHA1,FileName,InitiatingProcessAccountName\n",
    );
    for d in &m {
        content.push_str(&format!(
            "2026-11-30T08:12:44.123Z,{},{},ProcessCreated,{sha1},evil.exe,svc-backup\n",
            d.id,
            name(d)
        ));
    }
    let input = dir.write("hunting.csv", content);
    let out = output(isolate(&sim, &input, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("column \"SHA1\"").count(), 1, "one warning: {stderr}");
    assert!(stderr.contains("a parameter isolate does not take"), "{stderr}");
    let rows = read_results(&dir.path("hunting.results.csv"));
    assert_eq!(column(&rows, "action"), ["isolate", "isolate"]);
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    assert_eq!(column(&rows, "ActionType"), ["ProcessCreated", "ProcessCreated"]);
    assert_eq!(column(&rows, "SHA1"), [sha1, sha1]);
    assert_eq!(stats(&sim).actions_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_are_chosen_and_ignored_by_flag() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("columns");
    let m = windows_online(&sim, 2);
    // `hostname` holds stale names; the ids are under a header no alias knows.
    let content = format!(
        "Rechner-Kennung,hostname,Vermerk\n{},stale-1,IR-1\n{},stale-2,IR-2\n",
        m[0].id, m[1].id
    );
    let input = dir.write("inventory.csv", content);
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args([
        "--action",
        "isolate",
        "--column",
        "machine_id=Rechner-Kennung",
        "--column",
        "comment=Vermerk",
        "--ignore-column",
        "hostname",
    ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("inventory.results.csv"));
    assert_eq!(column(&rows, "machine_id"), [m[0].id.clone(), m[1].id.clone()]);
    assert_eq!(column(&rows, "hostname"), ["stale-1", "stale-2"]);
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    // A choice naming a column the file lacks is a usage error, before
    // anything is sent.
    let before = stats(&sim).actions_created;
    let mut cmd = isolate(&sim, &input, &["--column", "machine_id=Device Id", "-o"]);
    cmd.arg(dir.path("never.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--column machine_id=Device Id names the column \"Device Id\", but the header is [Rechner-Kennung, hostname, Vermerk]"),
        "{}",
        text(&out)
    );
    let mut cmd = isolate(&sim, &input, &["--sheet", "2", "-o"]);
    cmd.arg(dir.path("never.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--sheet chooses a sheet of a workbook"), "{}", text(&out));
    let mut cmd = isolate(&sim, &input, &["--column", "owner=Vermerk"]);
    cmd.arg("-o").arg(dir.path("never.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not ROLE=HEADER"), "{}", text(&out));
    assert_eq!(stats(&sim).actions_created, before);
}

/// A workbook as rust_xlsxwriter writes it: sheet `Geräte` with a blank
/// first row, the header on row 2, and a blank row between the data rows;
/// ids, a number-formatted ticket and a date per row.
fn write_workbook(path: &std::path::Path, rows: &[(&str, &str, f64)]) {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Geräte").unwrap();
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("dd.mm.yyyy");
    let ticket = Format::new().set_num_format("0");
    for (c, h) in ["DeviceId", "Zuständig", "Ticket", "Gesehen"].into_iter().enumerate() {
        sheet.write_string_with_format(1, c as u16, h, &bold).unwrap();
    }
    for (i, (id, owner, number)) in rows.iter().enumerate() {
        let r = 2 + 2 * i as u32;
        sheet.write_string(r, 0, *id).unwrap();
        sheet.write_string(r, 1, *owner).unwrap();
        sheet.write_number_with_format(r, 2, *number, &ticket).unwrap();
        let seen = ExcelDateTime::from_ymd(2026, 11, 30).unwrap();
        sheet.write_datetime_with_format(r, 3, seen, &date).unwrap();
    }
    book.save(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_is_read_with_the_sheets_row_numbers_and_cells_as_shown() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("workbook");
    let m = windows_online(&sim, 2);
    let book = dir.path("geraete.xlsx");
    write_workbook(&book, &[(&m[0].id, "Jürgen", 1.2e15), (&m[1].id, "Änne", 42.0)]);
    let out = output(isolate(&sim, &book, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("geraete.results.xlsx"));
    assert_eq!(column(&rows, "line"), ["3", "5"], "the sheet's own row numbers");
    assert_eq!(column(&rows, "machine_id"), [m[0].id.clone(), m[1].id.clone()]);
    assert_eq!(column(&rows, "Zuständig"), ["Jürgen", "Änne"]);
    assert_eq!(column(&rows, "Ticket"), ["1200000000000000", "42"], "not 1.2E+15, not 42.0");
    assert_eq!(column(&rows, "Gesehen"), ["2026-11-30", "2026-11-30"]);
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    // -o x.csv still gives CSV, in the dialect Excel opens in columns.
    let mut cmd = isolate(&sim, &book, &["--force", "-o"]);
    cmd.arg(dir.path("geraete.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (header, bom, crlf) = shape(&dir.path("geraete.csv"));
    assert!(header.starts_with("DeviceId,Zuständig,Ticket,Gesehen,line,machine_id,"), "{header}");
    assert!(bom && crlf, "Excel reads the results as UTF-8");
    assert_eq!(
        column(&read_results(&dir.path("geraete.csv")), "Ticket"),
        ["1200000000000000", "42"]
    );
    // Results workbooks are .xlsx: another workbook name is refused.
    let mut cmd = isolate(&sim, &book, &["-o"]);
    cmd.arg(dir.path("out.ods"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("out.ods: results workbooks are written as .xlsx only"),
        "{}",
        text(&out)
    );
    assert!(!dir.path("out.ods").exists());

    // A bad row is named by the file, the sheet and the sheet's row.
    let bad = dir.path("bad.xlsx");
    write_workbook(&bad, &[(&m[0].id, "a", 1.0), ("not-an-id", "b", 2.0)]);
    let before = stats(&sim).actions_created;
    let out = output(isolate(&sim, &bad, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("bad.xlsx, sheet Geräte: line 5, column DeviceId: \"not-an-id\""),
        "{all}"
    );
    assert_eq!(stats(&sim).actions_created, before, "nothing is sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_from_another_writer_is_read_and_its_sheets_chosen() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("handmade");
    let fixture = include_bytes!("fixtures/handmade.xlsx");
    let book = dir.write("handmade.xlsx", fixture);
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&book).args(["--action", "isolate"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("handmade.results.xlsx"));
    let fleet = sim.fleet();
    let id_of = |n: &str| {
        fleet.iter().find(|m| m.computer_dns_name.as_deref() == Some(n)).unwrap().id.clone()
    };
    assert_eq!(column(&rows, "line"), ["3", "5"]);
    assert_eq!(
        column(&rows, "machine_id"),
        [id_of("host-00001.contoso.test"), id_of("host-00002.contoso.test")]
    );
    assert_eq!(column(&rows, "Ticket"), ["1200000000000000", "42"]);
    assert_eq!(column(&rows, "Seen"), ["2025-10-13", "2025-10-13T12:00:00"]);
    assert_eq!(column(&rows, "Kommentar"), ["IR-1", "Eindämmung & Co"]);
    // The second sheet by position, then one that does not exist.
    let mut cmd = isolate(&sim, &book, &["--sheet", "2", "-o"]);
    cmd.arg(dir.path("notes.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("handmade.xlsx, sheet Notes: line 2, column machine_id"),
        "{}",
        text(&out)
    );
    let mut cmd = isolate(&sim, &book, &["--sheet", "Nope", "-o"]);
    cmd.arg(dir.path("nope.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no sheet \"Nope\" (by name, or by position from 1); the workbook's sheets are [Targets, Notes]"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_run_stopped_at_its_deadline_resumes_and_every_row_ends_once() {
    let sim = sim(sim_config(&["5/1s"])).await;
    let dir = TempDir::new("workbook-resume");
    let m = windows_online(&sim, 15);
    let rows: Vec<(&str, &str, f64)> =
        m.iter().enumerate().map(|(i, d)| (d.id.as_str(), "owner", i as f64)).collect();
    let book = dir.path("contain.xlsx");
    write_workbook(&book, &rows);
    let cmd = isolate(&sim, &book, &["--limit", "5/1s", "--max-runtime", "1200ms"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    // The stopped run still leaves a whole workbook: every row, those the
    // deadline kept from being sent as not_sent.
    let stopped = read_results(&dir.path("contain.results.xlsx"));
    assert_eq!(stopped.len(), 15);
    assert!(stopped.iter().any(|r| r["status"] == "not_sent"), "{stopped:?}");
    let cmd = isolate(&sim, &book, &["--limit", "5/1s", "--resume"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let path = dir.path("contain.results.xlsx");
    let results = read_results(&path);
    assert!(!dir.path("contain.results.xlsx.partial").exists());
    let lines: Vec<String> = (0..15).map(|i| (3 + 2 * i).to_string()).collect();
    assert_eq!(column(&results, "line"), lines, "the sheet's rows, each once");
    let names: Vec<String> = m.iter().map(|d| name(d).to_string()).collect();
    assert_eq!(column(&results, "device_name"), names, "the resumed rows and the rest alike");
    assert_eq!(column(&results, "Ticket")[14], "14");
    assert!(results.iter().all(|r| r["status"] == "submitted"), "{results:?}");
    assert_eq!(stats(&sim).actions_created, 15);
    assert_eq!(stats(&sim).duplicate_submissions, 0);
}

/// Action requests the simulator received, of every action type.
fn action_calls(sim: &mdebulk::sim::Sim) -> u64 {
    mdebulk::api::action::ActionKind::ALL.iter().map(|a| api_calls(sim, a.path_segment())).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_the_plan_and_the_real_run_that_follows_needs_no_flag() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("plan-then-run");
    let m = windows_online(&sim, 2);
    let input = dir.write("hosts.csv", ids_csv(&m));
    let out = output(isolate(&sim, &input, &["--dry-run", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plan = dir.path("hosts.plan.csv");
    assert!(stdout.contains(&format!("plan: {}", plan.display())), "{stdout}");
    assert!(stdout.contains("the same command without --dry-run"), "{stdout}");
    assert_eq!(column(&read_results(&plan), "status"), ["planned", "planned"]);
    assert!(!dir.path("hosts.results.csv").exists(), "a dry run took the results file");
    assert_eq!(action_calls(&sim), 0);

    // The same dry run again rewrites its plan; the real run is not blocked.
    let out = output(isolate(&sim, &input, &["--dry-run", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = output(isolate(&sim, &input, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(column(&rows, "status"), ["submitted", "submitted"]);
    assert_eq!(action_calls(&sim), 2);
    assert_eq!(column(&read_results(&plan), "status"), ["planned", "planned"], "plan kept");

    // A dry run into a results file of a real run still needs --force.
    let mut cmd = isolate(&sim, &input, &["--dry-run", "--no-progress", "-o"]);
    cmd.arg(dir.path("hosts.results.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_of_an_id_that_does_not_exist_is_not_found_with_no_action_call() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("plan-ghost");
    let m = windows_online(&sim, 1);
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    assert!(sim.fleet().iter().all(|f| f.id != ghost));
    let input = dir.write("ghost.csv", format!("machine_id\n{}\n{ghost}\n", m[0].id));
    let out = output(isolate(&sim, &input, &["--dry-run", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(1), "a not_found row fails: {}", text(&out));
    let rows = read_results(&dir.path("ghost.plan.csv"));
    assert_eq!(column(&rows, "status"), ["planned", "not_found"]);
    assert_eq!(rows[1]["machine_id"], ghost);
    assert!(rows[1]["error_message"].contains("no machine with this id"), "{:?}", rows[1]);
    assert_eq!(action_calls(&sim), 0);
    assert_eq!(api_calls(&sim, "GET machines"), 1, "both ids in one batched look-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_and_a_name_that_name_different_machines_are_rejected_before_any_action() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("mismatch");
    let m = windows_online(&sim, 4);
    let short = name(&m[2]).split('.').next().unwrap().to_uppercase();
    let content = format!(
        "Timestamp,DeviceId,DeviceName,ActionType\n\
         2026-11-30T08:12:44Z,{},{},ProcessCreated\n\
         2026-11-30T08:12:45Z,{},{},ProcessCreated\n\
         2026-11-30T08:12:46Z,{},{short},ProcessCreated\n\
         2026-11-30T08:12:47Z,{},,ProcessCreated\n",
        m[0].id,
        name(&m[0]),
        m[1].id,
        name(&m[3]),
        m[2].id,
        m[3].id,
    );
    let input = dir.write("hunting.csv", content);
    let out = output(isolate(&sim, &input, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(1), "the mismatch fails: {}", text(&out));
    let rows = read_results(&dir.path("hunting.results.csv"));
    assert_eq!(column(&rows, "status"), ["submitted", "rejected", "submitted", "submitted"]);
    assert_eq!(rows[1]["error_code"], "IdNameMismatch");
    let why = &rows[1]["error_message"];
    assert!(why.contains(&m[1].id) && why.contains(name(&m[1])), "{why}");
    assert!(why.contains(name(&m[3])) && why.contains("nothing was sent"), "{why}");
    assert_eq!(rows[1]["machine_id"], m[1].id);
    assert_eq!(api_calls(&sim, "isolate"), 3, "no action for the mismatched row");
    assert!(stats(&sim).actions_created == 3);
    assert_eq!(api_calls(&sim, "GET machines"), 1, "the ids are checked in one batched look-up");
}

/// True when the file at `path` is a zip (a workbook), not text.
fn is_workbook(path: &std::path::Path) -> bool {
    std::fs::read(path).unwrap().starts_with(b"PK\x03\x04")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workbook_run_writes_a_results_workbook_the_users_columns_then_ours_ids_as_text() {
    use calamine::Data;
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("results-workbook");
    let m = windows_online(&sim, 2);
    let book = dir.path("geraete.xlsx");
    write_workbook(&book, &[(&m[0].id, "Jürgen", 1.2e15), (&m[1].id, "=1+1", 42.0)]);
    // A dry run of a workbook writes its plan as a workbook (and leaves
    // the results workbook to the real run).
    let out = output(isolate(&sim, &book, &["--dry-run", "--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = dir.path("geraete.plan.xlsx");
    assert!(is_workbook(&plan));
    let planned = read_results(&plan);
    assert_eq!(column(&planned, "status"), ["planned", "planned"]);
    let names: Vec<String> = m.iter().map(|d| name(d).to_string()).collect();
    assert_eq!(column(&planned, "device_name"), names, "as the id check found them");

    let out = output(isolate(&sim, &book, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let path = dir.path("geraete.results.xlsx");
    assert!(is_workbook(&path));
    assert!(!dir.path("geraete.results.xlsx.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "results list devices: owner-only");
    }
    let (sheet, rows) = read_workbook(&path);
    assert_eq!(sheet, "Results");
    let header: Vec<String> = rows[0].iter().map(|c| c.to_string()).collect();
    let want: Vec<&str> = ["DeviceId", "Zuständig", "Ticket", "Gesehen"]
        .into_iter()
        .chain(mdebulk::results::RUNNER_COLUMNS)
        .collect();
    assert_eq!(header, want, "the user's columns, then the runner's in CSV order");
    let at = |c: &str| header.iter().position(|h| h == c).unwrap();
    for (row, machine) in rows[1..].iter().zip(&m) {
        assert_eq!(row[at("DeviceId")], Data::String(machine.id.clone()));
        assert_eq!(row[at("machine_id")], Data::String(machine.id.clone()));
        assert_eq!(row[at("device_name")], Data::String(name(machine).to_string()));
        assert_eq!(row[at("status")], Data::String("submitted".into()));
        assert!(matches!(row[at("line")], Data::Float(_)), "line is a number");
        assert!(matches!(row[at("action_id")], Data::String(_)));
    }
    // A number-looking cell of the user's stays text, exactly as read; a
    // formula-looking one is text too, never evaluated.
    assert_eq!(rows[1][at("Ticket")], Data::String("1200000000000000".into()));
    assert_eq!(rows[2][at("Zuständig")], Data::String("=1+1".into()));

    // -o x.xlsx gives a workbook for a CSV input too.
    let input = dir.write("hosts.csv", ids_csv(&m));
    let mut cmd = isolate(&sim, &input, &["--dry-run", "--no-progress", "-o"]);
    cmd.arg(dir.path("hosts.out.xlsx"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(is_workbook(&dir.path("hosts.out.xlsx")));
    let pending = read_results(&dir.path("hosts.out.xlsx"));
    assert_eq!(column(&pending, "status"), ["already_pending", "already_pending"], "just isolated");
    assert_eq!(column(&pending, "device_name"), names, "as the open actions name them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_workbook_replays_with_only_and_status_and_undo_keep_it_a_workbook() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("workbook-round-trip");
    let m = windows_online(&sim, 2);
    let ghost = "0123456789abcdef0123456789abcdef01234567";
    let book = dir.path("geraete.xlsx");
    write_workbook(
        &book,
        &[(&m[0].id, "Jürgen", 1.0), (ghost, "Änne", 2.0), (&m[1].id, "Öz", 3.0)],
    );
    let out = output(isolate(&sim, &book, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(1), "one row is not found: {}", text(&out));
    let results = dir.path("geraete.results.xlsx");
    let rows = read_results(&results);
    assert_eq!(column(&rows, "status"), ["submitted", "not_found", "submitted"]);
    assert_eq!(column(&rows, "device_name"), [name(&m[0]), "", name(&m[1])]);
    assert_eq!(api_calls(&sim, "isolate"), 3);

    // `status --wait` rewrites the workbook in place, as a workbook.
    let mut cmd = mdebulk(&sim);
    cmd.arg("status").arg(&results).arg("--wait");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(is_workbook(&results));
    assert!(!dir.path("geraete.results.xlsx.rewrite").exists());
    let rows = read_results(&results);
    assert_eq!(column(&rows, "status"), ["succeeded", "not_found", "succeeded"]);
    assert_eq!(column(&rows, "Zuständig"), ["Jürgen", "Änne", "Öz"]);
    assert_eq!(column(&rows, "Ticket"), ["1", "2", "3"]);
    assert_eq!(column(&rows, "device_name"), [name(&m[0]), "", name(&m[1])]);

    // The results workbook replays with --only: the one not_found row alone.
    let replay = dir.path("replay.xlsx");
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&results).args(["--only", "not_found", "--action", "isolate"]);
    cmd.args(["--comment", "IR-7", "-o"]).arg(&replay);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let replayed = read_results(&replay);
    assert_eq!(column(&replayed, "Zuständig"), ["Änne"]);
    assert_eq!(column(&replayed, "machine_id"), [ghost]);
    assert_eq!(column(&replayed, "status"), ["not_found"]);
    assert_eq!(api_calls(&sim, "isolate"), 4, "only the selected row was sent");

    // Undo reads the workbook and writes its own as a workbook, beside it.
    let mut cmd = mdebulk(&sim);
    cmd.arg("undo").arg(&results).args(["--yes", "--comment", "IR-7 Freigabe"]);
    let out = output(cmd).await;
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    let undo = dir.path("geraete.results.undo.xlsx");
    assert!(is_workbook(&undo));
    let undone = read_results(&undo);
    assert_eq!(column(&undone, "Zuständig"), ["Jürgen", "Änne", "Öz"]);
    assert_eq!(undone.iter().filter(|r| r["action"] == "unisolate").count(), 2, "{undone:?}");
    assert_eq!(column(&undone, "device_name"), [name(&m[0]), "", name(&m[1])]);
    assert_eq!(api_calls(&sim, "unisolate"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_results_row_carries_the_device_name_the_api_knows() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("device-name");
    let m = windows_online(&sim, 4);
    // Ids, a short name in capitals, an FQDN, and a name nobody has.
    let short = name(&m[1]).split('.').next().unwrap().to_uppercase();
    let content = format!(
        "machine_id,hostname,owner\n{},,ann\n,{short},bob\n,{},cy\n,no-such-host,dee\n{},,eve\n",
        m[0].id,
        name(&m[2]),
        m[3].id
    );
    let input = dir.write("mixed.csv", content);
    let out = output(isolate(&sim, &input, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(1), "one name is not found: {}", text(&out));
    let rows = read_results(&dir.path("mixed.results.csv"));
    assert_eq!(
        column(&rows, "status"),
        ["submitted", "submitted", "submitted", "not_found", "submitted"]
    );
    assert_eq!(
        column(&rows, "device_name"),
        [name(&m[0]), name(&m[1]), name(&m[2]), "no-such-host", name(&m[3])],
        "the API's name of each machine acted on; the row's own where none matched"
    );
    assert_eq!(column(&rows, "hostname"), ["", &short, name(&m[2]), "no-such-host", ""]);

    // An input's own DeviceName column is the runner's device_name in the
    // results, never a second column; the not-found name replays from it.
    let hunting = dir.write(
        "hunting.csv",
        format!("DeviceName,Comment\n{},IR-1\nghost-host,IR-1\n", name(&m[0])),
    );
    let out = output(isolate(&sim, &hunting, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let results = dir.path("hunting.results.csv");
    let (header, _, _) = shape(&results);
    assert_eq!(header.matches("device_name").count(), 1, "{header}");
    assert!(!header.contains("DeviceName"), "{header}");
    let rows = read_results(&results);
    assert_eq!(column(&rows, "device_name"), [name(&m[0]), "ghost-host"]);
    let lookups = api_calls(&sim, "GET machines");
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&results).args(["--only", "not_found", "--action", "isolate", "-o"]);
    cmd.arg(dir.path("hunting.replay.csv"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let replayed = read_results(&dir.path("hunting.replay.csv"));
    assert_eq!(column(&replayed, "status"), ["not_found"]);
    assert!(
        replayed[0]["error_message"].contains("no machine named \"ghost-host\""),
        "{replayed:?}"
    );
    assert_eq!(api_calls(&sim, "GET machines"), lookups + 1, "the name was looked up again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_file_of_an_earlier_version_without_device_name_still_replays() {
    let sim = sim(sim_config(&[])).await;
    let dir = TempDir::new("old-results");
    let m = windows_online(&sim, 2);
    // The twelve runner columns of earlier versions, no device_name.
    let old = format!(
        "owner,line,machine_id,action,status,action_id,action_status,http_status,error_code,error_message,attempts,requested_at,finished_at\n\
         ann,2,{},isolate,submitted,a-1,Pending,201,,,1,2024-05-01T08:00:00.0000000Z,2024-05-01T08:00:00.5000000Z\n\
         bob,3,{},isolate,not_sent,,,,,stopped,0,,2024-05-01T08:00:01.0000000Z\n",
        m[0].id, m[1].id
    );
    let results = dir.write("old.results.csv", old);
    let replay = dir.path("old.replay.csv");
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&results).args([
        "--only",
        "not_sent",
        "--comment",
        "IR-9",
        "--no-progress",
        "-o",
    ]);
    cmd.arg(&replay);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&replay);
    assert_eq!(column(&rows, "owner"), ["bob"]);
    assert_eq!(column(&rows, "machine_id"), [m[1].id.clone()]);
    assert_eq!(column(&rows, "status"), ["submitted"]);
    assert_eq!(column(&rows, "device_name"), [name(&m[1])], "named now by the action's answer");
    assert_eq!(api_calls(&sim, "isolate"), 1);
}
