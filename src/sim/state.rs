//! Everything the simulator remembers, behind one lock: the fleet with its
//! look-up indexes, the actions, issued tokens, quota counters, random
//! generators and counters. Requests take the lock once, briefly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::config::{ApiStats, FleetSpec, KNOWN_ROLES, SimConfig, Stats};
use super::fleet;
use super::lifecycle::{ActionRecord, Clock, Timing};
use super::quota::{Principal, Quotas};
use crate::api::action::ActionKind;
use crate::api::model::Machine;
use crate::api::route::Api;

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

/// What the simulator knows about an access token it issued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenInfo {
    /// The (app, tenant) pair it was issued to: the quota key.
    pub(crate) principal: Principal,
    /// Granted permissions, one bit per [`KNOWN_ROLES`] entry.
    pub(crate) roles: u16,
    /// When it stops being accepted.
    pub(crate) expires: Instant,
}

/// Identity of a (machine, type, parameters) submission, for `duplicate_submissions`.
pub(crate) type SubmissionKey = (usize, ActionKind, Option<String>);

/// The simulator's whole state.
#[derive(Debug)]
pub(crate) struct State {
    /// The configuration (its fleet replaced by the machine count once built).
    pub(crate) cfg: SimConfig,
    /// Start time, for timestamps and quota counters.
    pub(crate) clock: Clock,
    /// Settle time and action timeout.
    pub(crate) timing: Timing,
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
    /// Issued access tokens.
    pub(crate) tokens: HashMap<String, TokenInfo>,
    /// (client id, tenant) → principal number.
    principals: HashMap<(String, String), Principal>,
    /// Quota counters.
    pub(crate) quotas: Quotas,
    /// Global counters (`by_api` is filled from `api_stats` on snapshot).
    pub(crate) stats: Stats,
    /// Counters per API.
    pub(crate) api_stats: HashMap<Api, ApiStats>,
    /// Draws which actions fail.
    pub(crate) fail_rng: fastrand::Rng,
    /// Draws injected faults.
    pub(crate) fault_rng: fastrand::Rng,
    /// Draws CPU-quota refusals.
    pub(crate) cpu_rng: fastrand::Rng,
    /// The configured roles, one bit per [`KNOWN_ROLES`] entry.
    pub(crate) roles_mask: u16,
    /// Client ids (lowercase) whose credentials were revoked (`/_sim`):
    /// their tokens are refused and no new one is issued.
    pub(crate) revoked: HashSet<String>,
    /// The contents of the Azure Arc key files handed out so far
    /// (`--arc-key-dir`): a request that sends one of them is let in.
    pub(crate) arc_keys: HashSet<String>,
    /// Investigations started through `startInvestigation`: numbers their ids.
    pub(crate) investigations: u64,
    /// `(client id, jti)` of every client assertion accepted, with its `exp`:
    /// a replayed assertion is refused until it would have expired anyway.
    pub(crate) used_assertions: HashMap<(String, String), i64>,
}

/// Bit of a role in a roles mask (0 for an unknown role).
pub(crate) fn role_bit(role: &str) -> u16 {
    KNOWN_ROLES.iter().position(|r| *r == role).map_or(0, |i| 1 << i)
}

impl State {
    /// Builds the fleet and empty counters for `cfg`, starting the clock at `clock`.
    pub(crate) fn new(mut cfg: SimConfig, clock: Clock) -> State {
        let machines: Vec<MachineEntry> =
            match std::mem::replace(&mut cfg.fleet, FleetSpec::Machines(Vec::new())) {
                FleetSpec::Generate { machines } => {
                    let fleet = fleet::generate(machines, cfg.seed, cfg.offline_rate);
                    let ips = fleet::generated_histories(&fleet, cfg.seed, clock.wall_origin);
                    fleet
                        .into_iter()
                        .zip(ips)
                        .enumerate()
                        .map(|(i, (m, ips))| {
                            let files = fleet::generated_files(i);
                            MachineEntry::new(m, fleet::Sidecar { ips, files })
                        })
                        .collect()
                }
                // Fleet files were checked on loading; a fleet built in code
                // with a malformed simulator-only key serves without it.
                FleetSpec::Machines(ms) => ms
                    .into_iter()
                    .map(|mut m| {
                        let sidecar = fleet::take_sidecar(&mut m).unwrap_or_default();
                        MachineEntry::new(m, sidecar)
                    })
                    .collect(),
            };
        cfg.fleet = FleetSpec::Generate { machines: machines.len() };
        let mut by_id = HashMap::with_capacity(machines.len());
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(machines.len());
        for (i, m) in machines.iter().enumerate() {
            by_id.insert(m.machine.id.to_ascii_lowercase(), i);
            if let Some(name) = &m.machine.computer_dns_name {
                by_name.entry(name.to_ascii_lowercase()).or_default().push(i);
            }
        }
        let roles_mask = cfg.roles.iter().fold(0, |m, r| m | role_bit(r));
        let seed = cfg.seed;
        State {
            timing: Timing { settle: cfg.settle, action_timeout: cfg.action_timeout },
            quotas: Quotas::new(cfg.window, &cfg.limits, clock.origin, cfg.foreign_load),
            clock,
            machines,
            by_id,
            by_name,
            actions: Vec::new(),
            action_by_id: HashMap::new(),
            latest: HashMap::new(),
            accepted: HashSet::new(),
            tokens: HashMap::new(),
            revoked: HashSet::new(),
            arc_keys: HashSet::new(),
            investigations: 0,
            used_assertions: HashMap::new(),
            principals: HashMap::new(),
            stats: Stats::default(),
            api_stats: Api::all().map(|a| (a, ApiStats::default())).collect(),
            fail_rng: fastrand::Rng::with_seed(seed ^ 0x5eed_fa11),
            fault_rng: fastrand::Rng::with_seed(seed ^ 0x5eed_fa17),
            cpu_rng: fastrand::Rng::with_seed(seed ^ 0x5eed_c0de),
            roles_mask,
            cfg,
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.by_api = self
            .api_stats
            .iter()
            .map(|(a, st)| (a.name().to_string(), st.clone()))
            .collect::<BTreeMap<_, _>>();
        s
    }

    /// The machines as they stand now.
    pub(crate) fn machines(&self) -> Vec<Machine> {
        self.machines.iter().map(|m| m.machine.clone()).collect()
    }

    /// The counters of `api`.
    pub(crate) fn api(&mut self, api: Api) -> &mut ApiStats {
        self.api_stats.entry(api).or_default()
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

    /// Renames machine `i` (`computerDnsName`), as a re-named or re-imaged
    /// device shows up in the tenant: look-ups by name find it under the
    /// new name only. Lowercased, as the service keeps its names.
    pub(crate) fn rename_machine(&mut self, i: usize, name: String) {
        let name = name.to_lowercase();
        if let Some(old) = self.machines[i].machine.computer_dns_name.take()
            && let Some(list) = self.by_name.get_mut(&old.to_ascii_lowercase())
        {
            list.retain(|&j| j != i);
        }
        self.by_name.entry(name.to_ascii_lowercase()).or_default().push(i);
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

    /// The principal number of (client id, tenant), allocating one on first use.
    pub(crate) fn principal(&mut self, client_id: &str, tenant: &str) -> Principal {
        let next = self.principals.len();
        *self.principals.entry((client_id.to_string(), tenant.to_ascii_lowercase())).or_insert(next)
    }

    /// Revokes a client's credentials, as deleting its secret or disabling
    /// the app does: every token issued to it stops working at once.
    pub(crate) fn revoke_client(&mut self, client_id: &str) {
        let client = client_id.to_ascii_lowercase();
        let principals: HashSet<Principal> = self
            .principals
            .iter()
            .filter(|((c, _), _)| c.eq_ignore_ascii_case(&client))
            .map(|(_, p)| *p)
            .collect();
        self.tokens.retain(|_, t| !principals.contains(&t.principal));
        self.revoked.insert(client);
    }

    /// Gives a revoked client working credentials again (new tokens only).
    pub(crate) fn restore_client(&mut self, client_id: &str) {
        self.revoked.remove(&client_id.to_ascii_lowercase());
    }

    /// How many actions each (machine id, action type) has had accepted.
    pub(crate) fn action_counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for a in &self.actions {
            *counts
                .entry((a.machine_id.to_ascii_lowercase(), a.kind.type_name().to_string()))
                .or_default() += 1;
        }
        counts
    }

    /// Marks a machine online or offline at `now`. Coming back online starts
    /// the settle clock of its actions that are still waiting (not timed out,
    /// not cancelled).
    pub(crate) fn set_online(&mut self, idx: usize, online: bool, now: Instant) {
        let offset = self.clock.offset(now);
        let entry = &mut self.machines[idx];
        entry.machine.health_status = Some(if online { "Active" } else { "Inactive" }.to_string());
        entry.rerender();
        if online {
            let timeout = self.timing.action_timeout;
            for a in self.actions.iter_mut().filter(|a| a.machine == idx) {
                if a.settle_from.is_none() && a.cancel.is_none() && offset < a.created + timeout {
                    a.settle_from = Some(offset);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_ups_and_twins() {
        let cfg =
            SimConfig { fleet: FleetSpec::Generate { machines: 100 }, ..SimConfig::default() };
        let s = State::new(cfg, Clock::start());
        assert_eq!(s.machines.len(), 100);
        let twin_idx = 100 - fleet::twin_count(100);
        let primary = fleet::twin_of(100, 0);
        let name = fleet::host_name(primary);
        assert_eq!(s.machine_by_id_or_name(&name), Some(primary));
        assert_eq!(s.machine_by_id_or_name(&name.to_uppercase()), Some(primary));
        let twin_id = s.machines[twin_idx].machine.id.clone();
        assert_eq!(s.machine_by_id_or_name(&twin_id), Some(twin_idx));
        assert_eq!(s.machine_by_id(&twin_id.to_uppercase()), Some(twin_idx));
        assert_eq!(s.machine_by_id(&name), None);
        assert_eq!(s.stats().by_api.len(), Api::all().count());
    }

    #[test]
    fn roles_mask() {
        assert_eq!(role_bit("Machine.Isolate"), 1);
        assert_eq!(role_bit("Machine.ReadWrite.All"), 1 << 8);
        assert_eq!(role_bit("Nope"), 0);
    }
}
