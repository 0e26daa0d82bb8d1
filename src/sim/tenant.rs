//! The tenants a simulator serves and what each holds on its own: its
//! machines with their look-up indexes, its actions, its investigations
//! and its counters. One simulator serves one tenant (any name at the
//! token endpoint, as before), or, with `--tenants N`, the tenants
//! `tenant-01` … `tenant-NN`, each with its own fleet drawn from a seed of
//! its own ([`fleet_seed`]), its own id ([`tenant_id`]) and its own
//! data, as a managed security provider's customers are separate
//! directories with separate Defender for Endpoint instances.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::config::{ApiStats, Stats};
use super::fleet;
use super::lifecycle::ActionRecord;
use crate::api::action::ActionKind;
use crate::api::model::Machine;
use crate::api::route::Api;

/// The name of the tenant numbered `n` (from 1): `tenant-01`.
pub(crate) fn tenant_name(n: usize) -> String {
    format!("tenant-{n:02}")
}

/// FNV-1a (64 bits) of a name, lowercase: where a tenant's seed and id start.
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: every bit of the output depends on every bit of
/// the input, so names a character apart give unrelated values.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The id of the tenant named `name` (`--tenants`): a GUID made from the
/// name alone (whatever `--seed`), mixed so that `tenant-01` and
/// `tenant-02` have ids that look nothing alike, as real tenant ids do.
pub(crate) fn tenant_id(name: &str) -> String {
    let a = mix(name_hash(name) ^ 0x7e4a_471d);
    let b = mix(a ^ 0x5eed_7e4a);
    let x = format!("{a:016x}{b:016x}");
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// The seed of a tenant's fleet: the simulator's seed mixed with the
/// tenant's name (FNV-1a of the name, then SplitMix64's finaliser), so each
/// tenant draws other machine ids from the same `--seed`, and the same
/// `--seed` always gives each tenant the same fleet.
pub(crate) fn fleet_seed(base: u64, name: &str) -> u64 {
    mix(base ^ name_hash(name))
}

/// A GUID made from a name, the same for the same name: the tenant id of a
/// tenant named by domain in a one-tenant simulator, the object id of a client.
pub(crate) fn guid_of(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    if is_guid(&lower) {
        return lower;
    }
    // FNV-1a, 128 bits: stable across runs and platforms.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in lower.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let x = format!("{h:032x}");
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Whether `s` is a GUID in the 8-4-4-4-12 form.
pub(crate) fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One machine of the fleet, with what replies and look-ups need ready.
#[derive(Debug, Clone)]
pub(crate) struct MachineEntry {
    /// The entity.
    pub(crate) machine: Machine,
    /// The entity as JSON, keys in the real order, rendered once.
    pub(crate) json: Arc<str>,
    /// Whether actions on it stay Pending (see [`fleet::is_offline`]).
    pub(crate) offline: bool,
    /// `lastSeen`, parsed, to choose between machines sharing a name.
    pub(crate) last_seen: Option<SystemTime>,
    /// Its IP history and the files it has seen: what `findbyip` and
    /// `files/{sha1}/machines` look at, never part of the entity.
    pub(crate) sidecar: fleet::Sidecar,
}

impl MachineEntry {
    /// Wraps a machine, rendering its JSON.
    pub(crate) fn new(machine: Machine, sidecar: fleet::Sidecar) -> MachineEntry {
        let json = serde_json::Value::Object(fleet::render(&machine)).to_string();
        MachineEntry {
            offline: fleet::is_offline(&machine),
            last_seen: fleet::last_seen(&machine),
            json: json.into(),
            machine,
            sidecar,
        }
    }

    /// Renders the entity again after a change to `machine`.
    pub(crate) fn rerender(&mut self) {
        let sidecar = std::mem::take(&mut self.sidecar);
        *self = MachineEntry::new(self.machine.clone(), sidecar);
    }

    /// The machine's tags (`machineTags`), in order.
    pub(crate) fn tags(&self) -> Vec<String> {
        let tags = self.machine.extra.get("machineTags").and_then(serde_json::Value::as_array);
        tags.into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect()
    }

    /// Replaces the machine's tags and renders it again.
    pub(crate) fn set_tags(&mut self, tags: Vec<String>) {
        self.machine.extra.insert("machineTags".into(), serde_json::json!(tags));
        self.rerender();
    }
}

/// Identity of a (machine, type, parameters) submission, for `duplicate_submissions`.
pub(crate) type SubmissionKey = (usize, ActionKind, Option<String>);

/// One tenant's data: what a token of this tenant sees and changes.
#[derive(Debug)]
pub(crate) struct Tenant {
    /// Its name (`tenant-01`; in a one-tenant simulator, empty: that one
    /// answers to any tenant name).
    pub(crate) name: String,
    /// Its id, the `tid` of its tokens: [`tenant_id`] of its name (in a
    /// one-tenant simulator, empty: the `tid` is [`guid_of`] the name the
    /// login was asked with).
    pub(crate) id: String,
    /// The fleet, in seed (or file) order.
    pub(crate) machines: Vec<MachineEntry>,
    /// Lowercase machine id → index.
    by_id: HashMap<String, usize>,
    /// Lowercase computer name → indexes (several for re-imaged devices).
    by_name: HashMap<String, Vec<usize>>,
    /// Every accepted action, oldest first.
    pub(crate) actions: Vec<ActionRecord>,
    /// Action id → index in `actions`.
    action_by_id: HashMap<String, usize>,
    /// Newest action per (machine, type): the only one that can still be active.
    pub(crate) latest: HashMap<(usize, ActionKind), usize>,
    /// Every (machine, type, parameters) that had an action accepted.
    pub(crate) accepted: HashSet<SubmissionKey>,
    /// Investigations started through `startInvestigation`: numbers their ids.
    pub(crate) investigations: u64,
    /// The counters of the requests attributed to this tenant (`by_api`
    /// filled from `api_stats` on snapshot).
    pub(crate) stats: Stats,
    /// Its counters per API.
    pub(crate) api_stats: HashMap<Api, ApiStats>,
}

impl Tenant {
    /// A tenant named `name` serving `machines`, in this order.
    pub(crate) fn new(name: String, id: String, machines: Vec<MachineEntry>) -> Tenant {
        let mut by_id = HashMap::with_capacity(machines.len());
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(machines.len());
        for (i, m) in machines.iter().enumerate() {
            by_id.insert(m.machine.id.to_ascii_lowercase(), i);
            if let Some(name) = &m.machine.computer_dns_name {
                by_name.entry(name.to_ascii_lowercase()).or_default().push(i);
            }
        }
        Tenant {
            name,
            id,
            machines,
            by_id,
            by_name,
            actions: Vec::new(),
            action_by_id: HashMap::new(),
            latest: HashMap::new(),
            accepted: HashSet::new(),
            investigations: 0,
            stats: Stats::default(),
            api_stats: Api::all().map(|a| (a, ApiStats::default())).collect(),
        }
    }

    /// The generated fleet of `n` records from `seed` (see [`fleet`]), its
    /// IP histories relative to `start`.
    pub(crate) fn generated(
        n: usize,
        seed: u64,
        offline_rate: f64,
        start: SystemTime,
    ) -> Vec<MachineEntry> {
        let machines = fleet::generate(n, seed, offline_rate);
        let ips = fleet::generated_histories(&machines, seed, start);
        machines
            .into_iter()
            .zip(ips)
            .enumerate()
            .map(|(i, (m, ips))| {
                let files = fleet::generated_files(i);
                MachineEntry::new(m, fleet::Sidecar { ips, files })
            })
            .collect()
    }

    /// Whether `key` names this tenant: its name or its id, without regard
    /// to case, as Entra accepts a tenant id or a verified domain.
    pub(crate) fn answers_to(&self, key: &str) -> bool {
        let key = key.trim();
        self.name.eq_ignore_ascii_case(key) || self.id.eq_ignore_ascii_case(key)
    }

    /// A snapshot of its counters.
    pub(crate) fn stats(&self) -> Stats {
        snapshot(&self.stats, &self.api_stats)
    }

    /// The machines as they stand now.
    pub(crate) fn machines(&self) -> Vec<Machine> {
        self.machines.iter().map(|m| m.machine.clone()).collect()
    }

    /// A machine by id (case-insensitive), as action POSTs take it.
    pub(crate) fn machine_by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(&id.to_ascii_lowercase()).copied()
    }

    /// A machine by id or computer name (case-insensitive); several machines
    /// with that name → the one seen last.
    pub(crate) fn machine_by_id_or_name(&self, key: &str) -> Option<usize> {
        let key = key.to_ascii_lowercase();
        if let Some(&i) = self.by_id.get(&key) {
            return Some(i);
        }
        self.by_name.get(&key)?.iter().copied().max_by_key(|&i| (self.machines[i].last_seen, i))
    }

    /// Renames machine `i` (`computerDnsName`), as a renamed or re-imaged
    /// device shows up in the tenant: look-ups by name find it under the
    /// new name only. Lowercased, as the service keeps its names.
    pub(crate) fn rename_machine(&mut self, i: usize, name: String) {
        let name = name.to_lowercase();
        if let Some(old) = self.machines[i].machine.computer_dns_name.take()
            && let Some(list) = self.by_name.get_mut(&old.to_ascii_lowercase())
        {
            list.retain(|&j| j != i);
        }
        self.by_name.entry(name.clone()).or_default().push(i);
        self.machines[i].machine.computer_dns_name = Some(name);
        self.machines[i].rerender();
    }

    /// An action by id (case-insensitive).
    pub(crate) fn action_by_id(&self, id: &str) -> Option<usize> {
        self.action_by_id.get(&id.to_ascii_lowercase()).copied()
    }

    /// Stores a new action and indexes it.
    pub(crate) fn push_action(&mut self, record: ActionRecord) -> usize {
        let idx = self.actions.len();
        self.action_by_id.insert(record.id.clone(), idx);
        self.latest.insert((record.machine, record.kind), idx);
        self.actions.push(record);
        idx
    }

    /// How many actions each (machine id, action type) has had accepted.
    pub(crate) fn action_counts(&self, counts: &mut BTreeMap<(String, String), u64>) {
        for a in &self.actions {
            *counts
                .entry((a.machine_id.to_ascii_lowercase(), a.kind.type_name().to_string()))
                .or_default() += 1;
        }
    }
}

/// Counters as `/_sim/stats` shows them: `stats` with the per-API counters
/// keyed by the API's name, for the totals and for each tenant alike.
pub(crate) fn snapshot(stats: &Stats, per_api: &HashMap<Api, ApiStats>) -> Stats {
    let mut s = stats.clone();
    s.by_api = per_api
        .iter()
        .map(|(a, st)| (a.name().to_string(), st.clone()))
        .collect::<BTreeMap<_, _>>();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::MAX_TENANTS;

    #[test]
    fn tenant_names_keep_two_digits() {
        assert_eq!(tenant_name(1), "tenant-01");
        assert_eq!(tenant_name(12), "tenant-12");
        assert_eq!(tenant_name(MAX_TENANTS), "tenant-99");
        let names: Vec<String> = (1..=MAX_TENANTS).map(tenant_name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "names sort as they are numbered");
    }

    #[test]
    fn fleet_seeds_differ_per_tenant_and_repeat_per_seed() {
        let seeds: HashSet<u64> =
            (1..=MAX_TENANTS).map(|n| fleet_seed(1, &tenant_name(n))).collect();
        assert_eq!(seeds.len(), MAX_TENANTS, "every tenant has a seed of its own");
        assert_eq!(fleet_seed(7, "tenant-03"), fleet_seed(7, "tenant-03"));
        assert_eq!(fleet_seed(7, "tenant-03"), fleet_seed(7, "TENANT-03"));
        assert_ne!(fleet_seed(7, "tenant-03"), fleet_seed(8, "tenant-03"));
        assert_ne!(fleet_seed(7, "tenant-03"), 7);
        // Different seeds, different machine ids.
        let a = fleet::generate(20, fleet_seed(1, "tenant-01"), 0.0);
        let b = fleet::generate(20, fleet_seed(1, "tenant-02"), 0.0);
        let ids: HashSet<&str> = a.iter().chain(&b).map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), 40);
    }

    #[test]
    fn tenant_ids_are_guids_unlike_each_other() {
        let ids: Vec<String> = (1..=MAX_TENANTS).map(|n| tenant_id(&tenant_name(n))).collect();
        assert!(ids.iter().all(|id| is_guid(id)), "{ids:?}");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), MAX_TENANTS);
        // Neighbours share no leading group, as random GUIDs would not.
        assert!(ids.windows(2).all(|w| w[0][..8] != w[1][..8]), "{ids:?}");
        assert_eq!(tenant_id("tenant-01"), tenant_id("TENANT-01"));
        assert_eq!(guid_of(&tenant_id("tenant-01")), tenant_id("tenant-01"));
    }

    #[test]
    fn guids_of_names_are_stable_and_guids_stay_themselves() {
        let g = guid_of("contoso.onmicrosoft.com");
        assert!(is_guid(&g), "{g}");
        assert_eq!(g, guid_of("Contoso.onmicrosoft.com"));
        assert_ne!(g, guid_of("fabrikam.onmicrosoft.com"));
        let id = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        assert_eq!(guid_of(id), id.to_ascii_lowercase());
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
    }

    #[test]
    fn a_tenant_answers_to_its_name_and_its_id() {
        let name = tenant_name(2);
        let t = Tenant::new(name.clone(), tenant_id(&name), Vec::new());
        assert!(t.answers_to("tenant-02"));
        assert!(t.answers_to("TENANT-02"));
        assert!(t.answers_to(&tenant_id("tenant-02").to_uppercase()));
        assert!(!t.answers_to("tenant-2"));
        assert!(!t.answers_to(&tenant_id("tenant-03")));
    }
}
