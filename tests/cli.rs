//! The command line people expect: completions that shells accept, a man
//! page that renders cleanly, colour rules, the JSON summary and fatal
//! errors, and the progress display on an 80-column pseudo-terminal. Each
//! test runs the real binary (against the in-process simulator where a run
//! is needed).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE").stdin(Stdio::null());
    cmd
}

/// Whether a program can be started (a shell or tool some machines lack).
fn present(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn completions_are_generated_for_every_shell_and_the_present_shells_parse_them() {
    let temp = TempDir::new("completions");
    let mut checked = Vec::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("mdebulk"), "{shell}: {script}");
        assert!(script.contains("max-runtime"), "{shell} completes run's flags");
        if ["bash", "zsh", "fish"].contains(&shell) && present(shell) {
            let file = temp.write(&format!("mdebulk.{shell}"), &script);
            let check = Command::new(shell).arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "{shell} -n: {}", text(&check));
            checked.push(shell);
        }
    }
    // bash is on every machine these tests run on: at least it was checked.
    assert!(cfg!(windows) || checked.contains(&"bash"), "checked: {checked:?}");
    let bad = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

#[test]
fn the_man_pages_render_without_warnings() {
    let temp = TempDir::new("man");
    for page in [None, Some("run"), Some("status"), Some("undo"), Some("simulate")] {
        let out = bin().arg("man").args(page).output().unwrap();
        assert!(out.status.success(), "{page:?}: {}", text(&out));
        let roff = String::from_utf8(out.stdout).unwrap();
        let title = page.map_or("mdebulk".to_string(), |p| format!("mdebulk-{p}"));
        assert!(roff.contains(&format!(".TH {title} 1")), "{roff}");
        if page == Some("run") {
            assert!(roff.contains("Examples:"), "the run page carries the examples");
        }
        if present("groff") {
            let file = temp.write("page.1", &roff);
            let render =
                Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&file).output();
            let render = render.unwrap();
            assert!(render.status.success(), "{}", text(&render));
            assert!(render.stderr.is_empty(), "groff warned on {title}: {}", text(&render));
        }
    }
    let bad = bin().args(["man", "nosuch"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("no subcommand \"nosuch\": one of run, simulate"),
        "{}",
        text(&bad)
    );
}

#[test]
fn help_groups_the_options_and_shows_examples() {
    for (command, example) in [
        ("run", "mdebulk run hosts.csv --action isolate"),
        ("status", "mdebulk status hosts.results.csv --wait"),
        ("undo", "mdebulk undo hosts.results.csv"),
    ] {
        let out = bin().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("\nExamples:\n"), "{command}: {help}");
        assert!(help.contains(example), "{command}: {help}");
        for heading in ["Pacing:", "Retries:", "Auth & endpoint:", "Output:", "Logging:"] {
            assert!(help.contains(&format!("\n{heading}\n")), "{command} lacks {heading}");
        }
        // The global options are listed once, under Logging, after the rest.
        assert_eq!(help.matches("      --log-format <").count(), 1, "{help}");
        let logging = help.find("\nLogging:\n").unwrap();
        assert!(help.find("      --log-format <").unwrap() > logging, "{help}");
        assert!(help.find("--request-timeout").unwrap() < logging, "{help}");
    }
    let run = String::from_utf8(bin().args(["run", "--help"]).output().unwrap().stdout).unwrap();
    // Every option has its group: the ungrouped list holds only help and version.
    let options = run.split_once("\nOptions:\n").unwrap().1.split("\n\n").collect::<Vec<_>>();
    let ungrouped: Vec<&str> = options
        .iter()
        .take_while(|block| !block.ends_with(':') && !block.contains(":\n"))
        .filter(|block| block.trim_start().starts_with('-'))
        .copied()
        .collect();
    assert!(
        ungrouped.iter().all(|b| b.contains("--help") || b.contains("--version")),
        "options without a group: {ungrouped:#?}"
    );
    for heading in ["Input:", "Action:", "Waiting:", "Safety:"] {
        assert!(run.contains(&format!("\n{heading}\n")), "run lacks {heading}");
    }
}

/// A results file's rows counted per status.
fn counts_of(path: &Path) -> HashMap<String, u64> {
    status_counts(&read_results(path)).into_iter().map(|(k, v)| (k, v as u64)).collect()
}

/// The JSON summary's non-zero counts per status.
fn json_counts(summary: &serde_json::Value) -> HashMap<String, u64> {
    summary["by_status"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_summary_parses_and_counts_what_the_results_file_holds() {
    let sim = sim(sim_config(&["100000/1s"])).await;
    let temp = TempDir::new("summary-json");
    let mut csv = ids_csv(&windows_online(&sim, 4));
    // A row for a device the tenant does not have: a failure among successes.
    csv.push_str("ffffffffffffffffffffffffffffffffffffffff,owner-x\n");
    let input = temp.write("in.csv", csv);
    let out = output(isolate(&sim, &input, &["--summary", "json", "--limit", "none"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let results = temp.path("in.results.csv");
    assert_eq!(json_counts(&summary), counts_of(&results), "{summary}");
    assert_eq!(summary["rows"], 5);
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["throttled_429"], 0);
    assert_eq!(summary["results"], results.display().to_string());
    assert!(summary["elapsed_seconds"].as_f64().unwrap() > 0.0);
    assert!(summary.get("error").is_none(), "failed rows are counted, not an error");

    // JSON logs make the summary JSON too: the last line of standard output.
    let again = temp.path("again.csv");
    let again_arg = again.to_str().unwrap();
    let out = output(isolate(
        &sim,
        &input,
        &["--log-format", "json", "-o", again_arg, "--limit", "none"],
    ))
    .await;
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json_counts(&summary), counts_of(&again), "{summary}");
    for line in String::from_utf8(out.stderr).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every log line is JSON");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fatal_errors_are_json_under_json_logs() {
    let sim = sim(sim_config(&["100000/1s"])).await;
    let temp = TempDir::new("error-json");
    let input = temp.write("in.csv", ids_csv(&windows_online(&sim, 1)));
    temp.write("in.results.csv", "already here\n");
    let out = output(isolate(&sim, &input, &["--log-format", "json"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let last = stderr.lines().last().unwrap();
    let error: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["kind"], "results_exist", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("--resume"), "{error}");
    assert_eq!(error["exit_code"], 2);
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
    }

    // An error before any run (no credentials) is a `usage` error in JSON.
    let out = bin()
        .env_clear()
        .args(["--log-format", "json", "status"])
        .arg(temp.path("in.results.csv"))
        .output()
        .unwrap();
    let error: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stderr).unwrap().trim()).unwrap();
    assert_eq!(error["error"]["kind"], "usage", "{error}");
    assert_eq!(api_calls(&sim, "isolate"), 0, "nothing was sent");

    // So is a flag clap refuses.
    let out = bin().args(["--log-format", "json", "run", "x.csv", "--no-such-flag"]).output();
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stderr).unwrap().trim()).unwrap();
    assert_eq!(error["error"]["kind"], "usage", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("--no-such-flag"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn color_always_writes_escape_codes_off_a_terminal_and_never_writes_none() {
    let sim = sim(sim_config(&["100000/1s"])).await;
    let temp = TempDir::new("color-always");
    let input = temp.write("in.csv", ids_csv(&windows_online(&sim, 2)));
    let out = output(isolate(&sim, &input, &["--color", "always"])).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.contains(&0x1b), "{}", text(&out));
    let mut cmd = isolate(&sim, &input, &["--force"]);
    cmd.env("NO_COLOR", "1");
    let out = output(cmd).await;
    assert!(out.status.success() && !text(&out).contains('\u{1b}'), "{}", text(&out));
}

#[test]
fn status_and_undo_of_a_simulated_run_say_its_simulator_is_gone() {
    let temp = TempDir::new("simulated-results");
    let input = temp.write("in.csv", "device\nhost-00001.contoso.test\n");
    let run = bin()
        .current_dir(temp.path(""))
        .args(["run", "in.csv", "--simulate", "--action", "isolate", "--comment", "x"])
        .output()
        .unwrap();
    assert!(run.status.code().is_some_and(|c| c <= 1), "{}", text(&run));
    assert!(input.exists());
    for command in ["status", "undo"] {
        let out = bin()
            .env_clear()
            .current_dir(temp.path(""))
            .args([command, "in.results.csv"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let message = text(&out);
        assert!(message.contains("written by `run --simulate`"), "{message}");
        assert!(message.contains("mdebulk simulate"), "{message}");
        assert!(!message.contains("try --simulate"), "{message}");
    }
}

/// What a terminal of `width` columns shows for `raw`, as every row ever
/// drawn (a row is recorded each time the cursor leaves it or it is
/// cleared): printable characters fill the row and wrap past its end, as a
/// terminal does, carriage return and line feed move the cursor, and the
/// cursor movements and erasures the display uses (`ESC[nA`, `ESC[nB`,
/// `ESC[K`, `ESC[J`, `ESC[nG`) are followed; other sequences (colours) are
/// dropped.
#[cfg(target_os = "linux")]
fn terminal_rows(raw: &str, width: usize) -> Vec<String> {
    let mut grid: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut seen = Vec::new();
    let snapshot = |grid: &Vec<Vec<char>>, row: usize, seen: &mut Vec<String>| {
        let text: String = grid[row].iter().collect();
        let text = text.trim_end().to_string();
        if !text.is_empty() && seen.last() != Some(&text) {
            seen.push(text);
        }
    };
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                snapshot(&grid, row, &mut seen);
                if chars.peek() != Some(&'[') {
                    chars.next();
                    continue;
                }
                chars.next();
                let mut params = String::new();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        last = c;
                        break;
                    }
                    params.push(c);
                }
                let n: usize = params.trim_start_matches('?').parse().unwrap_or(1).max(1);
                match last {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'G' => col = n - 1,
                    'K' => grid[row].truncate(col),
                    'J' => {
                        grid[row].truncate(col);
                        grid.truncate(row + 1);
                    }
                    _ => {}
                }
            }
            '\r' => {
                snapshot(&grid, row, &mut seen);
                col = 0;
            }
            '\n' => {
                snapshot(&grid, row, &mut seen);
                row += 1;
            }
            c if c.is_control() => {}
            c => {
                if col >= width {
                    snapshot(&grid, row, &mut seen);
                    row += 1;
                    col = 0;
                }
                while grid.len() <= row {
                    grid.push(Vec::new());
                }
                let line = &mut grid[row];
                while line.len() <= col {
                    line.push(' ');
                }
                line[col] = c;
                col += 1;
            }
        }
        while grid.len() <= row {
            grid.push(Vec::new());
        }
    }
    for r in 0..grid.len() {
        snapshot(&grid, r, &mut seen);
    }
    seen
}

/// Runs `mdebulk ARGS` against `sim` under util-linux `script` (the BSD
/// one takes other arguments) on a pseudo-terminal of 80 columns (with `env`), returning what the terminal received.
#[cfg(target_os = "linux")]
async fn on_terminal(
    sim: &mdebulk::sim::Sim,
    dir: &Path,
    args: &str,
    env: &[(&str, &str)],
) -> String {
    let line = format!("stty cols 80 rows 24; exec {} {args}", env!("CARGO_BIN_EXE_mdebulk"));
    let mut script = Command::new("script");
    common::pointed_at(&mut script, sim);
    script
        .args(["-qec", &line, "/dev/null"])
        .current_dir(dir)
        .env("COLUMNS", "80")
        .env("TERM", "xterm");
    for (k, v) in env {
        script.env(k, v);
    }
    let out = output(script).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn the_progress_display_fits_an_80_column_terminal_and_colour_rules_hold_there() {
    if !present("script") {
        eprintln!("no `script` on this machine: pseudo-terminal test not run");
        return;
    }
    let sim = sim(sim_config(&["100000/1s"])).await;
    let temp = TempDir::new("pty");
    temp.write("in.csv", ids_csv(&windows_online(&sim, 30)));
    // 10 calls a second: the run lasts about two seconds, long enough for
    // the display (redrawn four times a second) to show its bar and the
    // quota it waits for.
    let run = "-q run in.csv --action isolate --comment x --limit 10/1s";
    let screen = on_terminal(&sim, temp.path("").as_path(), run, &[]).await;
    assert!(screen.contains('\u{1b}'), "a terminal gets the live display: {screen:?}");
    let rows = terminal_rows(&screen, 80);
    // Every line of the display fits in its row: the bar's line ends with
    // its ETA on the row it starts on, and the reason has a row of its own.
    let bar_rows: Vec<&String> = rows.iter().filter(|r| r.contains("/30 ok ")).collect();
    assert!(!bar_rows.is_empty(), "no bar drawn: {rows:#?}");
    for r in &bar_rows {
        assert!(r.contains(" [") && r.contains(" eta "), "the bar's line wrapped: {rows:#?}");
        let inside = r.split_once('[').unwrap().1.split_once(']').unwrap().0;
        assert!(inside.chars().count() >= 20, "the bar has width: [{inside}]");
    }
    for r in rows.iter().filter(|r| r.contains("quota") && r.contains("full")) {
        assert!(r.starts_with("  isolate: quota"), "the reason has its own row: {r:?}");
    }
    assert!(
        rows.iter().any(|r| r.starts_with("  isolate: quota 10/1s full")),
        "the second line says why the run waits: {rows:#?}"
    );
    // What is not the live display (the summary) is plain lines, none
    // wider than the terminal either.
    for line in screen.split(['\n', '\r']).filter(|l| !l.contains('\u{1b}')) {
        assert!(line.trim_end().chars().count() <= 80, "{line:?}");
    }
    assert!(rows.iter().any(|r| r.starts_with("run: 30 row(s)")), "{rows:#?}");

    let no_colour =
        [("--color never ", vec![]), ("", vec![("NO_COLOR", "1")]), ("", vec![("TERM", "dumb")])];
    for (flags, env) in no_colour {
        let args = format!("{flags}{run} --force");
        let screen = on_terminal(&sim, temp.path("").as_path(), &args, &env).await;
        assert!(!screen.contains('\u{1b}'), "{flags}{env:?}: {screen:?}");
        assert!(screen.contains("run: 30 row(s)"), "{screen}");
    }
}
