//! Targets other than an input file: the machines carrying a tag
//! (`--tag`, `--tag-prefix`) or having seen a file (`--has-file`). The
//! service is asked once, before the survey, and its answer is written as an
//! ordinary input file beside the results (`<results>.targets.csv`: the
//! `machine_id`, `device_dns_name` and `found_by` of each machine), which the run then
//! reads like any other: pacing, the journal, resume, results, `--wait` and
//! `undo` see ordinary rows, and `found_by` is carried to the results as a
//! user column, saying how each row was found.
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
use crate::api::model::Machine;
use crate::api::route::Api;
use crate::pace::Pacer;
use crate::results::dialect::Dialect;

/// The API `targets` asks.
fn api(targets: &Targets) -> Api {
    match targets {
        Targets::Tag { .. } => Api::FindByTag,
        Targets::File { .. } => Api::FileMachines,
    }
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
    let machines = ask(&ctx, targets).await?;
    let found_by = targets.found_by();
    let count = machines.len();
    write(path, &found_by, &machines)
        .map_err(|source| RunError::Io { path: path.to_path_buf(), source })?;
    tracing::info!(found_by, machines = count, file = %path.display(), "targets found");
    Ok(Some(count))
}

/// One call for the machines of `targets`, each machine once, in the
/// service's order.
async fn ask<T: Transport>(ctx: &Ctx<T>, targets: &Targets) -> Result<Vec<Machine>, RunError> {
    let list = match targets {
        Targets::Tag { tag, prefix } => {
            read(ctx, api(targets), || ctx.transport.find_by_tag(tag, *prefix)).await
        }
        Targets::File { sha1 } => {
            read(ctx, api(targets), || ctx.transport.file_machines(sha1)).await
        }
    }
    .map_err(RunError::Targets)?;
    let mut seen = HashSet::new();
    Ok(list.value.into_iter().filter(|m| seen.insert(m.id.to_ascii_lowercase())).collect())
}

/// The targets file: a header, then `machine_id,device_dns_name,found_by`
/// per machine (the id is what a row acts on; the name is for people, under
/// a header that is no device-name alias, so it is carried, not looked up).
fn write(path: &Path, found_by: &str, machines: &[Machine]) -> std::io::Result<()> {
    let file = crate::private::create(path)?;
    let mut w = Dialect::COMMA.writer(std::io::BufWriter::new(file));
    w.write_record(["machine_id", "device_dns_name", "found_by"])?;
    for m in machines {
        let name = m.computer_dns_name.as_deref().unwrap_or_default();
        w.write_record([m.id.as_str(), name, found_by])?;
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
