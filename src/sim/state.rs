//! Everything the simulator remembers, behind one lock: the tenants (each
//! with its fleet, look-up indexes and actions, [`super::tenant`]), issued
//! tokens, quota counters, random generators and counters. Requests take
//! the lock once, briefly, and are served from the data of one tenant: the
//! tenant of the token URL at login, of the bearer token on the API, of
//! `?tenant=` on the `/_sim` hooks.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::time::Instant;

use super::config::{ApiStats, FleetSpec, KNOWN_ROLES, Service, SimConfig, Stats};
use super::fleet;
use super::lifecycle::{Clock, Timing};
use super::quota::{Principal, Quotas};
use super::tenant::{self, MachineEntry, Tenant, guid_of};
use crate::api::model::Machine;
use crate::api::route::Api;

/// What the simulator knows about an access token it issued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenInfo {
    /// The (app, tenant) pair it was issued to: the quota key.
    pub(crate) principal: Principal,
    /// The tenant (index into [`State::tenants`]) whose data it reaches.
    pub(crate) tenant: usize,
    /// Granted permissions, one bit per [`KNOWN_ROLES`] entry.
    pub(crate) roles: u16,
    /// When it stops being accepted.
    pub(crate) expires: Instant,
    /// The service it was issued for (its `aud`): the other refuses it.
    pub(crate) service: Service,
}

/// The simulator's whole state.
#[derive(Debug)]
pub(crate) struct State {
    /// The configuration (its fleet replaced by the machine count once built).
    pub(crate) cfg: SimConfig,
    /// Start time, for timestamps and quota counters.
    pub(crate) clock: Clock,
    /// Settle time and action timeout.
    pub(crate) timing: Timing,
    /// The tenants served: one answering to any name, or `tenant-01` … with
    /// `--tenants`.
    pub(crate) tenants: Vec<Tenant>,
    /// The tenant the request being handled is attributed to (set once per
    /// request, before anything is counted): its data is what the request
    /// sees, and its counters count it besides the totals. `None` for a
    /// request of no tenant, which reaches no tenant's data.
    pub(crate) serving: Option<usize>,
    /// Issued access tokens.
    pub(crate) tokens: HashMap<String, TokenInfo>,
    /// (client id, tenant id) → principal number.
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
    /// their tokens are refused and no new one is issued, in any tenant.
    pub(crate) revoked: HashSet<String>,
    /// (tenant, client id lowercase) of the clients whose consent a tenant
    /// withdrew (`/_sim/clients/{id}/revoke?tenant=`): that tenant refuses
    /// them as an app it does not know; the other tenants still serve them.
    pub(crate) withdrawn: HashSet<(usize, String)>,
    /// The contents of the Azure Arc key files handed out so far
    /// (`--arc-key-dir`): a request that sends one of them is let in.
    pub(crate) arc_keys: HashSet<String>,
    /// `(client id, jti)` of every client assertion accepted, with its `exp`:
    /// a replayed assertion is refused until it would have expired anyway.
    pub(crate) used_assertions: HashMap<(String, String), i64>,
}

/// Bit of a role in a roles mask (0 for an unknown role).
pub(crate) fn role_bit(role: &str) -> u16 {
    KNOWN_ROLES.iter().position(|r| *r == role).map_or(0, |i| 1 << i)
}

impl State {
    /// Builds the fleets and empty counters for `cfg`, starting the clock at `clock`.
    pub(crate) fn new(mut cfg: SimConfig, clock: Clock) -> State {
        let spec = std::mem::replace(&mut cfg.fleet, FleetSpec::Machines(Vec::new()));
        let tenants: Vec<Tenant> = match (cfg.tenants, spec) {
            (Some(n), spec) => {
                // Validation refuses a fleet file with --tenants; a fleet
                // built in code is counted, each tenant generating its own.
                let machines = match spec {
                    FleetSpec::Generate { machines } => machines,
                    FleetSpec::Machines(ms) => ms.len(),
                };
                (1..=n)
                    .map(|k| {
                        let name = tenant::tenant_name(k);
                        let seed = tenant::fleet_seed(cfg.seed, &name);
                        let fleet =
                            Tenant::generated(machines, seed, cfg.offline_rate, clock.wall_origin);
                        Tenant::new(name.clone(), tenant::tenant_id(&name), fleet)
                    })
                    .collect()
            }
            (None, FleetSpec::Generate { machines }) => {
                let fleet =
                    Tenant::generated(machines, cfg.seed, cfg.offline_rate, clock.wall_origin);
                vec![Tenant::new(String::new(), String::new(), fleet)]
            }
            // Fleet files were checked on loading; a fleet built in code
            // with a malformed simulator-only key serves without it.
            (None, FleetSpec::Machines(ms)) => {
                let fleet = ms
                    .into_iter()
                    .map(|mut m| {
                        let sidecar = fleet::take_sidecar(&mut m).unwrap_or_default();
                        MachineEntry::new(m, sidecar)
                    })
                    .collect();
                vec![Tenant::new(String::new(), String::new(), fleet)]
            }
        };
        cfg.fleet = FleetSpec::Generate { machines: tenants[0].machines.len() };
        let roles_mask = cfg.roles.iter().fold(0, |m, r| m | role_bit(r));
        let seed = cfg.seed;
        State {
            timing: Timing { settle: cfg.settle, action_timeout: cfg.action_timeout },
            quotas: Quotas::new(cfg.window, &cfg.limits, clock.origin, cfg.foreign_load),
            clock,
            tenants,
            serving: None,
            tokens: HashMap::new(),
            revoked: HashSet::new(),
            withdrawn: HashSet::new(),
            arc_keys: HashSet::new(),
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

    /// Whether the simulator serves named tenants (`--tenants`).
    pub(crate) fn multi_tenant(&self) -> bool {
        self.cfg.tenants.is_some()
    }

    /// The tenant `key` (a name or an id) names: with `--tenants`, the one
    /// that answers to it, if any; otherwise the only tenant, whatever the key.
    pub(crate) fn tenant_index(&self, key: &str) -> Option<usize> {
        if self.multi_tenant() {
            self.tenants.iter().position(|t| t.answers_to(key))
        } else {
            Some(0)
        }
    }

    /// The tenant whose data the request being handled sees. Handlers that
    /// read tenant data run only once the request is attributed (the API's
    /// after the bearer check, which attributes it to the token's tenant), so
    /// the fallback to the first tenant serves only a one-tenant simulator.
    pub(crate) fn tenant(&self) -> &Tenant {
        &self.tenants[self.serving.unwrap_or(0)]
    }

    /// [`State::tenant`], to change.
    pub(crate) fn tenant_mut(&mut self) -> &mut Tenant {
        let t = self.serving.unwrap_or(0);
        &mut self.tenants[t]
    }

    /// Counts in the totals and in the counters of the tenant served.
    pub(crate) fn count(&mut self, add: impl Fn(&mut Stats)) {
        add(&mut self.stats);
        if let Some(t) = self.serving {
            add(&mut self.tenants[t].stats);
        }
    }

    /// Counts a call of `api` in the totals and in the counters of the tenant served.
    pub(crate) fn count_api(&mut self, api: Api, add: impl Fn(&mut ApiStats)) {
        add(self.api_stats.entry(api).or_default());
        if let Some(t) = self.serving {
            add(self.tenants[t].api_stats.entry(api).or_default());
        }
    }

    /// A snapshot of the counters: the totals and, with `--tenants`, each tenant's.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = tenant::snapshot(&self.stats, &self.api_stats);
        if self.multi_tenant() {
            s.tenants = self.tenants.iter().map(|t| (t.name.clone(), t.stats())).collect();
        }
        s
    }

    /// The machines of the first (or only) tenant as they stand now.
    pub(crate) fn machines(&self) -> Vec<Machine> {
        self.tenants[0].machines()
    }

    /// A machine of the tenant served by id (case-insensitive), as action POSTs take it.
    pub(crate) fn machine_by_id(&self, id: &str) -> Option<usize> {
        self.tenant().machine_by_id(id)
    }

    /// A machine of the tenant served by id or computer name (case-insensitive).
    pub(crate) fn machine_by_id_or_name(&self, key: &str) -> Option<usize> {
        self.tenant().machine_by_id_or_name(key)
    }

    /// Renames machine `i` of the tenant served (see [`Tenant::rename_machine`]).
    pub(crate) fn rename_machine(&mut self, i: usize, name: String) {
        self.tenant_mut().rename_machine(i, name);
    }

    /// An action of the tenant served by id (case-insensitive).
    pub(crate) fn action_by_id(&self, id: &str) -> Option<usize> {
        self.tenant().action_by_id(id)
    }

    /// The id (`tid`) of the tenant a login names as `tenant`: with
    /// `--tenants`, the id of the tenant served (the login's, whether named
    /// by name or id); otherwise [`guid_of`] the name, as for any tenant.
    pub(crate) fn tenant_id_of(&self, tenant: &str) -> String {
        match self.serving {
            Some(t) if self.multi_tenant() => self.tenants[t].id.clone(),
            _ => guid_of(tenant),
        }
    }

    /// The principal number of (client id, tenant id), allocating one on
    /// first use. Keyed by the tenant's id, so a tenant named by domain and
    /// by id shares one quota, as the service counts per app and tenant.
    pub(crate) fn principal(&mut self, client_id: &str, tid: &str) -> Principal {
        let next = self.principals.len();
        *self.principals.entry((client_id.to_string(), tid.to_string())).or_insert(next)
    }

    /// Revokes a client's credentials, as deleting its secret or disabling
    /// the app does: every token issued to it stops working at once, in
    /// every tenant. With `tenant`, only that tenant withdraws its consent
    /// (deletes the app's service principal): its tokens there stop working
    /// and it issues no more, while the other tenants go on serving the app.
    pub(crate) fn revoke_client(&mut self, client_id: &str, tenant: Option<usize>) {
        let client = client_id.to_ascii_lowercase();
        let principals: HashSet<Principal> = self
            .principals
            .iter()
            .filter(|((c, _), _)| c.eq_ignore_ascii_case(&client))
            .map(|(_, p)| *p)
            .collect();
        self.tokens.retain(|_, t| {
            !principals.contains(&t.principal) || tenant.is_some_and(|only| only != t.tenant)
        });
        match tenant {
            Some(t) => {
                self.withdrawn.insert((t, client));
            }
            None => {
                self.revoked.insert(client);
            }
        }
    }

    /// Gives a revoked client working credentials again (new tokens only):
    /// everywhere, or with `tenant` that tenant's consent alone.
    pub(crate) fn restore_client(&mut self, client_id: &str, tenant: Option<usize>) {
        let client = client_id.to_ascii_lowercase();
        match tenant {
            Some(t) => {
                self.withdrawn.remove(&(t, client));
            }
            None => {
                self.revoked.remove(&client);
                self.withdrawn.retain(|(_, c)| *c != client);
            }
        }
    }

    /// Whether tenant `tenant` withdrew its consent to `client_id`.
    pub(crate) fn consent_withdrawn(&self, tenant: usize, client_id: &str) -> bool {
        self.withdrawn.contains(&(tenant, client_id.to_ascii_lowercase()))
    }

    /// How many actions each (machine id, action type) has had accepted, in
    /// every tenant (machine ids are unique across tenants).
    pub(crate) fn action_counts(&self) -> BTreeMap<(String, String), u64> {
        let mut counts = BTreeMap::new();
        for t in &self.tenants {
            t.action_counts(&mut counts);
        }
        counts
    }

    /// Marks a machine of the tenant served online or offline at `now`.
    /// Coming back online starts the settle clock of its actions that are
    /// still waiting (not timed out, not cancelled).
    pub(crate) fn set_online(&mut self, idx: usize, online: bool, now: Instant) {
        let offset = self.clock.offset(now);
        let timeout = self.timing.action_timeout;
        let tenant = self.tenant_mut();
        let entry = &mut tenant.machines[idx];
        entry.machine.health_status = Some(if online { "Active" } else { "Inactive" }.to_string());
        entry.rerender();
        if online {
            for a in tenant.actions.iter_mut().filter(|a| a.machine == idx) {
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
        assert_eq!(s.tenant().machines.len(), 100);
        let twin_idx = 100 - fleet::twin_count(100);
        let primary = fleet::twin_of(100, 0);
        let name = fleet::host_name(primary);
        assert_eq!(s.machine_by_id_or_name(&name), Some(primary));
        assert_eq!(s.machine_by_id_or_name(&name.to_uppercase()), Some(primary));
        let twin_id = s.tenant().machines[twin_idx].machine.id.clone();
        assert_eq!(s.machine_by_id_or_name(&twin_id), Some(twin_idx));
        assert_eq!(s.machine_by_id(&twin_id.to_uppercase()), Some(twin_idx));
        assert_eq!(s.machine_by_id(&name), None);
        assert_eq!(s.stats().by_api.len(), Api::all().count());
        assert!(s.stats().tenants.is_empty());
    }

    #[test]
    fn tenants_have_their_own_fleets_named_and_seeded_apart() {
        let cfg = SimConfig {
            fleet: FleetSpec::Generate { machines: 30 },
            tenants: Some(3),
            ..SimConfig::default()
        };
        let s = State::new(cfg, Clock::start());
        let names: Vec<&str> = s.tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["tenant-01", "tenant-02", "tenant-03"]);
        let ids: HashSet<String> = s
            .tenants
            .iter()
            .flat_map(|t| t.machines.iter().map(|m| m.machine.id.clone()))
            .collect();
        assert_eq!(ids.len(), 90, "no machine id in two tenants");
        // Each tenant's fleet is the generated fleet of its own seed.
        let own = fleet::generate(30, tenant::fleet_seed(1, "tenant-02"), 0.0);
        assert_eq!(s.tenants[1].machines()[..], own[..]);
        assert_eq!(s.tenant_index("TENANT-02"), Some(1));
        assert_eq!(s.tenant_index(&tenant::tenant_id("tenant-03")), Some(2));
        assert_eq!(s.tenant_index("tenant-04"), None);
        assert_eq!(s.stats().tenants.len(), 3);
    }

    #[test]
    fn counts_go_to_the_totals_and_the_tenant_served() {
        let cfg = SimConfig { tenants: Some(2), ..SimConfig::default() };
        let mut s = State::new(cfg, Clock::start());
        s.serving = Some(1);
        s.count(|c| c.requests += 1);
        s.count_api(Api::ListMachines, |c| c.calls += 1);
        s.serving = None;
        s.count(|c| c.requests += 1);
        let stats = s.stats();
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.tenants["tenant-01"].requests, 0);
        assert_eq!(stats.tenants["tenant-02"].requests, 1);
        assert_eq!(stats.tenants["tenant-02"].by_api["GET machines"].calls, 1);
    }

    #[test]
    fn roles_mask() {
        assert_eq!(role_bit("Machine.Isolate"), 1);
        assert_eq!(role_bit("Machine.ReadWrite.All"), 1 << 8);
        assert_eq!(role_bit("Nope"), 0);
    }
}
