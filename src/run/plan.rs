//! The survey: one full pass over the input before anything is sent. It
//! validates every row (so a bad file sends nothing), counts rows per action
//! (for confirmation, estimates and the progress bar) and collects what
//! needs looking up before sending (device names, Entra ID device ids, IP
//! addresses, machines whose OS matters, action types for the pre-flight).
//!
//! The execution pass reads the file again and plans each row again rather
//! than keeping the survey's plans: a plan holds the row's strings (comment,
//! device, parameters), so keeping a million of them would cost hundreds of
//! megabytes, while planning a row again costs a few hundred nanoseconds.
//! Both passes call the one planner (`input::plan_row`), so they cannot
//! disagree.

use std::collections::{BTreeMap, HashMap};

use super::identity::RowKey;
use super::journal::Intent;
use super::resolve::Lookups;

use crate::api::action::ActionKind;
use crate::input::{
    Columns, Input, InputError, Record, Role, RowDefaults, RowPlan, RowProblem, plan_row,
};
use crate::results::Status;

/// Problems kept for the report; beyond this only the count grows.
const MAX_PROBLEMS_KEPT: usize = 10_000;

/// What the survey found.
#[derive(Debug, Default)]
pub struct Survey {
    /// Rows selected for this run.
    pub rows: u64,
    /// Rows left out by `--only`.
    pub not_selected: u64,
    /// Rows of other tenants than the one this run keeps (`--tenant`, or
    /// one tenant's share of a run over many).
    pub other_tenants: u64,
    /// A run over many tenants: each tenant's share of the selected rows,
    /// surveyed in the same pass ([`survey_shares`]), by profile name.
    pub shares: BTreeMap<String, Survey>,
    /// Valid rows per action.
    pub per_action: BTreeMap<ActionKind, u64>,
    /// Row problems, in input order (at most [`MAX_PROBLEMS_KEPT`]).
    pub problems: Vec<RowProblem>,
    /// Rows with at least one problem.
    pub invalid_rows: u64,
    /// What to look up before sending (one entry per distinct key).
    pub lookups: Lookups,
    /// Rows of a results file being replayed whose earlier request may have
    /// reached the service (`in_doubt`, or `error` after a request left):
    /// looked up before anything is sent for them, as a resume does.
    pub replayed_in_doubt: HashMap<RowKey, Intent>,
}

impl Survey {
    /// Rows whose action the blast-radius cap counts (isolate, restrict,
    /// offboard: [`super::GUARDED_BY_CAP`]).
    pub fn guarded(&self) -> u64 {
        self.per_action
            .iter()
            .filter(|(a, _)| super::GUARDED_BY_CAP.contains(a))
            .map(|(_, n)| n)
            .sum()
    }

    /// Rows whose action cannot be undone (offboard).
    pub fn irreversible(&self) -> u64 {
        self.per_action.iter().filter(|(a, _)| a.irreversible()).map(|(_, n)| n).sum()
    }
}

/// True when `record` is selected by `--only` (always, without it). Rows of
/// a results file carry their earlier status; other inputs have none, and
/// are never selected by `--only`.
pub fn selected(record_status: Option<Status>, only: Option<&[Status]>) -> bool {
    match only {
        None => true,
        Some(set) => record_status.is_some_and(|s| set.contains(&s)),
    }
}

/// Why a record is not this run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `--only` leaves it out.
    NotSelected,
    /// It acts in another tenant than the one this run keeps.
    OtherTenant,
}

/// The plan of `record` when it is this run's (of the tenant it keeps,
/// and selected by `--only`), else why not. The tenant is told from its
/// cell before the row is planned: one tenant's share of a run over many
/// reads every row of the input, and plans only its own.
pub fn plan_selected(
    record: &Record,
    columns: &Columns,
    defaults: &RowDefaults,
    only: Option<&[Status]>,
) -> Result<Result<RowPlan, Vec<RowProblem>>, Skip> {
    if let Some(tenants) = &defaults.tenants
        && tenants.kept().is_some()
        && !tenants.keeps(crate::input::row_tenant(record, columns, defaults).as_deref())
    {
        return Err(Skip::OtherTenant);
    }
    let plan = plan_row(record, columns, defaults);
    let previous = match &plan {
        Ok(p) => p.previous_status,
        Err(_) => previous_status(columns, record),
    };
    if selected(previous, only) { Ok(plan) } else { Err(Skip::NotSelected) }
}

/// The earlier `status` of a row of a results file, even when the row is
/// otherwise invalid.
pub fn previous_status(columns: &Columns, record: &Record) -> Option<Status> {
    columns.cell(Role::Status, &record.values).and_then(|(_, v)| v.parse().ok())
}

/// Reads every record once and validates it.
pub fn survey(
    input: &Input,
    defaults: &RowDefaults,
    only: Option<&[Status]>,
) -> Result<Survey, InputError> {
    survey_checking(input, defaults, only, Lookups::default())
}

/// [`survey`], with the look-ups seeded by `seed`: with `check_ids` every
/// machine id is to be looked up too (a dry run: its plan says which ids
/// are not in the tenant), with `protect` those of the rows its policy
/// guards.
pub fn survey_checking(
    input: &Input,
    defaults: &RowDefaults,
    only: Option<&[Status]>,
    seed: Lookups,
) -> Result<Survey, InputError> {
    survey_pass(input, defaults, only, seed, false)
}

/// [`survey_checking`] of a run over many tenants: each tenant's share of
/// the rows surveyed too, in the same pass ([`Survey::shares`]), so that
/// no tenant's share reads and plans the whole input again before it can
/// start.
pub fn survey_shares(
    input: &Input,
    defaults: &RowDefaults,
    only: Option<&[Status]>,
    seed: Lookups,
) -> Result<Survey, InputError> {
    survey_pass(input, defaults, only, seed, true)
}

/// The pass of [`survey_checking`] and [`survey_shares`].
fn survey_pass(
    input: &Input,
    defaults: &RowDefaults,
    only: Option<&[Status]>,
    seed: Lookups,
    shares: bool,
) -> Result<Survey, InputError> {
    input.check_columns(defaults)?;
    let mut s = Survey { lookups: seed.clone(), ..Survey::default() };
    let columns = input.columns();
    for record in input.records()? {
        let record: Record = record?;
        let plan = match plan_selected(&record, columns, defaults, only) {
            Ok(plan) => plan,
            Err(Skip::NotSelected) => {
                s.not_selected += 1;
                continue;
            }
            Err(Skip::OtherTenant) => {
                s.other_tenants += 1;
                continue;
            }
        };
        if shares {
            let tenant = match &plan {
                Ok(p) => p.tenant.clone(),
                Err(_) => crate::input::row_tenant(&record, columns, defaults),
            };
            if let Some(t) = tenant {
                let share = s
                    .shares
                    .entry(t)
                    .or_insert_with(|| Survey { lookups: seed.clone(), ..Survey::default() });
                share.add(&plan);
            }
        }
        s.add(&plan);
    }
    Ok(s)
}

impl Survey {
    /// Counts one selected row: its action and look-ups, or its problems.
    fn add(&mut self, plan: &Result<RowPlan, Vec<RowProblem>>) {
        self.rows += 1;
        match plan {
            Ok(p) => {
                *self.per_action.entry(p.action).or_default() += 1;
                self.lookups.add(p);
                if let Some(intent) = replayed_request(p) {
                    self.replayed_in_doubt.entry(RowKey::of(p)).or_insert(intent);
                }
            }
            Err(problems) => {
                self.invalid_rows += 1;
                let room = MAX_PROBLEMS_KEPT.saturating_sub(self.problems.len());
                self.problems.extend(problems.iter().take(room).cloned());
            }
        }
    }
}

/// The earlier request of a replayed row that may have reached the
/// service: the row was `in_doubt`, or ended `error` after a request left
/// (a timeout may have been processed), and names the machine it went to.
fn replayed_request(plan: &RowPlan) -> Option<Intent> {
    let previous = plan.previous.as_ref()?;
    let maybe_sent = matches!(previous.status, Some(Status::InDoubt | Status::Error));
    if !maybe_sent || previous.requested_at.is_none() || previous.machine_id.is_empty() {
        return None;
    }
    Some(Intent {
        key: RowKey::of(plan).as_str().to_string(),
        line: plan.line,
        machine_id: previous.machine_id.to_ascii_lowercase(),
        action: plan.action.cli_name().to_string(),
        at: previous.requested_at,
    })
}
