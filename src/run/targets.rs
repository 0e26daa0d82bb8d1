//! Targets other than an input file: the machines carrying a tag
//! (`--tag`, `--tag-prefix`), having seen a file (`--has-file`), or in the
//! result of an Advanced Hunting query (`--query`, through Microsoft
//! Graph). The service is asked once, before the survey, and its answer is
//! written as an ordinary input file beside the results
//! (`<results>.targets.csv`: the `machine_id`, `device_dns_name`, for a
//! query's stop-and-quarantine the `sha1`, and the `found_by` of each
//! device), which the run then reads like any other: pacing, the journal,
//! resume, results, `--wait` and `undo` see ordinary rows, and `found_by`
//! is carried to the results as a user column, saying how each row was
//! found.
//!
//! A query's result must have a `DeviceId` column (and `SHA1` when each
//! row's file comes from it); rows repeating a device (and file) collapse
//! into one, in the order first seen: hunting tables hold many reports per
//! device, and an action is sent once per device. A row whose `DeviceId` is
//! empty is kept, so the survey names it instead of it vanishing.
//!
//! A `--resume` reads the targets file the interrupted run wrote instead of
//! asking again, so it continues exactly the rows the run started with, even
//! if tags or files have changed on the devices since.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::call::{Ctx, read};
use super::stop::Stop;
use super::transport::Transport;
use super::{Existing, RunConfig, RunError, Targets};
use crate::api::model::{HuntingQueryResults, Machine};
use crate::api::route::Api;
use crate::pace::Pacer;
use crate::results::dialect::Dialect;

/// The API `targets` asks.
fn api(targets: &Targets) -> Api {
    match targets {
        Targets::Tag { .. } => Api::FindByTag,
        Targets::File { .. } => Api::FileMachines,
        Targets::Query { .. } => Api::HuntingQuery,
    }
}

/// One device found: a row of the targets file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// The machine id (a query's `DeviceId`).
    id: String,
    /// Its name, for people (a query's `DeviceName`, when it has one).
    name: String,
    /// The file to stop and quarantine on it (a query's `SHA1`).
    sha1: Option<String>,
}

/// `out.results.csv` → `out.results.targets.csv`: the targets file of a
/// run whose results go to `results`, beside them.
pub fn targets_path(results: &Path) -> PathBuf {
    results.with_extension("targets.csv")
}

/// Asks the service for the machines of `targets` and writes them to
/// `path` (owner-only), unless a resume finds the file an earlier run
/// wrote there. Returns how many machines the file holds, when asked.
pub(crate) async fn materialise<T: Transport>(
    config: &RunConfig,
    targets: &Targets,
    transport: Arc<T>,
    stop: &Stop,
    path: &Path,
) -> Result<Option<usize>, RunError> {
    if config.existing == Existing::Resume && path.exists() {
        tracing::info!(file = %path.display(), "resuming: the targets of the earlier run are read again, not asked for");
        return Ok(None);
    }
    super::call::first_token(transport.as_ref(), &config.policy, stop)
        .await
        .map_err(RunError::Auth)?;
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx = Ctx::new(transport, pacer, None, config.policy.clone(), stop.clone());
    let found = ask(&ctx, targets).await?;
    let found_by = targets.found_by();
    let count = found.len();
    let with_sha1 = matches!(targets, Targets::Query { sha1_column: true, .. });
    write(path, &found_by, &found, with_sha1)
        .map_err(|source| RunError::Io { path: path.to_path_buf(), source })?;
    tracing::info!(found_by, devices = count, file = %path.display(), "targets found");
    Ok(Some(count))
}

/// One call for the devices of `targets`, each once, in the service's order.
async fn ask<T: Transport>(ctx: &Ctx<T>, targets: &Targets) -> Result<Vec<Found>, RunError> {
    let list = match targets {
        Targets::Tag { tag, prefix } => {
            read(ctx, api(targets), || ctx.transport.find_by_tag(tag, *prefix)).await
        }
        Targets::File { sha1 } => {
            read(ctx, api(targets), || ctx.transport.file_machines(sha1)).await
        }
        Targets::Query { kql, sha1_column } => {
            let result = read(ctx, api(targets), || ctx.transport.hunting_query(kql))
                .await
                .map_err(RunError::Hunting)?;
            return devices_of(&result, *sha1_column);
        }
    }
    .map_err(RunError::Targets)?;
    let mut seen = HashSet::new();
    Ok(list
        .value
        .into_iter()
        .filter(|m| seen.insert(m.id.to_ascii_lowercase()))
        .map(|m: Machine| Found {
            name: m.computer_dns_name.unwrap_or_default(),
            id: m.id,
            sha1: None,
        })
        .collect())
}

/// The devices of a hunting result: its `DeviceId` (and `DeviceName`, and
/// with `sha1_column` its `SHA1`) per row, repeats collapsed.
fn devices_of(result: &HuntingQueryResults, sha1_column: bool) -> Result<Vec<Found>, RunError> {
    let mut columns: Vec<&str> = result.schema.iter().map(|c| c.name.as_str()).collect();
    if columns.is_empty()
        && let Some(first) = result.results.first()
    {
        columns = first.keys().map(String::as_str).collect();
    }
    let shown = || {
        if columns.is_empty() {
            "none".to_string()
        } else {
            columns.iter().map(|c| crate::text::quote(c).to_string()).collect::<Vec<_>>().join(", ")
        }
    };
    let has = |name: &str| columns.contains(&name);
    if !has("DeviceId") {
        return Err(RunError::QueryResult(format!(
            "the query's result has no DeviceId column (its columns: {}), so it names no device to act on; nothing was sent. End the query with `| distinct DeviceId` or keep DeviceId in its `project`",
            shown()
        )));
    }
    if sha1_column && !has("SHA1") {
        return Err(RunError::QueryResult(format!(
            "stop-and-quarantine needs the file of each device: the query's result has no SHA1 column (its columns: {}); nothing was sent. Keep SHA1 in the result (`| distinct DeviceId, SHA1`), or give --sha1 for one file on every device",
            shown()
        )));
    }
    let cell = |row: &serde_json::Map<String, serde_json::Value>, name: &str| match row.get(name) {
        Some(serde_json::Value::String(s)) => s.trim().to_string(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut repeats = 0usize;
    for row in &result.results {
        let id = cell(row, "DeviceId");
        let sha1 = sha1_column.then(|| cell(row, "SHA1"));
        let key = (id.to_ascii_lowercase(), sha1.as_deref().map(str::to_ascii_lowercase));
        // An empty id is kept every time: the survey names each such row.
        if !id.is_empty() && !seen.insert(key) {
            repeats += 1;
            continue;
        }
        found.push(Found { id, name: cell(row, "DeviceName"), sha1 });
    }
    if repeats > 0 {
        tracing::info!(
            rows = result.results.len(),
            devices = found.len(),
            "{repeats} rows of the query's result repeated a device{} and were collapsed",
            if sha1_column { " and file" } else { "" }
        );
    }
    Ok(found)
}

/// The targets file: a header, then `machine_id,device_dns_name,found_by`
/// per device (`machine_id,device_dns_name,sha1,found_by` with each row's
/// file). The id is what a row acts on; the name is for people, under a
/// header that is no device-name alias, so it is carried, not looked up.
fn write(path: &Path, found_by: &str, found: &[Found], with_sha1: bool) -> std::io::Result<()> {
    let file = crate::private::create(path)?;
    let mut w = Dialect::COMMA.writer(std::io::BufWriter::new(file));
    if with_sha1 {
        w.write_record(["machine_id", "device_dns_name", "sha1", "found_by"])?;
    } else {
        w.write_record(["machine_id", "device_dns_name", "found_by"])?;
    }
    for f in found {
        match (&f.sha1, with_sha1) {
            (Some(sha1), true) => w.write_record([&f.id, &f.name, sha1, found_by])?,
            (None, true) => w.write_record([&f.id, &f.name, "", found_by])?,
            (_, false) => w.write_record([&f.id, &f.name, found_by])?,
        }
    }
    let mut inner = w.into_inner().map_err(|e| e.into_error())?;
    inner.flush()?;
    inner.get_ref().sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_by_names_the_kind_and_the_value() {
        let t = Targets::Tag { tag: "Compromised".into(), prefix: false };
        assert_eq!(t.found_by(), "tag:Compromised");
        let t = Targets::Tag { tag: "Incident-".into(), prefix: true };
        assert_eq!(t.found_by(), "tag-prefix:Incident-");
        let t = Targets::File { sha1: "ab".repeat(20) };
        assert_eq!(t.found_by(), format!("has-file:{}", "ab".repeat(20)));
        let q = |kql: &str| Targets::Query { kql: kql.into(), sha1_column: false }.found_by();
        let a = q("DeviceInfo | distinct DeviceId");
        assert!(a.starts_with("query:") && a.len() == "query:".len() + 12, "{a}");
        assert_eq!(a, q("DeviceInfo | distinct DeviceId"), "the same for the same text");
        assert_ne!(a, q("DeviceInfo | take 1"));
    }

    /// A hunting result with these columns and rows.
    fn result(columns: &[&str], rows: &[&[&str]]) -> HuntingQueryResults {
        let schema = columns
            .iter()
            .map(|c| crate::api::model::HuntingColumn {
                name: c.to_string(),
                kind: "String".into(),
            })
            .collect();
        let results = rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .zip(r.iter())
                    .map(|(c, v)| (c.to_string(), serde_json::json!(v)))
                    .collect()
            })
            .collect();
        HuntingQueryResults { context: None, schema, results }
    }

    #[test]
    fn a_result_collapses_repeated_devices_and_keeps_empty_ids_for_the_survey() {
        let r = result(
            &["Timestamp", "DeviceId", "DeviceName"],
            &[
                &["t1", "AA", "a"],
                &["t2", "aa", "a"],
                &["t3", "bb", "b"],
                &["t4", "", ""],
                &["t5", "", ""],
            ],
        );
        let found = devices_of(&r, false).unwrap();
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["AA", "bb", "", ""]);
        assert_eq!(found[0].name, "a");
        // With each row's file, a device with two files is two rows.
        let r = result(&["DeviceId", "SHA1"], &[&["aa", "f1"], &["aa", "f2"], &["AA", "F1"]]);
        let found = devices_of(&r, true).unwrap();
        let pairs: Vec<(&str, Option<&str>)> =
            found.iter().map(|f| (f.id.as_str(), f.sha1.as_deref())).collect();
        assert_eq!(pairs, [("aa", Some("f1")), ("aa", Some("f2"))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_query_waits_out_its_retry_after_on_its_own_lane() {
        use crate::api::client::CallError;
        use crate::run::transport::scripted::{Scripted, ok};
        use std::sync::atomic::{AtomicU32, Ordering};
        let answered = AtomicU32::new(0);
        let t = Arc::new(Scripted::new().on_hunting_query(move |_| {
            if answered.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(CallError::Throttled {
                    retry_after: Some(std::time::Duration::from_secs(7)),
                    error: None,
                });
            }
            ok(result(&["DeviceId"], &[&["aa"], &["bb"], &["aa"]]))
        }));
        let limits = crate::pace::Limit::api_defaults();
        let pacer = Arc::new(Pacer::new(&limits, None));
        let ctx = Ctx::new(t.clone(), pacer.clone(), None, Default::default(), Stop::new());
        let started = tokio::time::Instant::now();
        let targets = Targets::Query { kql: "DeviceInfo".into(), sha1_column: false };
        let found = ask(&ctx, &targets).await.unwrap();
        assert_eq!(found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["aa", "bb"]);
        assert_eq!(t.count("hunting_query"), 2, "asked again once the wait was over");
        assert!(started.elapsed() >= std::time::Duration::from_secs(7), "{:?}", started.elapsed());
        assert_eq!(pacer.started(Api::HuntingQuery), 2);
        assert_eq!(
            crate::pace::Limit::for_api(&limits, Api::HuntingQuery),
            [crate::pace::Limit::HUNTING_PER_MINUTE],
            "Advanced Hunting's own quota, not the API's"
        );
    }

    #[test]
    fn a_result_without_device_ids_or_files_is_refused_naming_its_columns() {
        let e = devices_of(&result(&["DeviceName", "Timestamp"], &[]), false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("no DeviceId column") && text.contains("\"DeviceName\", \"Timestamp\""),
            "{text}"
        );
        assert_eq!(e.kind(), "query_result");
        let e = devices_of(&result(&["DeviceId"], &[&["aa"]]), true).unwrap_err().to_string();
        assert!(e.contains("no SHA1 column") && e.contains("--sha1"), "{e}");
        // Columns named only by the rows (an empty schema) count too.
        let mut r = result(&["DeviceId"], &[&["aa"]]);
        r.schema.clear();
        assert_eq!(devices_of(&r, false).unwrap().len(), 1);
        assert!(devices_of(&result(&[], &[]), false).unwrap_err().to_string().contains("none"));
    }

    #[test]
    fn the_targets_file_sits_beside_the_results() {
        assert_eq!(
            targets_path(Path::new("/x/out.results.csv")),
            PathBuf::from("/x/out.results.targets.csv")
        );
        assert_eq!(targets_path(Path::new("run.jsonl")), PathBuf::from("run.targets.csv"));
    }
}
