//! Device look-ups: device names, Entra ID device ids and IP addresses
//! become machine ids, and the machines some rows name by id are looked up
//! by it: their `osPlatform` for Windows-only rows (offboard,
//! stop-and-quarantine), their `computerDnsName` for rows that give a
//! device name beside the id, their existence in a dry run. Every machine
//! matched keeps its `computerDnsName` (the results' `device_name`), but
//! one matched by its exact name: that is the key already.
//! One concern, one file: the cost rule, the paging and the compact answers
//! live together because the answers are filled in place as pages arrive.
//!
//! **The cost rule** ([`look_up`]): two ways, whichever takes fewer calls:
//! the full paged listing (`GET machines`, 10,000 machines a call), or
//! `$filter`s that OR up to [`MAX_KEYS_PER_FILTER`] keys a call. One batch
//! of keys is one filter call; with more, the listing is tried first: its
//! first page tells whether the fleet fits in one call, and the listing goes
//! on only while it has cost fewer calls than the filters would. Every call
//! goes through [`read`] (pacing, 429, retries).
//!
//! **Matching**: device names compare case-insensitively with
//! `computerDnsName` (names are lowercased before filtering: the API
//! compares case-sensitively and keeps its names lowercase). A short name
//! (no dot) matches a bare name or the first label of an FQDN; an FQDN
//! matches only exactly. Several distinct machine ids for one key make it
//! [`Resolution::Ambiguous`] (re-imaged devices keep their name under a new
//! id), unless `--pick latest` takes the most recently seen. An IP address
//! matches `lastIpAddress`, the address a device last reported: a match is
//! only as fresh as that report.
//!
//! **Memory** is bounded by the distinct keys and machines, never by rows:
//! the listing is read page by page into [`MachineSummary`]s (the seven keys
//! used, nothing else), matched, and only a [`MachineRef`] of each match is
//! kept (its id as 20 bytes, `lastSeen` read, and `osPlatform` and
//! `healthStatus` shared between machines), plus one hash per machine of
//! the tenant, to settle unknown ids `not_found`. The answers live in one
//! sorted vector per kind of key ([`ByKey`]), allocated once from the
//! survey's keys and filled in place as pages arrive: there is no second
//! map of candidates to convert at the end, so the largest structure exists
//! once. 64 bytes per key looked up plus the key's text, and one listing
//! page in flight; and, per machine matched other than by its exact name,
//! its `computerDnsName` by id (about 60 bytes and the name's text), each
//! results row's `device_name`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::lookups::Lookups;
use crate::api::client::CallError;
use crate::api::model::{MachineSummary, ODataList};
use crate::api::odata::{ListQuery, odata_string};
use crate::api::route::Api;
use crate::api::time::parse_utc;
use crate::run::call::{Ctx, read};
use crate::run::submit::{PAGE, next_skip};
use crate::run::transport::Transport;

/// Keys OR'ed into one `$filter` at most.
pub(super) const MAX_KEYS_PER_FILTER: usize = 20;

/// Characters of one `$filter` at most (before percent-encoding), so the
/// URL stays well inside what gateways accept.
pub(super) const MAX_FILTER_CHARS: usize = 1_800;

/// What a look-up keeps of a machine it matched: what a row needs to act
/// on it and to explain a choice between twins, in 48 bytes (one is kept
/// per name found, so 100,000 names keep 100,000 of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MachineRef {
    /// The machine id: what the action is sent to.
    pub(crate) id: MachineId,
    /// `lastSeen`, read: orders twins (most recently seen first) and is
    /// shown beside each. `None` when absent or unreadable, which sorts
    /// as never seen.
    pub(crate) last_seen: Option<SystemTime>,
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
    pub(crate) fn os_platform(&self) -> Option<&str> {
        self.traits.os_platform.as_deref()
    }

    /// `healthStatus`: `Active`, `Inactive`, ...
    pub(crate) fn health_status(&self) -> Option<&str> {
        self.traits.health_status.as_deref()
    }

    /// True when the API refuses Windows-only actions on this device.
    pub(crate) fn is_linux_or_macos(&self) -> bool {
        let os = self.os_platform().unwrap_or("").to_ascii_lowercase();
        os.starts_with("linux") || os.starts_with("macos")
    }
}

/// A machine id. The service's ids are 40 hex digits: those are kept as
/// their 20 bytes (no allocation; case does not matter and they are shown
/// in lowercase, as the service writes them). Any other spelling is kept
/// verbatim, so an id of a shape the tool does not expect still works.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MachineId {
    /// 40 hex digits, as bytes.
    Hex([u8; 20]),
    /// Anything else, as received.
    Text(Box<str>),
}

impl MachineId {
    /// Reads an id as the API sent it.
    pub(crate) fn new(id: String) -> MachineId {
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
    pub(crate) fn same(&self, other: &MachineId) -> bool {
        match (self, other) {
            (MachineId::Text(a), MachineId::Text(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    /// The id in lowercase, as rows and requests carry it.
    pub(crate) fn lowercase(&self) -> String {
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
pub(crate) enum Resolution {
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
pub(crate) struct ByKey(Vec<(Box<str>, Resolution)>);

impl ByKey {
    /// Every key of `keys`, not found yet.
    fn new(keys: &BTreeSet<String>) -> ByKey {
        // A BTreeSet iterates in order: the vector is sorted as built.
        ByKey(keys.iter().map(|k| (k.as_str().into(), Resolution::NotFound)).collect())
    }

    /// What `key` resolved to, if it was looked up.
    pub(crate) fn get(&self, key: &str) -> Option<&Resolution> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &self.0[i].1)
    }

    /// The entry of `key`, when it is one of the keys looked up.
    fn get_mut(&mut self, key: &str) -> Option<&mut Resolution> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &mut self.0[i].1)
    }

    /// Keys looked up.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// What every key resolved to, in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Resolution> {
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

/// The outcome of [`look_up`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Found {
    /// Per device name (lowercased), what it resolved to.
    pub(crate) names: ByKey,
    /// Per Entra ID device id (lowercased), what it resolved to.
    pub(crate) aad_device_ids: ByKey,
    /// Per IP address, what it resolved to.
    pub(crate) ips: ByKey,
    /// The machines of [`Lookups::os_ids`] that exist, by id: an id looked
    /// up and absent here is not in the tenant.
    pub(crate) os: HashMap<String, MachineRef>,
    /// The `computerDnsName` of every machine matched (by id, name, Entra
    /// id or address) that has one, but those matched by a name key spelled
    /// exactly like it (the key is the name then): what a device name given
    /// beside the id must match, and each row's `device_name` in the
    /// results. Kept by the 20 bytes of the id: about 60 bytes and the
    /// name's text per machine.
    pub(crate) dns_names: HashMap<MachineId, Box<str>>,
    /// Hashes ([`id_hash`]) of every machine id of the tenant, when the full
    /// listing was read; `None` after filters.
    pub(crate) fleet: Option<HashSet<u64>>,
    /// With a protected-devices policy, the machines it protects among
    /// those looked up (every machine of the tenant when the listing was
    /// read for the ids), by lowercase id, with why: only the protected
    /// ones are kept, whatever the fleet's size.
    pub(crate) protected: HashMap<String, String>,
    /// `GET machines` calls made (pages included, retries not).
    pub(crate) calls: u64,
}

impl Found {
    /// The `computerDnsName` of the machine `id`, when a look-up matched it.
    pub(crate) fn dns_name(&self, id: &str) -> Option<&str> {
        // Asked once a row: a run that looked nothing up allocates nothing.
        if self.dns_names.is_empty() {
            return None;
        }
        // Ids other than 40 hex digits are kept verbatim in lowercase.
        self.dns_names.get(&MachineId::new(id.to_ascii_lowercase())).map(|n| &**n)
    }
}

/// Resolves device names (lowercased in the answer's keys) to machines, by
/// whichever of the listing and batched filters takes fewer calls.
#[cfg(test)]
async fn resolve_names<T: Transport>(
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
pub(super) async fn look_up<T: Transport>(
    ctx: &Ctx<T>,
    lookups: &Lookups,
    pick_latest: bool,
) -> Result<Found, CallError> {
    let no_ids = HashSet::new();
    let batches = filter_batches(lookups, &no_ids).count() as u64;
    let mut calls = 0u64;
    let mut matches = Matches::new(lookups);
    if batches > 1 || lookups.list_fleet {
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
            if calls >= batches && !lookups.list_fleet {
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
fn filters(lookups: &Lookups, known: &HashSet<String>) -> Vec<String> {
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
pub(super) fn id_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

/// True when the device name `name` designates a machine whose
/// `computerDnsName` is `dns`, by the rule names are looked up with: case
/// ignored, a short name matches a bare name or the first label of an FQDN,
/// an FQDN only exactly.
pub(super) fn name_matches(name: &str, dns: &str) -> bool {
    let (name, dns) = (name.trim().to_lowercase(), dns.to_lowercase());
    name == dns
        || (!name.contains('.') && dns.split_once('.').is_some_and(|(first, _)| first == name))
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
    dns_names: HashMap<MachineId, Box<str>>,
    fleet: HashSet<u64>,
    /// One copy of each distinct pair of `osPlatform` and `healthStatus`.
    shared: HashSet<Arc<Traits>>,
    /// The machines the policy protects, by lowercase id, with why.
    protected: HashMap<String, String>,
}

impl Matches {
    /// Nothing matched yet: every key of `lookups` not found.
    fn new(lookups: &Lookups) -> Matches {
        Matches {
            names: ByKey::new(&lookups.names),
            aad_device_ids: ByKey::new(&lookups.aad_device_ids),
            ips: ByKey::new(&lookups.ips),
            os: HashMap::new(),
            dns_names: HashMap::new(),
            fleet: HashSet::new(),
            shared: HashSet::new(),
            protected: HashMap::new(),
        }
    }

    /// Forgets what the names, Entra ids and addresses matched (when a
    /// listing stops part-way and filters ask for them again); machines
    /// already found by id stay known, ids being unique.
    fn forget_keys(&mut self, lookups: &Lookups) {
        let os = std::mem::take(&mut self.os);
        let dns_names = std::mem::take(&mut self.dns_names);
        let shared = std::mem::take(&mut self.shared);
        let protected = std::mem::take(&mut self.protected);
        *self = Matches { os, dns_names, shared, protected, ..Matches::new(lookups) };
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
        let matched = name_key.is_some()
            || short_key.is_some()
            || aad_key.is_some()
            || ip_key.is_some()
            || os;
        // Past the cap of ids looked up by filter, the listing answers for
        // the ids not collected: every machine is matched against the policy.
        if let Some(policy) = &lookups.protect
            && (matched || (listing && lookups.list_fleet))
        {
            let facts = crate::run::protect::Facts {
                id: &id,
                dns_name: m.computer_dns_name.as_deref(),
                tags: m.machine_tags.as_deref().unwrap_or_default(),
                group: m.rbac_group_name.as_deref(),
                os_platform: m.os_platform.as_deref(),
                device_value: m.device_value.as_deref(),
            };
            if let Some(why) = policy.protects(&facts) {
                self.protected.insert(id.clone(), why);
            }
        }
        if !matched {
            return;
        }
        // A name that matched exactly is the machine's name already (keys
        // are lowercase): only other spellings are kept, so a names run of
        // FQDNs keeps nothing more.
        if let Some(dns) = m.computer_dns_name.as_deref().filter(|d| os || name_key != Some(*d)) {
            self.dns_names.insert(MachineId::new(id.clone()), dns.into());
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
            dns_names: self.dns_names,
            fleet: complete.then_some(self.fleet),
            protected: self.protected,
            calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::action::ActionKind;
    use crate::api::model::Machine;
    use crate::run::resolve::test_support::{Tenant, ctx, found_id, set};
    use crate::sim::fleet::{generate, host_name, twin_count, twin_of};
    use crate::sim::odata::{MACHINES, parse_filter};

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
            ..Lookups::default()
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
        // Every machine matched other than by its exact name keeps its name,
        // the results' device_name: by short name, Entra id, IP or id.
        let name = |i: usize| fleet[i].computer_dns_name.as_deref();
        for i in [10, 20, 7] {
            assert_eq!(found.dns_name(&fleet[i].id), name(i), "machine {i}");
        }
        assert_eq!(found.dns_name(&with_aad[0].id), with_aad[0].computer_dns_name.as_deref());
        assert_eq!(found.dns_name(&fleet[7].id.to_uppercase()), name(7), "ids in any case");
        assert_eq!(found.dns_name(&fleet[30].id), None, "not matched");
        // A machine matched by its exact name keeps no second copy of it.
        let exact = Lookups { names: set(&["host-00011.contoso.test"]), ..Lookups::default() };
        let found = look_up(&c, &exact, false).await.unwrap();
        assert_eq!(found_id(&found.names["host-00011.contoso.test"]), fleet[11].id);
        assert_eq!(found.dns_name(&fleet[11].id), None);
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
}
