//! The simulated tenant's devices: a deterministic fleet generated from a
//! seed, or one loaded from a JSON file in the API's own Machine shape.
//!
//! # The generated fleet
//!
//! [`generate`]`(n, seed, offline_rate)` returns exactly `n` records. Which
//! records are special depends only on `n` and `offline_rate`, never on the
//! seed, so tests can rely on it:
//!
//! - **Twins.** `t` = [`twin_count`]`(n)`: 0 below 10 records, 1 below 50,
//!   otherwise `max(2, n / 100)`. The first `b = n − t` records are distinct
//!   devices named `host-{i:05}.contoso.test` (`host-00042.contoso.test` is
//!   record 42). Record `b + k` (for `k < t`) is the stale record of a
//!   re-imaged device: it has the name (and OS) of record
//!   [`twin_of`]`(n, k)` `= 5 + k·⌊b/t⌋`, its own id, an older `firstSeen`
//!   and `lastSeen` (31 to 90 days before the reference date, where every
//!   device record is more recent), and `healthStatus` `Inactive`.
//! - **OS.** Device `i < b` runs `Linux` when `i % 10 == 7`, `macOS` when
//!   `i % 20 == 9`, and otherwise `Windows10`, `Windows11` or
//!   `WindowsServer2019` (drawn from the seed, about 50/35/15 %).
//! - **Offline.** Device `i < b` is offline (`healthStatus` `Inactive`)
//!   when `⌊(i+1)·r⌋ > ⌊i·r⌋` for `r = offline_rate` (computed in millionths):
//!   exactly `⌊b·r⌋` devices, evenly spread: `r = 0.1` gives 9, 19, 29, …;
//!   `r = 0.5` every odd index; `r = 1` all. Every other device is `Active`.
//!   Twins are always `Inactive`.
//! - **Tenants.** With `--tenants`, each tenant's fleet is generated with
//!   the same `n` and `offline_rate` from a seed of its own
//!   ([`crate::sim::tenant::fleet_seed`]): the same special records, other ids.
//! - **Everything else** (ids: 40 lowercase hex; `aadDeviceId`, risk,
//!   exposure, RBAC group, timestamps) is drawn from `seed`: the same
//!   arguments always give the same fleet. `lastIpAddress` is `10.a.b.c`,
//!   unique per record. Timestamps are relative to a fixed reference date
//!   ([`REFERENCE_UNIX_SECS`], 2025-06-01T00:00:00Z) so they do not depend on
//!   when the simulator runs.
//!
//! - **Tags** (`machineTags`, by record index, whatever the seed): `Tier0`
//!   when `i % 50 == 0`, `Finance` when `i % 10 == 3`, `Finance-EMEA` as
//!   well when `i % 20 == 13`, `VIP` when `i % 25 == 1`, `IR-quarantine`
//!   when `i % 40 == 11`; in that order. Every other record has none.
//! - **Files** seen (`GET files/{sha1}/machines`, by record index):
//!   [`WELL_KNOWN_FILES`]`[0]` on `i % 10 == 0`, `[1]` on `i % 25 == 3`,
//!   `[2]` on `i % 7 == 1`, `[3]` on record 4 alone.
//! - **IP history** (`findbyip`), relative to the simulator's start `S` (so
//!   that the API's 30-day window always holds some of it), lengths drawn
//!   from the seed: a device holds `lastIpAddress` from `S − c` (c between
//!   1 and 72 hours) on, with no end; before that, records with
//!   `i % 3 != 2` held `172.16.{⌊i/254⌋ % 254 + 1}.{i % 254 + 1}` for 6 to
//!   48 hours, and records with `i % 3 == 0` held `172.17.` (same last
//!   octets) for 6 to 48 hours before that. A twin held its `lastIpAddress`
//!   from `S − 60 days` to `S − 31 days` only, so no look-up finds it.
//!
//! # Simulator-only keys of fleet files
//!
//! A machine in a fleet file may carry two keys the real entity has not,
//! removed before the machine is served: `files`, a list of SHA-1 hashes
//! the device has seen, and `ipHistory`, a list of
//! `{"ipAddress": "10.0.0.5", "from": "2026-11-30T08:00:00Z", "to": null}`
//! (`from` null: since ever; `to` null: still). Without `ipHistory` the
//! device held `lastIpAddress` and each `ipAddresses[].ipAddress` from its
//! `firstSeen` to its `lastSeen` (either missing: no bound).
//!
//! # Offline machines
//!
//! A machine is offline when its `healthStatus` is present and is not
//! `Active` (for loaded fleets too). Actions on offline machines stay
//! `Pending` until the action timeout, then end `TimeOut`.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::api::model::Machine;
use crate::api::time::format_utc;

/// The date generated timestamps are relative to: 2025-06-01T00:00:00Z.
pub(crate) const REFERENCE_UNIX_SECS: u64 = 1_748_736_000;

/// Keys of the Machine entity in the order the service sends them; keys not
/// listed here follow in the order they were loaded. Also every property
/// `$select` may name.
pub(crate) const KEY_ORDER: &[&str] = &[
    "id",
    "computerDnsName",
    "firstSeen",
    "lastSeen",
    "osPlatform",
    "osProcessor",
    "version",
    "lastIpAddress",
    "lastExternalIpAddress",
    "agentVersion",
    "osBuild",
    "healthStatus",
    "deviceValue",
    "rbacGroupId",
    "rbacGroupName",
    "riskScore",
    "exposureLevel",
    "isAadJoined",
    "aadDeviceId",
    "machineTags",
    "onboardingStatus",
    "osArchitecture",
];

/// How many of `n` generated records are stale twins of another record.
pub fn twin_count(n: usize) -> usize {
    match n {
        0..10 => 0,
        10..50 => 1,
        _ => (n / 100).max(2),
    }
}

/// Index of the device whose name twin `k` (record `n − twin_count(n) + k`) repeats.
pub fn twin_of(n: usize, k: usize) -> usize {
    let t = twin_count(n).max(1);
    let b = n - twin_count(n);
    5 + k * (b / t)
}

/// The name of generated device `i`.
pub fn host_name(i: usize) -> String {
    format!("host-{i:05}.contoso.test")
}

/// Whether device `i` of a generated fleet is offline at `offline_rate`
/// (the rule in the module documentation).
pub(crate) fn offline_index(i: usize, offline_rate: f64) -> bool {
    let ppm = (offline_rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u128;
    let i = i as u128;
    ((i + 1) * ppm) / 1_000_000 > (i * ppm) / 1_000_000
}

/// Whether a machine counts as offline: `healthStatus` present and not `Active`.
pub(crate) fn is_offline(m: &Machine) -> bool {
    m.health_status.as_deref().is_some_and(|h| !h.eq_ignore_ascii_case("active"))
}

/// Builds the deterministic fleet of `n` records described in the module documentation.
pub(crate) fn generate(n: usize, seed: u64, offline_rate: f64) -> Vec<Machine> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let t = twin_count(n);
    let b = n - t;
    let reference = UNIX_EPOCH + Duration::from_secs(REFERENCE_UNIX_SECS);
    let mut ids = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (name_index, twin) = if i < b { (i, false) } else { (twin_of(n, i - b), true) };
        let os = if name_index % 10 == 7 {
            "Linux"
        } else if name_index % 20 == 9 {
            "macOS"
        } else if twin {
            // A twin repeats the OS of its device record, generated before it.
            match out.get(name_index).and_then(|m: &Machine| m.os_platform.as_deref()) {
                Some("Windows11") => "Windows11",
                Some("WindowsServer2019") => "WindowsServer2019",
                _ => "Windows10",
            }
        } else {
            match rng.u8(0..100) {
                0..50 => "Windows10",
                50..85 => "Windows11",
                _ => "WindowsServer2019",
            }
        };
        let offline = twin || offline_index(i, offline_rate);
        let id = loop {
            let id = format!("{:032x}{:08x}", rng.u128(..), rng.u32(..));
            if ids.insert(id.clone()) {
                break id;
            }
        };
        let day = 86_400.0;
        let last_seen_ago = if twin {
            rng.f64() * 59.0 * day + 31.0 * day
        } else if offline {
            rng.f64() * 27.0 * day + 3.0 * day
        } else {
            rng.f64() * 3600.0
        };
        let first_seen_ago = last_seen_ago + 30.0 * day + rng.f64() * 670.0 * day;
        let at = |ago: f64| format_utc(reference - Duration::from_secs_f64(ago));
        let windows = os.starts_with("Windows");
        let (version, build, agent) = match os {
            "Windows10" => (json!("22H2"), json!(19045), "10.8760.19041.5000"),
            "Windows11" => (json!("23H2"), json!(22631), "10.8760.22621.4000"),
            "WindowsServer2019" => (json!("1809"), json!(17763), "10.8760.17763.6000"),
            "Linux" => (json!("22.04"), Value::Null, "101.24072.0001"),
            _ => (json!("14.5"), Value::Null, "101.24072.0001"),
        };
        let (group_id, group_name) = if windows {
            [(140, "The-A-Team"), (141, "Workstations"), (142, "Servers")][rng.usize(0..3)]
        } else {
            (143, "Mac and Linux")
        };
        let risk =
            ["None", "Informational", "Low", "Low", "Medium", "Medium", "High"][rng.usize(0..7)];
        let exposure = ["Low", "Medium", "Medium", "High"][rng.usize(0..4)];
        let value = match rng.u8(0..100) {
            0..90 => "Normal",
            90..95 => "High",
            _ => "Low",
        };
        let aad_joined = windows && rng.u8(0..100) < 80;
        let aad_id = guid(&mut rng);
        let external = format!("203.0.113.{}", rng.u8(1..255));
        let mut extra = Map::new();
        extra.insert("osProcessor".into(), json!("x64"));
        extra.insert("version".into(), version);
        extra.insert("lastExternalIpAddress".into(), json!(external));
        extra.insert("agentVersion".into(), json!(agent));
        extra.insert("osBuild".into(), build);
        extra.insert("deviceValue".into(), json!(value));
        extra.insert("rbacGroupId".into(), json!(group_id));
        extra.insert("rbacGroupName".into(), json!(group_name));
        extra.insert("riskScore".into(), json!(risk));
        extra.insert("exposureLevel".into(), json!(exposure));
        extra.insert("isAadJoined".into(), json!(aad_joined));
        extra.insert("machineTags".into(), json!(generated_tags(i)));
        extra.insert("onboardingStatus".into(), json!("Onboarded"));
        extra.insert("osArchitecture".into(), json!("64-bit"));
        out.push(Machine {
            id,
            computer_dns_name: Some(host_name(name_index)),
            first_seen: Some(at(first_seen_ago)),
            last_seen: Some(at(last_seen_ago)),
            os_platform: Some(os.to_string()),
            health_status: Some(if offline { "Inactive" } else { "Active" }.to_string()),
            aad_device_id: aad_joined.then_some(aad_id),
            last_ip_address: Some(ip_of(i)),
            extra,
        });
    }
    out
}

/// A GUID drawn from the fleet's seeded generator.
fn guid(rng: &mut fastrand::Rng) -> String {
    let h = format!("{:032x}", rng.u128(..));
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `10.a.b.c`, unique for every record index below 254³·255.
fn ip_of(i: usize) -> String {
    format!("10.{}.{}.{}", (i / (254 * 254)) % 256, (i / 254) % 254 + 1, i % 254 + 1)
}

/// The hashes the generated fleet has seen (rule in the module
/// documentation): the documentation's example hash, a hash the test suites
/// use, the SHA-1 of an empty file and that of the EICAR test file.
pub const WELL_KNOWN_FILES: [&str; 4] = [
    "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
    "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "3395856ce81f2b7382dee72602f798b642f14140",
];

/// The tags of generated record `i` (rule in the module documentation).
pub fn generated_tags(i: usize) -> Vec<&'static str> {
    let rules: [(&str, bool); 5] = [
        ("Tier0", i.is_multiple_of(50)),
        ("Finance", i % 10 == 3),
        ("Finance-EMEA", i % 20 == 13),
        ("VIP", i % 25 == 1),
        ("IR-quarantine", i % 40 == 11),
    ];
    rules.into_iter().filter(|(_, on)| *on).map(|(t, _)| t).collect()
}

/// The files generated record `i` has seen (rule in the module documentation).
pub fn generated_files(i: usize) -> Vec<String> {
    let rules = [i.is_multiple_of(10), i % 25 == 3, i % 7 == 1, i == 4];
    WELL_KNOWN_FILES.iter().zip(rules).filter(|(_, on)| *on).map(|(h, _)| h.to_string()).collect()
}

/// One stretch of time during which a machine held an internal IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpSpan {
    /// The address, parsed, so `findbyip` compares addresses, not spellings.
    pub(crate) ip: std::net::IpAddr,
    /// Since when; `None`: since before anything the service remembers.
    pub(crate) from: Option<SystemTime>,
    /// Until when; `None`: the machine still holds it.
    pub(crate) to: Option<SystemTime>,
}

impl IpSpan {
    /// Whether the machine held the address at some moment of `[lo, hi]`.
    pub(crate) fn overlaps(&self, lo: SystemTime, hi: SystemTime) -> bool {
        self.from.is_none_or(|f| f <= hi) && self.to.is_none_or(|t| t >= lo)
    }

    /// The span as the `/_sim` hooks show it (and fleet files write it).
    pub(crate) fn to_json(&self) -> Value {
        let at = |t: Option<SystemTime>| t.map_or(Value::Null, |t| Value::String(format_utc(t)));
        json!({ "ipAddress": self.ip.to_string(), "from": at(self.from), "to": at(self.to) })
    }
}

/// Reads an `ipHistory` list (see the module documentation).
pub(crate) fn parse_ip_history(v: &Value) -> Result<Vec<IpSpan>, String> {
    let Value::Array(items) = v else {
        return Err("ipHistory must be a list of {ipAddress, from, to}".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let at = |key: &str| match item.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(t)) => crate::api::time::parse_utc(t)
                    .map(Some)
                    .ok_or_else(|| format!("ipHistory[{k}].{key}: {t:?} is not a UTC timestamp")),
                Some(_) => Err(format!("ipHistory[{k}].{key} must be a timestamp or null")),
            };
            let ip = item
                .get("ipAddress")
                .and_then(Value::as_str)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("ipHistory[{k}].ipAddress must be an IP address"))?;
            Ok(IpSpan { ip, from: at("from")?, to: at("to")? })
        })
        .collect()
}

/// Reads a `files` list: SHA-1 hashes, kept lowercase.
pub(crate) fn parse_files(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else { return Err("files must be a list of SHA-1 hashes".into()) };
    items
        .iter()
        .map(|h| match h.as_str() {
            Some(t) if crate::api::action::is_sha1(t) => Ok(t.to_ascii_lowercase()),
            _ => Err(format!("files: {h} is not a SHA-1 hash (40 hexadecimal digits)")),
        })
        .collect()
}

/// What the simulator keeps beside a machine entity: its IP history and
/// the files it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sidecar {
    /// Every address the machine held, and when.
    pub(crate) ips: Vec<IpSpan>,
    /// SHA-1 hashes (lowercase) of the files it has seen.
    pub(crate) files: Vec<String>,
}

/// Removes the simulator-only keys (`ipHistory`, `files`) from a loaded
/// machine and reads them, or derives its history from `lastIpAddress` and
/// `ipAddresses` when it has none (rules in the module documentation).
pub(crate) fn take_sidecar(m: &mut Machine) -> Result<Sidecar, String> {
    let history = m.extra.shift_remove("ipHistory");
    let files = m.extra.shift_remove("files");
    let files = files.as_ref().map(parse_files).transpose()?.unwrap_or_default();
    let ips = match history {
        Some(h) => parse_ip_history(&h)?,
        None => {
            let from = m.first_seen.as_deref().and_then(crate::api::time::parse_utc);
            let to = m.last_seen.as_deref().and_then(crate::api::time::parse_utc);
            let listed = m.extra.get("ipAddresses").and_then(Value::as_array);
            let listed = listed.into_iter().flatten().filter_map(|a| a.get("ipAddress"));
            let mut ips: Vec<IpSpan> = Vec::new();
            for text in
                m.last_ip_address.iter().map(String::as_str).chain(listed.filter_map(Value::as_str))
            {
                if let Ok(ip) = text.parse()
                    && !ips.iter().any(|s| s.ip == ip)
                {
                    ips.push(IpSpan { ip, from, to });
                }
            }
            ips
        }
    };
    Ok(Sidecar { ips, files })
}

/// The IP histories of a generated fleet of `n` records (rule in the module
/// documentation), relative to the simulator's start `start`.
pub(crate) fn generated_histories(
    fleet: &[Machine],
    seed: u64,
    start: SystemTime,
) -> Vec<Vec<IpSpan>> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x1b_4157);
    let n = fleet.len();
    let b = n - twin_count(n);
    let hour = 3600.0;
    let ago = |secs: f64| start.checked_sub(Duration::from_secs_f64(secs));
    fleet
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Some(ip) = m.last_ip_address.as_deref().and_then(|t| t.parse().ok()) else {
                return Vec::new();
            };
            if i >= b {
                let day = 86_400.0;
                return vec![IpSpan { ip, from: ago(60.0 * day), to: ago(31.0 * day) }];
            }
            let current = rng.f64() * 71.0 * hour + hour;
            let mut spans = vec![IpSpan { ip, from: ago(current), to: None }];
            let mut end = current;
            for (net, held) in [(16, i % 3 != 2), (17, i % 3 == 0)] {
                if !held {
                    break;
                }
                let len = rng.f64() * 42.0 * hour + 6.0 * hour;
                let earlier = format!("172.{net}.{}.{}", (i / 254) % 254 + 1, i % 254 + 1);
                // Built from numbers in range: always an address.
                if let Ok(ip) = earlier.parse() {
                    spans.insert(0, IpSpan { ip, from: ago(end + len), to: ago(end) });
                }
                end += len;
            }
            spans
        })
        .collect()
}

/// Why a fleet file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The file could not be read.
    #[error("cannot read fleet file {path}: {why}")]
    Read {
        /// The file as given.
        path: String,
        /// The system's reason.
        why: String,
    },
    /// The file was read but is not a fleet.
    #[error("invalid fleet file {path}: {why}")]
    Invalid {
        /// The file as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Loads a fleet from a JSON file: an array of Machine objects, or an OData
/// reply `{"value":[...]}`. Every machine needs a non-empty, unique `id`.
pub(crate) fn load(path: &Path) -> Result<Vec<Machine>, FleetError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| FleetError::Read { path: shown.clone(), why: io_reason(&e) })?;
    parse(&text).map_err(|why| FleetError::Invalid { path: shown, why })
}

/// A short, lowercase reason for an I/O error, without the OS error number.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file".to_string(),
        K::PermissionDenied => "permission denied".to_string(),
        K::IsADirectory => "is a directory".to_string(),
        K::InvalidData => "not UTF-8 text".to_string(),
        K::AddrInUse => "address in use".to_string(),
        K::AddrNotAvailable => "address not available".to_string(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

/// Reads fleet JSON text (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<Machine>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("value") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(
                    "expected a JSON array of machines or an object with a \"value\" array".into(),
                );
            }
        },
        _ => {
            return Err(
                "expected a JSON array of machines or an object with a \"value\" array".into()
            );
        }
    };
    let mut ids = HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let m: Machine =
            serde_json::from_value(item).map_err(|e| format!("machine #{}: {e}", i + 1))?;
        if m.id.trim().is_empty() {
            return Err(format!("machine #{}: empty id", i + 1));
        }
        if !ids.insert(m.id.to_ascii_lowercase()) {
            return Err(format!("machine #{}: duplicate id {}", i + 1, m.id));
        }
        take_sidecar(&mut m.clone()).map_err(|e| format!("machine #{}: {e}", i + 1))?;
        out.push(m);
    }
    Ok(out)
}

/// The machine as the service sends it: every key, the known ones in the real order.
pub(crate) fn render(m: &Machine) -> Map<String, Value> {
    let mut all = match serde_json::to_value(m) {
        Ok(Value::Object(o)) => o,
        // A Machine always serialises to an object (plain fields and a flattened map).
        _ => Map::new(),
    };
    let mut out = Map::with_capacity(all.len());
    for k in KEY_ORDER {
        if let Some(v) = all.shift_remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out.extend(all);
    out
}

/// `lastSeen` as a time, for choosing between twins (missing or unreadable sorts first).
pub(crate) fn last_seen(m: &Machine) -> Option<SystemTime> {
    m.last_seen.as_deref().and_then(crate::api::time::parse_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fleet_other_seed_other_ids() {
        let a = generate(300, 7, 0.1);
        assert_eq!(a, generate(300, 7, 0.1));
        let b = generate(300, 8, 0.1);
        assert_ne!(a[0].id, b[0].id);
        assert_eq!(a.len(), 300);
    }

    #[test]
    fn documented_roles_of_indices() {
        let n = 1000;
        let f = generate(n, 1, 0.1);
        let t = twin_count(n);
        assert_eq!(t, 10);
        let b = n - t;
        for (i, m) in f.iter().enumerate().take(b) {
            assert_eq!(m.computer_dns_name.as_deref(), Some(host_name(i).as_str()));
            let os = m.os_platform.as_deref().unwrap();
            assert_eq!(os == "Linux", i % 10 == 7, "{i}");
            assert_eq!(os == "macOS", i % 20 == 9, "{i}");
            assert_eq!(is_offline(m), (i + 1).is_multiple_of(10), "{i}");
            assert_eq!(m.id.len(), 40);
            assert!(m.id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        }
        for k in 0..t {
            let twin = &f[b + k];
            let orig = &f[twin_of(n, k)];
            assert_eq!(twin.computer_dns_name, orig.computer_dns_name);
            assert_eq!(twin.os_platform, orig.os_platform);
            assert_ne!(twin.id, orig.id);
            assert!(last_seen(twin) < last_seen(orig));
            assert!(is_offline(twin));
        }
        let ips: HashSet<_> = f.iter().map(|m| m.last_ip_address.clone()).collect();
        assert_eq!(ips.len(), n);
        let windows = f.iter().filter(|m| m.os_platform.as_deref().unwrap().starts_with("Windows"));
        assert!(windows.count() > n * 3 / 4);
    }

    #[test]
    fn twin_counts_and_offline_rule() {
        assert_eq!((twin_count(9), twin_count(10), twin_count(49), twin_count(50)), (0, 1, 1, 2));
        assert_eq!(twin_count(250), 2);
        assert_eq!(twin_count(1000), 10);
        assert_eq!((0..100).filter(|&i| offline_index(i, 0.5)).count(), 50);
        assert!(offline_index(1, 0.5) && !offline_index(0, 0.5));
        assert_eq!((0..100).filter(|&i| offline_index(i, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|&i| offline_index(i, 1.0)).count(), 100);
        assert_eq!((0..1000).filter(|&i| offline_index(i, 0.03)).count(), 30);
    }

    #[test]
    fn ip_histories_follow_the_documented_rule() {
        let start = UNIX_EPOCH + Duration::from_secs(REFERENCE_UNIX_SECS);
        let f = generate(100, 5, 0.0);
        let h = generated_histories(&f, 5, start);
        assert_eq!(h, generated_histories(&f, 5, start));
        assert_ne!(h, generated_histories(&f, 6, start));
        let b = 100 - twin_count(100);
        for (i, spans) in h.iter().enumerate() {
            let current = spans.last().unwrap();
            assert_eq!(Some(current.ip.to_string()), f[i].last_ip_address, "{i}");
            if i >= b {
                assert_eq!(spans.len(), 1);
                assert!(current.to.unwrap() <= start - Duration::from_secs(31 * 86_400));
                continue;
            }
            assert_eq!(spans.len(), [3, 2, 1][i % 3], "{i}");
            let since = start.duration_since(current.from.unwrap()).unwrap();
            assert!(since >= Duration::from_secs(3600) && since < Duration::from_secs(72 * 3600));
            assert_eq!(current.to, None);
            // Each earlier span ends where the next begins.
            for w in spans.windows(2) {
                assert_eq!(w[0].to, w[1].from);
                assert!(w[0].from < w[0].to);
            }
        }
        assert_eq!(h[3][0].ip.to_string(), "172.17.1.4");
        assert_eq!(h[3][1].ip.to_string(), "172.16.1.4");
    }

    #[test]
    fn simulator_keys_of_fleet_files_leave_the_entity() {
        let mut m = parse(
            r#"[{"id":"a","lastIpAddress":"10.0.0.1","files":["A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508"],
                 "ipHistory":[{"ipAddress":"10.0.0.1","from":"2026-11-30T08:00:00Z","to":null}]}]"#,
        )
        .unwrap()
        .remove(0);
        let side = take_sidecar(&mut m).unwrap();
        assert_eq!(side.files, ["a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"]);
        assert_eq!(side.ips[0].to_json()["from"], "2026-11-30T08:00:00.0000000Z");
        assert!(!m.extra.contains_key("files") && !m.extra.contains_key("ipHistory"));
        let mut plain = parse(r#"[{"id":"b","lastIpAddress":"10.0.0.2","ipAddresses":[{"ipAddress":"fe80::1"},{"ipAddress":"10.0.0.2"}]}]"#)
            .unwrap()
            .remove(0);
        let ips: Vec<String> =
            take_sidecar(&mut plain).unwrap().ips.iter().map(|s| s.ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.2", "fe80::1"]);
        assert_eq!(generated_tags(13), ["Finance", "Finance-EMEA"]);
        assert_eq!(generated_files(0), [WELL_KNOWN_FILES[0]]);
    }

    #[test]
    fn renders_keys_in_the_real_order() {
        let f = generate(20, 3, 0.0);
        let keys: Vec<String> = render(&f[0]).keys().cloned().collect();
        let expected: Vec<String> = KEY_ORDER.iter().map(|s| s.to_string()).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn loads_both_shapes_and_refuses_bad_ones() {
        let fixture = std::fs::read_to_string(format!(
            "{}/tests/fixtures/machines-list.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let odata = parse(&fixture).unwrap();
        assert_eq!(odata[0].computer_dns_name.as_deref(), Some("mymachine1.contoso.com"));
        let array = parse(r#"[{"id":"a1"},{"id":"b2","healthStatus":"Inactive"}]"#).unwrap();
        assert!(is_offline(&array[1]) && !is_offline(&array[0]));
        assert!(parse("{").is_err());
        assert!(parse("42").is_err());
        assert!(parse(r#"{"items":[]}"#).is_err());
        assert!(parse(r#"[{"computerDnsName":"x"}]"#).unwrap_err().contains("machine #1"));
        assert!(parse(r#"[{"id":"a"},{"id":"A"}]"#).unwrap_err().contains("duplicate"));
        let missing = load(Path::new("/nonexistent/fleet.json")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot read fleet file /nonexistent/fleet.json: no such file"
        );
    }
}
