//! What a run learns from the API before it sends any action, with read
//! calls only (so a dry run makes them too), and the in-memory maps the
//! reader thread decides rows from.
//!
//! - **Device look-ups** ([`look_up`], [`resolve_names`]): device names,
//!   Entra ID device ids and IP addresses become machine ids, and the
//!   `osPlatform` of the machines that Windows-only rows (offboard,
//!   stop-and-quarantine) name by id is learnt. Two ways, whichever takes
//!   fewer calls: the full paged listing (`GET machines`, 10,000 machines a
//!   call), or `$filter`s that OR up to [`MAX_KEYS_PER_FILTER`] keys a call.
//!   One batch of keys is one filter call; with more, the listing is tried
//!   first: its first page tells whether the fleet fits in one call, and the
//!   listing goes on only while it has cost fewer calls than the filters
//!   would. Every call goes through [`read`](super::call::read) (pacing, 429, retries).
//! - **Pre-flight** ([`pending_actions`]): one paged `GET machineactions`
//!   call lists the actions already `Pending` or `InProgress` of the types
//!   the input asks for; a row whose machine has one is `already_pending`
//!   and is not sent.
//! - [`Prepared`] holds the outcome: name → [`Resolution`], (machine id,
//!   action) → pending action, machine id → machine (for its OS), and,
//!   after a full listing, the set of the tenant's machine ids.
//!
//! Matching: device names compare case-insensitively with
//! `computerDnsName` (names are lowercased before filtering: the API
//! compares case-sensitively and keeps its names lowercase). A short name
//! (no dot) matches a bare name or the first label of an FQDN; an FQDN
//! matches only exactly. Several distinct machine ids for one key make it
//! [`Resolution::Ambiguous`] (re-imaged devices keep their name under a new
//! id), unless `--pick latest` takes the most recently seen. An IP address
//! matches `lastIpAddress`, the address a device last reported: a match is
//! only as fresh as that report.
//!
//! Memory is bounded by the distinct keys and machines, never by rows: the
//! listing is read page by page into [`MachineSummary`]s (the seven keys
//! used, nothing else), matched, and only a [`MachineRef`] of each match is
//! kept (its id as 20 bytes, `lastSeen` read, and `osPlatform` and
//! `healthStatus` shared between machines), plus one hash per machine of
//! the tenant, to settle unknown ids `not_found`. The answers live in one
//! sorted vector per kind of key ([`ByKey`]), allocated once from the
//! survey's keys and filled in place as pages arrive: there is no second
//! map of candidates to convert at the end, so the largest structure exists
//! once. 64 bytes per key looked up plus the key's text, and one listing
//! page in flight.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::call::{Ctx, read};
use super::submit::{PAGE, list_all_actions, next_skip};
use super::transport::Transport;
use crate::api::action::ActionKind;
use crate::api::client::CallError;
use crate::api::model::{MachineSummary, ODataList, is_final_status};
use crate::api::odata::{ListQuery, odata_string};
use crate::api::route::Api;
use crate::api::time::{format_utc, parse_utc};
use crate::input::{RowPlan, Target};
use crate::pace::Pacer;
use crate::results::{ResultRow, Status};

/// Keys OR'ed into one `$filter` at most.
pub const MAX_KEYS_PER_FILTER: usize = 20;

/// Characters of one `$filter` at most (before percent-encoding), so the
/// URL stays well inside what gateways accept.
pub const MAX_FILTER_CHARS: usize = 1_800;

/// Candidates spelled out in an `ambiguous` row's message at most.
const MAX_CANDIDATES_LISTED: usize = 10;

/// What a look-up keeps of a machine it matched: what a row needs to act
/// on it and to explain a choice between twins, in 48 bytes (one is kept
/// per name found, so 100,000 names keep 100,000 of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRef {
    /// The machine id: what the action is sent to.
    pub id: MachineId,
    /// `lastSeen`, read: orders twins (most recently seen first) and is
    /// shown beside each. `None` when absent or unreadable, which sorts
    /// as never seen.
    pub last_seen: Option<SystemTime>,
    /// `osPlatform` and `healthStatus`, one copy per distinct pair (a fleet
    /// has a few dozen) shared by every machine that has it.
    traits: Arc<Traits>,
}

/// The keys of a machine that many machines share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Traits {
    /// Decides whether Windows-only actions can be sent.
    os_platform: Option<String>,
    /// Shown beside each twin of an ambiguous name.
    health_status: Option<String>,
}

impl MachineRef {
    /// `osPlatform`: `Windows11`, `Linux`, `macOS`, ...
    pub fn os_platform(&self) -> Option<&str> {
        self.traits.os_platform.as_deref()
    }

    /// `healthStatus`: `Active`, `Inactive`, ...
    pub fn health_status(&self) -> Option<&str> {
        self.traits.health_status.as_deref()
    }

    /// True when the API refuses Windows-only actions on this device.
    pub fn is_linux_or_macos(&self) -> bool {
        let os = self.os_platform().unwrap_or("").to_ascii_lowercase();
        os.starts_with("linux") || os.starts_with("macos")
    }
}

/// A machine id. The service's ids are 40 hex digits: those are kept as
/// their 20 bytes (no allocation; case does not matter and they are shown
/// in lowercase, as the service writes them). Any other spelling is kept
/// verbatim, so an id of a shape the tool does not expect still works.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MachineId {
    /// 40 hex digits, as bytes.
    Hex([u8; 20]),
    /// Anything else, as received.
    Text(Box<str>),
}

impl MachineId {
    /// Reads an id as the API sent it.
    pub fn new(id: String) -> MachineId {
        let digits = id.as_bytes();
        if digits.len() != 40 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return MachineId::Text(id.into_boxed_str());
        }
        let value = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            // Only A-F are left: every byte is a hex digit (checked above).
            _ => c - b'A' + 10,
        };
        let mut bytes = [0u8; 20];
        for (b, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *b = (value(pair[0]) << 4) | value(pair[1]);
        }
        MachineId::Hex(bytes)
    }

    /// True when both name the same machine (ids compare case-insensitively).
    pub fn same(&self, other: &MachineId) -> bool {
        match (self, other) {
            (MachineId::Text(a), MachineId::Text(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    /// The id in lowercase, as rows and requests carry it.
    pub fn lowercase(&self) -> String {
        match self {
            MachineId::Hex(_) => self.to_string(),
            MachineId::Text(t) => t.to_ascii_lowercase(),
        }
    }
}

impl std::fmt::Display for MachineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineId::Hex(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
            MachineId::Text(t) => f.write_str(t),
        }
    }
}

/// What one device key (name, Entra ID device id, IP address) resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one machine (or the most recently seen one, with `--pick latest`).
    Found(MachineRef),
    /// No machine of the tenant matches.
    NotFound,
    /// Several distinct machines match, most recently seen first.
    Ambiguous(Vec<MachineRef>),
}

impl Resolution {
    /// Counts `m` as a candidate, once per machine id.
    fn add(&mut self, m: &MachineRef) {
        match self {
            Resolution::NotFound => *self = Resolution::Found(m.clone()),
            Resolution::Found(first) if first.id.same(&m.id) => {}
            Resolution::Found(first) => {
                let first = first.clone();
                *self = Resolution::Ambiguous(vec![first, m.clone()]);
            }
            Resolution::Ambiguous(candidates) => {
                if !candidates.iter().any(|c| c.id.same(&m.id)) {
                    candidates.push(m.clone());
                }
            }
        }
    }

    /// Orders the candidates, most recently seen first, and with
    /// `pick_latest` takes the first. Returns how many there were when
    /// `--pick latest` chose between several.
    fn settle(&mut self, pick_latest: bool) -> Option<usize> {
        let Resolution::Ambiguous(candidates) = self else { return None };
        candidates.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
        if !pick_latest {
            return None;
        }
        let n = candidates.len();
        let latest = candidates.swap_remove(0);
        *self = Resolution::Found(latest);
        Some(n)
    }
}

/// Per key (a lowercased device name, Entra ID device id or address), what
/// it resolved to: one entry per distinct key of the input, sorted by key,
/// found by binary search.
///
/// A vector rather than a hash map: it is built once, in order, from the
/// survey's sorted set and never grows, so it costs exactly its entries (a
/// hash map of 100,000 names would keep 131,072 buckets, and twice that
/// while growing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByKey(Vec<(Box<str>, Resolution)>);

impl ByKey {
    /// Every key of `keys`, not found yet.
    fn new(keys: &BTreeSet<String>) -> ByKey {
        // A BTreeSet iterates in order: the vector is sorted as built.
        ByKey(keys.iter().map(|k| (k.as_str().into(), Resolution::NotFound)).collect())
    }

    /// What `key` resolved to, if it was looked up.
    pub fn get(&self, key: &str) -> Option<&Resolution> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &self.0[i].1)
    }

    /// The entry of `key`, when it is one of the keys looked up.
    fn get_mut(&mut self, key: &str) -> Option<&mut Resolution> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &mut self.0[i].1)
    }

    /// Keys looked up.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// What every key resolved to, in key order.
    pub fn values(&self) -> impl Iterator<Item = &Resolution> {
        self.0.iter().map(|(_, r)| r)
    }
}

impl std::ops::Index<&str> for ByKey {
    type Output = Resolution;

    /// What `key` resolved to; panics when it was not looked up (like a map).
    fn index(&self, key: &str) -> &Resolution {
        match self.get(key) {
            Some(r) => r,
            None => panic!("{key:?} was not looked up"),
        }
    }
}

/// What the input needs looked up, collected by the survey: one entry per
/// distinct key, whatever the number of rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Device names of rows without a machine id, lowercased.
    pub names: BTreeSet<String>,
    /// Entra ID device ids of rows with neither a machine id nor a name, lowercased.
    pub aad_device_ids: BTreeSet<String>,
    /// IP addresses of rows with nothing more precise, normalised.
    pub ips: BTreeSet<String>,
    /// Machine ids of Windows-only rows that name their machine by id: their
    /// `osPlatform` decides whether the row can be sent.
    pub os_ids: BTreeSet<String>,
    /// The actions the input asks for (the pre-flight looks for these).
    pub actions: BTreeSet<ActionKind>,
}

impl Lookups {
    /// Records what a valid row needs looked up.
    pub fn add(&mut self, plan: &RowPlan) {
        self.actions.insert(plan.action);
        match &plan.target {
            Target::Id(id) => {
                if plan.action.windows_only() && !self.os_ids.contains(id) {
                    self.os_ids.insert(id.clone());
                }
            }
            Target::Name(name) => {
                let name = name.to_lowercase();
                if !self.names.contains(&name) {
                    self.names.insert(name);
                }
            }
            Target::AadDeviceId(aad) => {
                let aad = aad.to_ascii_lowercase();
                if !self.aad_device_ids.contains(&aad) {
                    self.aad_device_ids.insert(aad);
                }
            }
            Target::Ip(ip) => {
                if !self.ips.contains(ip) {
                    self.ips.insert(ip.clone());
                }
            }
        }
    }

    /// True when no machine needs looking up.
    pub fn no_machines(&self) -> bool {
        self.names.is_empty()
            && self.aad_device_ids.is_empty()
            && self.ips.is_empty()
            && self.os_ids.is_empty()
    }
}

/// The outcome of [`look_up`].
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Per device name (lowercased), what it resolved to.
    pub names: ByKey,
    /// Per Entra ID device id (lowercased), what it resolved to.
    pub aad_device_ids: ByKey,
    /// Per IP address, what it resolved to.
    pub ips: ByKey,
    /// The machines of [`Lookups::os_ids`] that exist, by id: an id looked
    /// up and absent here is not in the tenant.
    pub os: HashMap<String, MachineRef>,
    /// Hashes ([`id_hash`]) of every machine id of the tenant, when the full
    /// listing was read; `None` after filters.
    pub fleet: Option<HashSet<u64>>,
    /// `GET machines` calls made (pages included, retries not).
    pub calls: u64,
}

/// An action already pending or in progress, found by the pre-flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAction {
    /// The MachineAction id.
    pub id: String,
    /// `Pending` or `InProgress`.
    pub status: String,
    /// When it was created, as the API wrote it.
    pub created: Option<String>,
}

/// (machine id lowercased, action) → the newest action of that type still open on it.
pub type PendingMap = HashMap<(String, ActionKind), PendingAction>;

/// Everything learnt before sending; the reader thread decides rows from it.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Device look-ups.
    pub found: Found,
    /// Why the device look-up failed, if it did: rows that needed it are
    /// settled `error` (nothing is guessed), the OS check is skipped.
    pub lookup_error: Option<CallError>,
    /// Whether [`Found::os`] answers for every id of [`Lookups::os_ids`].
    pub os_known: bool,
    /// Open actions by machine and type (empty when the pre-flight failed:
    /// the API itself then refuses a repeat with `ActiveRequestAlreadyExists`).
    pub pending: PendingMap,
}

/// Runs the look-ups and the pre-flight (concurrently: they are separate
/// APIs with separate quotas). Failures are kept in the result, never
/// fatal: rows that cannot be decided without them are settled `error`.
/// Returns at once, with nothing learnt, when a stop is asked for.
pub async fn prepare<T: Transport>(ctx: &Ctx<T>, lookups: &Lookups, pick_latest: bool) -> Prepared {
    let work = async {
        let (found, pending) = tokio::join!(
            look_up(ctx, lookups, pick_latest),
            pending_actions(ctx, &lookups.actions)
        );
        let mut prepared = Prepared::default();
        match found {
            Ok(found) => {
                if !lookups.no_machines() {
                    let mut counts = [0usize; 3];
                    for r in found
                        .names
                        .values()
                        .chain(found.aad_device_ids.values())
                        .chain(found.ips.values())
                    {
                        counts[match r {
                            Resolution::Found(_) => 0,
                            Resolution::NotFound => 1,
                            Resolution::Ambiguous(_) => 2,
                        }] += 1;
                    }
                    tracing::info!(
                        calls = found.calls,
                        found = counts[0],
                        not_found = counts[1],
                        ambiguous = counts[2],
                        os_checked = found.os.len(),
                        listing = found.fleet.is_some(),
                        "devices looked up"
                    );
                }
                prepared.os_known = true;
                prepared.found = found;
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking devices up failed; rows that name a device without its id are settled as errors");
                prepared.lookup_error = Some(e);
            }
        }
        match pending {
            Ok(pending) => {
                if !lookups.actions.is_empty() {
                    tracing::info!(
                        open = pending.len(),
                        "pre-flight: actions already pending or in progress"
                    );
                }
                prepared.pending = pending;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pre-flight failed; going on without it (the API refuses repeats itself)")
            }
        }
        prepared
    };
    tokio::select! {
        biased;
        () = ctx.stop.wait() => Prepared::default(),
        p = work => p,
    }
}

/// Resolves device names (lowercased in the answer's keys) to machines, by
/// whichever of the listing and batched filters takes fewer calls.
#[cfg(test)]
pub async fn resolve_names<T: Transport>(
    ctx: &Ctx<T>,
    names: &BTreeSet<String>,
    pick_latest: bool,
) -> Result<ByKey, CallError> {
    let lookups =
        Lookups { names: names.iter().map(|n| n.to_lowercase()).collect(), ..Lookups::default() };
    Ok(look_up(ctx, &lookups, pick_latest).await?.names)
}

/// Looks every key of `lookups` up (see the module documentation for the
/// cost rule).
pub async fn look_up<T: Transport>(
    ctx: &Ctx<T>,
    lookups: &Lookups,
    pick_latest: bool,
) -> Result<Found, CallError> {
    let no_ids = HashSet::new();
    let batches = filter_batches(lookups, &no_ids).count() as u64;
    let mut calls = 0u64;
    let mut matches = Matches::new(lookups);
    if batches > 1 {
        let mut skip = 0u32;
        loop {
            let page = machines_page(ctx, None, skip).await?;
            calls += 1;
            let next = next_skip(&page, skip);
            for m in page.value {
                matches.ingest(lookups, m, true);
            }
            match next {
                None => return Ok(matches.finish(pick_latest, true, calls)),
                Some(s) => skip = s,
            }
            if calls >= batches {
                break;
            }
        }
        // Listing the rest could cost more than the filters: use them.
        // Machines already seen by id stay known (ids are unique); names,
        // Entra ids and addresses may match on pages not read, so they are
        // asked again.
        let known: HashSet<String> = matches.os.keys().cloned().collect();
        tracing::debug!(pages = calls, "listing stopped: filters are cheaper for the rest");
        matches.forget_keys(lookups);
        for filter in filter_batches(lookups, &known) {
            calls += run_filter(ctx, lookups, &filter, &mut matches).await?;
        }
        return Ok(matches.finish(pick_latest, false, calls));
    }
    for filter in filter_batches(lookups, &no_ids) {
        calls += run_filter(ctx, lookups, &filter, &mut matches).await?;
    }
    Ok(matches.finish(pick_latest, false, calls))
}

/// Runs one `$filter` on `GET machines` to its last page; returns the calls made.
async fn run_filter<T: Transport>(
    ctx: &Ctx<T>,
    lookups: &Lookups,
    filter: &str,
    matches: &mut Matches,
) -> Result<u64, CallError> {
    let mut calls = 0;
    let mut skip = 0u32;
    loop {
        let page = machines_page(ctx, Some(filter), skip).await?;
        calls += 1;
        let next = next_skip(&page, skip);
        for m in page.value {
            matches.ingest(lookups, m, false);
        }
        match next {
            None => return Ok(calls),
            Some(s) => skip = s,
        }
    }
}

/// One page of `GET machines`. The documentation says the API answers 404
/// when the tenant has no recent machine: that is an empty page.
async fn machines_page<T: Transport>(
    ctx: &Ctx<T>,
    filter: Option<&str>,
    skip: u32,
) -> Result<ODataList<MachineSummary>, CallError> {
    let query = ListQuery {
        filter: filter.map(str::to_string),
        top: Some(PAGE),
        skip: (skip > 0).then_some(skip),
    };
    match read(ctx, Api::ListMachines, || ctx.transport.list_machine_summaries(&query)).await {
        Err(CallError::Api { status: 404, .. }) => {
            Ok(ODataList { context: None, value: Vec::new(), next_link: None })
        }
        other => other,
    }
}

/// The `$filter`s that look up every key of `lookups` except the machine
/// ids in `known`: each ORs at most [`MAX_KEYS_PER_FILTER`] keys and
/// [`MAX_FILTER_CHARS`] characters.
#[cfg(test)]
pub fn filters(lookups: &Lookups, known: &HashSet<String>) -> Vec<String> {
    filter_batches(lookups, known).collect()
}

/// [`filters`], one at a time: the cost rule only counts them, and 100,000
/// names make 5,000 filters (7 MB of text) that a listing never sends.
fn filter_batches<'a>(
    lookups: &'a Lookups,
    known: &'a HashSet<String>,
) -> impl Iterator<Item = String> + Send + 'a {
    let mut clauses = lookups
        .names
        .iter()
        .map(|n| {
            if n.contains('.') {
                format!("computerDnsName eq {}", odata_string(n))
            } else {
                format!(
                    "computerDnsName eq {} or startswith(computerDnsName,{})",
                    odata_string(n),
                    odata_string(&format!("{n}."))
                )
            }
        })
        .chain(lookups.aad_device_ids.iter().map(|a| format!("aadDeviceId eq {}", odata_string(a))))
        .chain(lookups.ips.iter().map(|ip| format!("lastIpAddress eq {}", odata_string(ip))))
        .chain(
            lookups
                .os_ids
                .iter()
                .filter(|id| !known.contains(*id))
                .map(|id| format!("id eq {}", odata_string(id))),
        )
        .peekable();
    std::iter::from_fn(move || {
        // A clause longer than the limit on its own still goes, alone.
        let mut current = clauses.next()?;
        let mut keys = 1;
        while keys < MAX_KEYS_PER_FILTER
            && let Some(clause) =
                clauses.next_if(|c| current.len() + 4 + c.len() <= MAX_FILTER_CHARS)
        {
            current.push_str(" or ");
            current.push_str(&clause);
            keys += 1;
        }
        Some(current)
    })
}

/// A machine id's 64-bit hash, for the set of the tenant's ids. A collision
/// can only make an unknown id look known, so the row is sent and the API
/// answers 404: never the other way round.
pub fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

/// An IP address in one spelling (`FE80:0::1` and `fe80::1` are one address).
fn normal_ip(s: &str) -> String {
    s.trim().parse::<IpAddr>().map_or_else(|_| s.trim().to_string(), |ip| ip.to_string())
}

/// Machines matched so far, per key: the answers themselves, filled in
/// place (see the module documentation).
#[derive(Debug)]
struct Matches {
    names: ByKey,
    aad_device_ids: ByKey,
    ips: ByKey,
    os: HashMap<String, MachineRef>,
    fleet: HashSet<u64>,
    /// One copy of each distinct pair of `osPlatform` and `healthStatus`.
    shared: HashSet<Arc<Traits>>,
}

impl Matches {
    /// Nothing matched yet: every key of `lookups` not found.
    fn new(lookups: &Lookups) -> Matches {
        Matches {
            names: ByKey::new(&lookups.names),
            aad_device_ids: ByKey::new(&lookups.aad_device_ids),
            ips: ByKey::new(&lookups.ips),
            os: HashMap::new(),
            fleet: HashSet::new(),
            shared: HashSet::new(),
        }
    }

    /// Forgets what the names, Entra ids and addresses matched (when a
    /// listing stops part-way and filters ask for them again); machines
    /// already found by id stay known, ids being unique.
    fn forget_keys(&mut self, lookups: &Lookups) {
        let os = std::mem::take(&mut self.os);
        let shared = std::mem::take(&mut self.shared);
        *self = Matches { os, shared, ..Matches::new(lookups) };
    }

    /// The shared copy of these traits.
    fn share(&mut self, traits: Traits) -> Arc<Traits> {
        if let Some(known) = self.shared.get(&traits) {
            return Arc::clone(known);
        }
        let new = Arc::new(traits);
        self.shared.insert(Arc::clone(&new));
        new
    }

    /// Matches one machine against every key; `listing` records its id in
    /// the fleet set too.
    fn ingest(&mut self, lookups: &Lookups, m: MachineSummary, listing: bool) {
        if listing {
            self.fleet.insert(id_hash(&m.id));
        }
        let name = m.computer_dns_name.as_deref().map(str::to_lowercase);
        let short = name.as_deref().and_then(|n| n.split_once('.')).map(|(first, _)| first);
        let aad = m.aad_device_id.as_deref().map(str::to_ascii_lowercase);
        let ip = m.last_ip_address.as_deref().map(normal_ip);
        let id = m.id.to_ascii_lowercase();
        fn wanted<'k>(keys: &ByKey, key: Option<&'k str>) -> Option<&'k str> {
            key.filter(|k| keys.get(k).is_some())
        }
        let name_key = wanted(&self.names, name.as_deref());
        let short_key = wanted(&self.names, short);
        let aad_key = wanted(&self.aad_device_ids, aad.as_deref());
        let ip_key = wanted(&self.ips, ip.as_deref());
        let os = lookups.os_ids.contains(&id);
        if name_key.is_none() && short_key.is_none() && aad_key.is_none() && ip_key.is_none() && !os
        {
            return;
        }
        let found = MachineRef {
            id: MachineId::new(m.id),
            last_seen: m.last_seen.as_deref().and_then(parse_utc),
            traits: self
                .share(Traits { os_platform: m.os_platform, health_status: m.health_status }),
        };
        for key in [name_key, short_key].into_iter().flatten() {
            if let Some(slot) = self.names.get_mut(key) {
                slot.add(&found);
            }
        }
        if let Some(slot) = aad_key.and_then(|k| self.aad_device_ids.get_mut(k)) {
            slot.add(&found);
        }
        if let Some(slot) = ip_key.and_then(|k| self.ips.get_mut(k)) {
            slot.add(&found);
        }
        if os {
            self.os.insert(id, found);
        }
    }

    /// Settles every key: candidates ordered, `--pick latest` applied.
    fn finish(mut self, pick_latest: bool, complete: bool, calls: u64) -> Found {
        for keys in [&mut self.names, &mut self.aad_device_ids, &mut self.ips] {
            for (key, r) in &mut keys.0 {
                if let Some(n) = r.settle(pick_latest)
                    && let Resolution::Found(m) = r
                {
                    tracing::info!(
                        key = %key,
                        machine_id = %m.id,
                        candidates = n,
                        "several machines match; --pick latest took the most recently seen"
                    );
                }
            }
        }
        Found {
            names: self.names,
            aad_device_ids: self.aad_device_ids,
            ips: self.ips,
            os: self.os,
            fleet: complete.then_some(self.fleet),
            calls,
        }
    }
}

/// The pre-flight: every action of the given types still `Pending` or
/// `InProgress`, in one paged `GET machineactions` call.
pub async fn pending_actions<T: Transport>(
    ctx: &Ctx<T>,
    actions: &BTreeSet<ActionKind>,
) -> Result<PendingMap, CallError> {
    let mut open = PendingMap::new();
    if actions.is_empty() {
        return Ok(open);
    }
    let types: Vec<String> =
        actions.iter().map(|a| format!("type eq {}", odata_string(a.type_name()))).collect();
    let filter =
        format!("(status eq 'Pending' or status eq 'InProgress') and ({})", types.join(" or "));
    for a in list_all_actions(ctx, &filter).await? {
        let Some(kind) = ActionKind::from_type_name(&a.kind) else { continue };
        if !actions.contains(&kind) || is_final_status(&a.status) {
            continue;
        }
        // Newest first: the first one seen per machine and type is kept.
        open.entry((a.machine_id.to_ascii_lowercase(), kind)).or_insert(PendingAction {
            id: a.id,
            status: a.status,
            created: a.creation_date_time_utc,
        });
    }
    Ok(open)
}

impl Prepared {
    /// The machine a row acts on (with what is known of it), or the row
    /// settled when its device cannot be named: `not_found`, `ambiguous`,
    /// or `error` when the look-up failed.
    pub fn target<'a>(
        &'a self,
        plan: &RowPlan,
    ) -> Result<(String, Option<&'a MachineRef>), Box<ResultRow>> {
        let (map, key, what) = match &plan.target {
            Target::Id(id) => return Ok((id.clone(), self.found.os.get(id))),
            Target::Name(n) => (&self.found.names, n.to_lowercase(), "device name"),
            Target::AadDeviceId(a) => {
                (&self.found.aad_device_ids, a.to_ascii_lowercase(), "aadDeviceId")
            }
            Target::Ip(ip) => (&self.found.ips, ip.clone(), "IP address"),
        };
        let settle = |status, code: &str, message: String| {
            Box::new(settled(plan, String::new(), status, code, message))
        };
        match map.get(key.as_str()) {
            Some(Resolution::Found(m)) => Ok((m.id.lowercase(), Some(m))),
            Some(Resolution::NotFound) => Err(settle(
                Status::NotFound,
                "NotFound",
                match &plan.target {
                    Target::Name(n) => format!(
                        "no machine named {n:?} in the tenant (names match computerDnsName case-insensitively; a short name matches the first label of an FQDN, an FQDN only exactly); nothing was sent"
                    ),
                    Target::Ip(ip) => format!(
                        "no machine whose lastIpAddress is {ip} (the address each device last reported; it may have changed since); nothing was sent"
                    ),
                    other => format!(
                        "no machine with aadDeviceId {other} in the tenant; nothing was sent"
                    ),
                },
            )),
            Some(Resolution::Ambiguous(candidates)) => Err(settle(
                Status::Ambiguous,
                "Ambiguous",
                ambiguous_message(what, &plan.target, candidates),
            )),
            None => Err(match &self.lookup_error {
                Some(e) => settle(
                    Status::Error,
                    e.code(),
                    format!("looking the {what} up failed ({e}); nothing was sent"),
                ),
                None => settle(
                    Status::Error,
                    "NotLookedUp",
                    format!("the {what} was not looked up; nothing was sent"),
                ),
            }),
        }
    }

    /// Settles a row whose machine is known, before anything is sent: a
    /// machine id that is not in the tenant (`not_found`), a Windows-only
    /// action on Linux or macOS (`rejected`, `OsPlatformNotSupported`), an
    /// action of the same type already open on the machine
    /// (`already_pending`). `None`: send it.
    pub fn check(
        &self,
        plan: &RowPlan,
        machine_id: &str,
        machine: Option<&MachineRef>,
    ) -> Option<ResultRow> {
        let by_id = matches!(plan.target, Target::Id(_));
        let absent_from_listing =
            self.found.fleet.as_ref().is_some_and(|f| !f.contains(&id_hash(machine_id)));
        let absent_from_os_lookup =
            self.os_known && plan.action.windows_only() && machine.is_none();
        if by_id && (absent_from_listing || absent_from_os_lookup) {
            return Some(settled(
                plan,
                machine_id.to_string(),
                Status::NotFound,
                "NotFound",
                "no machine with this id in the tenant; nothing was sent".to_string(),
            ));
        }
        if plan.action.windows_only()
            && let Some(m) = machine.filter(|m| m.is_linux_or_macos())
        {
            let os = m.os_platform().unwrap_or_default();
            return Some(settled(
                plan,
                machine_id.to_string(),
                Status::Rejected,
                "OsPlatformNotSupported",
                format!(
                    "{} is not supported on {os} devices: the API accepts it on Windows only; nothing was sent",
                    plan.action
                ),
            ));
        }
        let pending = self.pending.get(&(machine_id.to_ascii_lowercase(), plan.action))?;
        let mut row = settled(
            plan,
            machine_id.to_string(),
            Status::AlreadyPending,
            "",
            format!(
                "a {} action is already {} on this device (created {}); nothing was sent",
                plan.action.type_name(),
                pending.status,
                pending.created.as_deref().unwrap_or("at an unknown time")
            ),
        );
        row.action_id = pending.id.clone();
        row.action_status = pending.status.clone();
        Some(row)
    }
}

/// A row decided without a request.
fn settled(
    plan: &RowPlan,
    machine_id: String,
    status: Status,
    code: &str,
    message: String,
) -> ResultRow {
    ResultRow::settled(plan.line, machine_id, plan.action.cli_name(), status, message)
        .with_code(code)
}

/// The message of an `ambiguous` row: every candidate (id, lastSeen,
/// healthStatus), most recently seen first, and the ways out.
fn ambiguous_message(what: &str, target: &Target, candidates: &[MachineRef]) -> String {
    let listed: Vec<String> = candidates
        .iter()
        .take(MAX_CANDIDATES_LISTED)
        .map(|m| {
            format!(
                "{} (lastSeen {}, {})",
                m.id,
                m.last_seen.map_or_else(|| "unknown".to_string(), format_utc),
                m.health_status().unwrap_or("health unknown")
            )
        })
        .collect();
    let more = candidates.len().saturating_sub(MAX_CANDIDATES_LISTED);
    format!(
        "{} machines match the {what} {:?}: {}{}; give the machine_id of the right one, or pass --pick latest to take the most recently seen",
        candidates.len(),
        target.to_string(),
        listed.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    )
}

/// How long sending `per_action` rows takes under the quota: the exact
/// schedule the pacer follows for each action's API; the APIs have separate
/// quotas and run concurrently, so the longest one decides.
pub fn estimate<'a>(pacer: &Pacer, per_action: impl IntoIterator<Item = &'a u64>) -> Duration {
    per_action.into_iter().map(|&n| pacer.schedule(n)).max().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::api::client::{ActionBody, Reply};
    use crate::api::model::{Machine, MachineAction};
    use crate::pace::Limit;
    use crate::run::{RetryPolicy, Stop};
    use crate::sim::fleet::{generate, host_name, twin_count, twin_of};
    use crate::sim::odata::{self, MACHINE_ACTIONS, MACHINES, parse_filter};

    /// An in-memory tenant that answers list calls like the service
    /// (filters evaluated by the simulator's OData parser) and records them.
    struct Tenant {
        machines: Vec<Machine>,
        actions: Vec<MachineAction>,
        /// Entities per reply before an `@odata.nextLink`.
        page_size: Option<usize>,
        /// Every list call: (api, query).
        calls: Mutex<Vec<(&'static str, ListQuery)>>,
        /// Status of every `GET machines` answer instead of a list.
        machines_status: Option<u16>,
    }

    impl Tenant {
        fn new(machines: Vec<Machine>) -> Tenant {
            Tenant {
                machines,
                actions: Vec::new(),
                page_size: None,
                calls: Mutex::new(Vec::new()),
                machines_status: None,
            }
        }

        fn calls(&self, api: &str) -> Vec<ListQuery> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(a, _)| *a == api)
                .map(|(_, q)| q.clone())
                .collect()
        }

        fn page<T: Clone>(&self, items: Vec<&T>, q: &ListQuery) -> ODataList<T> {
            let top = q.top.unwrap_or(10_000) as usize;
            let page = self.page_size.unwrap_or(usize::MAX).min(top);
            let rest: Vec<&T> = items.into_iter().skip(q.skip.unwrap_or(0) as usize).collect();
            ODataList {
                context: None,
                value: rest.iter().take(page).map(|t| (*t).clone()).collect(),
                next_link: (rest.len() > page && page < top).then(|| "next".to_string()),
            }
        }
    }

    fn machine_field<'a>(m: &'a Machine, name: &str) -> odata::Value<'a> {
        let opt =
            |v: &'a Option<String>| v.as_deref().map_or(odata::Value::Null, odata::Value::Str);
        match name {
            "id" => odata::Value::Str(&m.id),
            "computerDnsName" => opt(&m.computer_dns_name),
            "aadDeviceId" => opt(&m.aad_device_id),
            "lastIpAddress" => opt(&m.last_ip_address),
            "osPlatform" => opt(&m.os_platform),
            _ => odata::Value::Null,
        }
    }

    impl Transport for Tenant {
        async fn authenticate(&self) -> Result<(), String> {
            Ok(())
        }

        async fn submit(
            &self,
            _: &str,
            _: ActionKind,
            _: &ActionBody,
        ) -> Result<Reply<MachineAction>, CallError> {
            panic!("a look-up must never send an action")
        }

        async fn list_actions(
            &self,
            q: &ListQuery,
        ) -> Result<Reply<ODataList<MachineAction>>, CallError> {
            self.calls.lock().unwrap().push(("GET machineactions", q.clone()));
            let f = parse_filter(q.filter.as_deref().unwrap(), &MACHINE_ACTIONS).unwrap();
            let items: Vec<&MachineAction> = self
                .actions
                .iter()
                .filter(|a| {
                    f.matches(&|name: &str| match name {
                        "status" => odata::Value::Str(&a.status),
                        "type" => odata::Value::Str(&a.kind),
                        "machineId" => odata::Value::Str(&a.machine_id),
                        _ => odata::Value::Null,
                    })
                })
                .collect();
            Ok(Reply { status: 200, value: self.page(items, q) })
        }

        async fn list_machines(
            &self,
            q: &ListQuery,
        ) -> Result<Reply<ODataList<Machine>>, CallError> {
            self.calls.lock().unwrap().push(("GET machines", q.clone()));
            if let Some(status) = self.machines_status {
                return Err(CallError::Api { status, error: None, retry_after: None });
            }
            let f = q.filter.as_deref().map(|f| parse_filter(f, &MACHINES).unwrap());
            let items: Vec<&Machine> = self
                .machines
                .iter()
                .filter(|m| f.as_ref().is_none_or(|f| f.matches(&|n: &str| machine_field(m, n))))
                .collect();
            Ok(Reply { status: 200, value: self.page(items, q) })
        }

        async fn cancel_action(
            &self,
            _: &str,
            _: Option<&str>,
        ) -> Result<Reply<MachineAction>, CallError> {
            panic!("a look-up must never cancel an action")
        }
    }

    fn ctx(tenant: Tenant) -> Ctx<Tenant> {
        Ctx::new(
            Arc::new(tenant),
            Arc::new(Pacer::new(&[], None)),
            None,
            RetryPolicy::default(),
            Stop::new(),
        )
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn found_id(r: &Resolution) -> String {
        match r {
            Resolution::Found(m) => m.id.to_string(),
            other => panic!("expected a machine, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn names_match_fqdns_exactly_short_names_by_first_label_and_ignore_case() {
        let fleet = generate(1000, 1, 0.0);
        let c = ctx(Tenant::new(fleet.clone()));
        let t = twin_of(1000, 0);
        let names = set(&[
            "host-00001.contoso.test",
            "HOST-00002",
            "Host-00003.Contoso.Test",
            "host-00004.contoso",
            "host-00001.fabrikam.test",
            "nothing-here",
            &host_name(t),
            &host_name(t)[..10],
        ]);
        let got = resolve_names(&c, &names, false).await.unwrap();
        assert_eq!(got.len(), 8, "one answer per name, keys lowercased");
        assert_eq!(found_id(&got["host-00001.contoso.test"]), fleet[1].id);
        assert_eq!(found_id(&got["host-00002"]), fleet[2].id);
        assert_eq!(found_id(&got["host-00003.contoso.test"]), fleet[3].id);
        assert_eq!(got["host-00004.contoso"], Resolution::NotFound, "an FQDN matches only exactly");
        assert_eq!(got["host-00001.fabrikam.test"], Resolution::NotFound);
        assert_eq!(got["nothing-here"], Resolution::NotFound);
        let twin_record = &fleet[1000 - twin_count(1000)];
        for key in [host_name(t), host_name(t)[..10].to_string()] {
            let Resolution::Ambiguous(c) = &got[key.as_str()] else {
                panic!("{key}: {:?}", got[key.as_str()])
            };
            let ids: Vec<String> = c.iter().map(|m| m.id.to_string()).collect();
            assert_eq!(ids, [fleet[t].id.as_str(), twin_record.id.as_str()], "newest first");
            assert!(c.iter().all(|m| m.last_seen.is_some() && m.health_status().is_some()));
        }
        // One call: eight names fit one filter.
        let calls = c.transport.calls("GET machines");
        assert_eq!(calls.len(), 1);
        assert!(
            calls[0]
                .filter
                .as_deref()
                .unwrap()
                .contains("startswith(computerDnsName,'host-00002.')")
        );
        let latest = resolve_names(&c, &set(&[host_name(t).as_str()]), true).await.unwrap();
        assert_eq!(found_id(&latest[host_name(t).as_str()]), fleet[t].id);
    }

    #[tokio::test]
    async fn many_names_cost_one_listing_call_for_a_small_fleet() {
        let fleet = generate(1000, 3, 0.0);
        let c = ctx(Tenant::new(fleet.clone()));
        let names: BTreeSet<String> = (100..400).map(host_name).collect();
        let got = resolve_names(&c, &names, false).await.unwrap();
        let calls = c.transport.calls("GET machines");
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].filter, None);
        assert_eq!(calls[0].top, Some(10_000));
        for i in 100..400 {
            let twinned = (0..twin_count(1000)).any(|k| twin_of(1000, k) == i);
            match &got[host_name(i).as_str()] {
                Resolution::Found(m) => assert!(!twinned && m.id.to_string() == fleet[i].id),
                Resolution::Ambiguous(c) => assert!(twinned && c.len() == 2),
                Resolution::NotFound => panic!("{i}"),
            }
        }
    }

    #[tokio::test]
    async fn a_large_fleet_is_listed_only_while_that_is_cheaper_than_filters() {
        let fleet = generate(25_000, 5, 0.0);
        // 300 names: 15 filter calls, 3 listing pages.
        let c = ctx(Tenant::new(fleet.clone()));
        let names: BTreeSet<String> = (0..300).map(|i| host_name(i * 80)).collect();
        let got = resolve_names(&c, &names, false).await.unwrap();
        let calls = c.transport.calls("GET machines");
        assert_eq!(
            calls.iter().map(|q| q.skip).collect::<Vec<_>>(),
            [None, Some(10_000), Some(20_000)]
        );
        assert!(calls.iter().all(|q| q.filter.is_none()));
        assert_eq!(found_id(&got[host_name(80).as_str()]), fleet[80].id);
        // 30 names: 2 filter calls; the listing stops after 2 pages and the
        // filters answer (2 + 2 calls, never more than twice the filters).
        let c = ctx(Tenant::new(fleet.clone()));
        let names: BTreeSet<String> = (0..30).map(|i| host_name(i * 800 + 1)).collect();
        let got = resolve_names(&c, &names, false).await.unwrap();
        let calls = c.transport.calls("GET machines");
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(calls[..2].iter().all(|q| q.filter.is_none()));
        assert!(calls[2..].iter().all(|q| q.filter.is_some()));
        for i in 0..30 {
            let i = i * 800 + 1;
            assert_eq!(found_id(&got[host_name(i).as_str()]), fleet[i].id, "{i}");
        }
        // The twin of device 5 is the last record: on a page never listed.
        let c = ctx(Tenant::new(fleet.clone()));
        let mut names: BTreeSet<String> = (0..30).map(|i| host_name(i * 800 + 1)).collect();
        names.insert(host_name(5));
        let got = resolve_names(&c, &names, false).await.unwrap();
        let Resolution::Ambiguous(c) = &got[host_name(5).as_str()] else { panic!() };
        assert_eq!(c.len(), 2);
    }

    #[tokio::test]
    async fn a_service_paging_below_top_is_followed_to_the_end() {
        let fleet = generate(1000, 3, 0.0);
        let mut tenant = Tenant::new(fleet.clone());
        tenant.page_size = Some(300);
        let c = ctx(tenant);
        let names: BTreeSet<String> = (900..990).map(host_name).collect();
        let got = resolve_names(&c, &names, false).await.unwrap();
        let calls = c.transport.calls("GET machines");
        assert_eq!(
            calls.iter().map(|q| q.skip).collect::<Vec<_>>(),
            [None, Some(300), Some(600), Some(900)]
        );
        assert_eq!(found_id(&got[host_name(989).as_str()]), fleet[989].id);
    }

    #[tokio::test]
    async fn entra_ids_addresses_and_os_ids_are_looked_up_with_the_names() {
        let fleet = generate(1000, 9, 0.0);
        let with_aad: Vec<&Machine> =
            fleet.iter().filter(|m| m.aad_device_id.is_some()).take(2).collect();
        let lookups = Lookups {
            names: set(&["host-00010"]),
            aad_device_ids: [with_aad[0].aad_device_id.clone().unwrap()].into_iter().collect(),
            ips: [fleet[20].last_ip_address.clone().unwrap(), "192.0.2.1".to_string()]
                .into_iter()
                .collect(),
            os_ids: [fleet[7].id.clone(), "0".repeat(40)].into_iter().collect(),
            actions: [ActionKind::Offboard].into_iter().collect(),
        };
        let c = ctx(Tenant::new(fleet.clone()));
        let found = look_up(&c, &lookups, false).await.unwrap();
        assert_eq!(c.transport.calls("GET machines").len(), 1, "six keys, one filter");
        assert_eq!(found_id(&found.names["host-00010"]), fleet[10].id);
        assert_eq!(found_id(found.aad_device_ids.values().next().unwrap()), with_aad[0].id);
        assert_eq!(
            found_id(&found.ips[fleet[20].last_ip_address.as_deref().unwrap()]),
            fleet[20].id
        );
        assert_eq!(found.ips["192.0.2.1"], Resolution::NotFound);
        assert_eq!(found.os[&fleet[7].id].os_platform(), Some("Linux"));
        assert!(!found.os.contains_key(&"0".repeat(40)));
        assert!(found.fleet.is_none(), "filters do not see the whole tenant");
    }

    #[test]
    fn machine_ids_of_the_service_shape_are_kept_as_bytes_and_others_verbatim() {
        let id = "0123456789abcdefABCDEF0123456789abcdef01";
        let hex = MachineId::new(id.to_string());
        assert!(matches!(hex, MachineId::Hex(_)));
        assert_eq!(hex.to_string(), id.to_ascii_lowercase());
        assert!(hex.same(&MachineId::new(id.to_ascii_lowercase())));
        let odd = MachineId::new("Machine-7".to_string());
        assert_eq!((odd.to_string(), odd.lowercase()), ("Machine-7".into(), "machine-7".into()));
        assert!(odd.same(&MachineId::new("MACHINE-7".to_string())));
        assert!(!odd.same(&hex));
        // 40 characters that are not all hex digits stay text.
        let near = format!("{}g", &id[..39]);
        assert_eq!(MachineId::new(near.clone()), MachineId::Text(near.into()));
        // What one found name costs, whatever the fleet: see the module docs.
        assert!(std::mem::size_of::<MachineRef>() <= 48);
        assert!(std::mem::size_of::<Resolution>() <= 48);
    }

    #[test]
    fn filters_batch_keys_by_count_and_length_and_escape_quotes() {
        let lookups = Lookups {
            names: (0..45).map(|i| format!("h{i}.x")).chain(["o'brien".to_string()]).collect(),
            ..Lookups::default()
        };
        let f = filters(&lookups, &HashSet::new());
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].matches(" or ").count() + 1, MAX_KEYS_PER_FILTER);
        assert!(
            f[2].contains(
                "computerDnsName eq 'o''brien' or startswith(computerDnsName,'o''brien.')"
            )
        );
        for filter in &f {
            parse_filter(filter, &MACHINES).unwrap();
        }
        let long = Lookups {
            names: (0..20).map(|i| format!("{i}{}", "a".repeat(200))).collect(),
            ..Lookups::default()
        };
        let f = filters(&long, &HashSet::new());
        assert!(
            f.len() > 1 && f.iter().all(|f| f.len() <= MAX_FILTER_CHARS),
            "{:?}",
            f.iter().map(String::len).collect::<Vec<_>>()
        );
        let ids = Lookups { os_ids: set(&["a", "b"]), ..Lookups::default() };
        assert_eq!(filters(&ids, &["a".to_string()].into_iter().collect()), ["id eq 'b'"]);
        assert!(filters(&Lookups::default(), &HashSet::new()).is_empty());
    }

    #[tokio::test]
    async fn a_tenant_without_machines_answers_404_and_nothing_is_found() {
        let mut tenant = Tenant::new(Vec::new());
        tenant.machines_status = Some(404);
        let c = ctx(tenant);
        let got = resolve_names(&c, &set(&["a", "b"]), false).await.unwrap();
        assert_eq!(got["a"], Resolution::NotFound);
        let mut tenant = Tenant::new(Vec::new());
        tenant.machines_status = Some(403);
        let c = ctx(tenant);
        let err = resolve_names(&c, &set(&["a"]), false).await.unwrap_err();
        assert_eq!(err.http_status(), Some(403));
    }

    fn action(id: &str, kind: &str, status: &str, machine: &str) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "status": status, "machineId": machine,
            "creationDateTimeUtc": "2025-06-01T08:00:00.0000000Z"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn the_pre_flight_keeps_open_actions_of_the_asked_types_newest_first() {
        let mut tenant = Tenant::new(Vec::new());
        tenant.actions = vec![
            action("new", "Isolate", "Pending", "AAA"),
            action("old", "Isolate", "InProgress", "aaa"),
            action("done", "Isolate", "Succeeded", "bbb"),
            action("off", "Offboard", "Pending", "ccc"),
            action("scan", "RunAntiVirusScan", "Pending", "ddd"),
        ];
        let c = ctx(tenant);
        let asked = [ActionKind::Isolate, ActionKind::Offboard].into_iter().collect();
        let open = pending_actions(&c, &asked).await.unwrap();
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[&("aaa".to_string(), ActionKind::Isolate)].id, "new");
        assert_eq!(open[&("ccc".to_string(), ActionKind::Offboard)].status, "Pending");
        let calls = c.transport.calls("GET machineactions");
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].filter.as_deref(),
            Some(
                "(status eq 'Pending' or status eq 'InProgress') and (type eq 'Isolate' or type eq 'Offboard')"
            )
        );
        assert!(pending_actions(&c, &BTreeSet::new()).await.unwrap().is_empty());
        assert_eq!(c.transport.calls("GET machineactions").len(), 1, "nothing asked, no call");
    }

    fn plan(target: Target, action: ActionKind) -> RowPlan {
        RowPlan::sample(4, target, action)
    }

    #[tokio::test]
    async fn rows_are_settled_from_what_was_learnt() {
        let fleet = generate(1000, 11, 0.0);
        let twin = host_name(twin_of(1000, 0));
        let (linux, windows) = (&fleet[7], &fleet[1]);
        let mut tenant = Tenant::new(fleet.clone());
        tenant.actions = vec![action("act-1", "Isolate", "Pending", &windows.id)];
        let c = ctx(tenant);
        let rows = [
            plan(Target::Name("HOST-00001".into()), ActionKind::Isolate),
            plan(Target::Name(twin.clone()), ActionKind::Isolate),
            plan(Target::Name("ghost".into()), ActionKind::Isolate),
            plan(Target::Id(linux.id.clone()), ActionKind::Offboard),
            plan(
                Target::Name(linux.computer_dns_name.clone().unwrap()),
                ActionKind::StopAndQuarantineFile,
            ),
            plan(Target::Id("f".repeat(40)), ActionKind::Offboard),
            plan(Target::Id(windows.id.clone()), ActionKind::Unisolate),
            plan(Target::Ip("192.0.2.1".into()), ActionKind::Isolate),
        ];
        let mut lookups = Lookups::default();
        rows.iter().for_each(|r| lookups.add(r));
        let prepared = prepare(&c, &lookups, false).await;
        let outcome = |p: &RowPlan| match prepared.target(p) {
            Err(row) => *row,
            Ok((id, m)) => prepared
                .check(p, &id, m)
                .unwrap_or(ResultRow { machine_id: id, ..ResultRow::default() }),
        };
        let r = outcome(&rows[0]);
        assert_eq!(
            (r.status, r.machine_id.as_str(), r.action_id.as_str()),
            (Some(Status::AlreadyPending), windows.id.as_str(), "act-1")
        );
        assert_eq!(r.action_status, "Pending");
        let r = outcome(&rows[1]);
        assert_eq!(r.status, Some(Status::Ambiguous));
        assert!(r.machine_id.is_empty());
        assert!(
            r.error_message.starts_with(&format!("2 machines match the device name {twin:?}: ")),
            "{}",
            r.error_message
        );
        assert!(
            r.error_message.contains("lastSeen")
                && r.error_message.contains("Inactive")
                && r.error_message.contains("--pick latest")
        );
        let r = outcome(&rows[2]);
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::NotFound), "NotFound"));
        assert!(r.error_message.contains("no machine named \"ghost\""), "{}", r.error_message);
        for row in &rows[3..5] {
            let r = outcome(row);
            assert_eq!(
                (r.status, r.error_code.as_str()),
                (Some(Status::Rejected), "OsPlatformNotSupported")
            );
            assert_eq!(r.machine_id, linux.id);
            assert!(
                r.error_message.contains("not supported on Linux devices"),
                "{}",
                r.error_message
            );
        }
        let r = outcome(&rows[5]);
        assert_eq!(
            (r.status, r.machine_id.as_str()),
            (Some(Status::NotFound), "f".repeat(40).as_str())
        );
        let r = outcome(&rows[6]);
        assert_eq!(
            (r.status, r.machine_id.as_str()),
            (None, windows.id.as_str()),
            "unisolate is not blocked by an isolate"
        );
        let r = outcome(&rows[7]);
        assert!(r.error_message.contains("lastIpAddress"), "{}", r.error_message);
        // Seven keys: one machine filter; one pre-flight call.
        assert_eq!(c.transport.calls("GET machines").len(), 1);
        assert_eq!(c.transport.calls("GET machineactions").len(), 1);
        // With --pick latest the twin resolves to its newest record.
        let prepared = prepare(&c, &lookups, true).await;
        let (id, _) = prepared.target(&rows[1]).unwrap();
        assert_eq!(id, fleet[twin_of(1000, 0)].id);
    }

    #[tokio::test]
    async fn after_a_full_listing_unknown_ids_are_not_found_and_failures_settle_rows_as_errors() {
        let fleet = generate(1000, 13, 0.0);
        let c = ctx(Tenant::new(fleet.clone()));
        let names: Vec<RowPlan> =
            (0..50).map(|i| plan(Target::Name(host_name(i)), ActionKind::Isolate)).collect();
        let mut lookups = Lookups::default();
        names.iter().for_each(|r| lookups.add(r));
        let prepared = prepare(&c, &lookups, false).await;
        assert!(prepared.found.fleet.is_some(), "50 names: the listing is cheaper");
        let unknown = plan(Target::Id("e".repeat(40)), ActionKind::Isolate);
        let r = prepared.check(&unknown, &"e".repeat(40), None).unwrap();
        assert_eq!(r.status, Some(Status::NotFound));
        let known = plan(Target::Id(fleet[3].id.clone()), ActionKind::Isolate);
        assert_eq!(prepared.check(&known, &fleet[3].id, None), None);

        let mut tenant = Tenant::new(Vec::new());
        tenant.machines_status = Some(403);
        let c = ctx(tenant);
        let prepared = prepare(&c, &lookups, false).await;
        let r = prepared.target(&names[0]).unwrap_err();
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::Error), "Forbidden"));
        assert!(
            r.error_message.contains("looking the device name up failed"),
            "{}",
            r.error_message
        );
        // Without the look-up nothing is known of ids: they are sent.
        let offboard = plan(Target::Id(fleet[7].id.clone()), ActionKind::Offboard);
        assert_eq!(prepared.check(&offboard, &fleet[7].id, None), None);
    }

    #[test]
    fn the_estimate_is_the_longest_action_schedule() {
        let pacer =
            Pacer::new(&[Limit::new(20, Duration::from_secs(1)).unwrap()], Some(Duration::ZERO));
        assert_eq!(estimate(&pacer, &[100, 5]), Duration::from_secs(4));
        assert_eq!(estimate(&pacer, &[20, 20]), Duration::ZERO);
        assert_eq!(estimate(&pacer, &[]), Duration::ZERO);
    }
}
