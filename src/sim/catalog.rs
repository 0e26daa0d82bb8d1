//! Every endpoint the simulator serves, with where its behaviour comes from:
//! the one list that `simulate --help` prints and the README's simulator
//! section is checked against (a unit test below reads the README), so a
//! new endpoint cannot go undocumented.
//!
//! Sources: "reference" is the team's `mde-api.md` (its section or decision
//! number), "addendum" is `mde-api-addendum.md`; both cite the Microsoft
//! pages and public captures they rest on. Behaviours decided where those
//! are silent are written in each handler's module documentation.

/// One endpoint of the simulator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    /// HTTP method.
    pub(crate) method: &'static str,
    /// Path, with `{placeholders}`.
    pub(crate) path: &'static str,
    /// What it does, in a few words.
    pub(crate) what: &'static str,
    /// Where its shape and errors come from.
    pub(crate) source: &'static str,
}

/// Shorthand for the table.
const fn e(
    method: &'static str,
    path: &'static str,
    what: &'static str,
    source: &'static str,
) -> Endpoint {
    Endpoint { method, path, what, source }
}

/// Every endpoint, login first, then the API, then the simulator's own hooks.
pub(crate) const ENDPOINTS: &[Endpoint] = &[
    e(
        "POST",
        "/{tenant}/oauth2/v2.0/token",
        "client credentials, v2 (scope): secret, Basic header, certificate assertion, federated token",
        "addendum §4.1-4.5; Entra error reference",
    ),
    e(
        "POST",
        "/{tenant}/oauth2/token",
        "client credentials, v1 (resource); numbers as strings",
        "addendum §4.1-4.2 (AZ-V1)",
    ),
    e(
        "GET",
        "/{tenant}/v2.0/.well-known/openid-configuration",
        "OpenID Connect discovery (v2 endpoints)",
        "addendum §4.6",
    ),
    e(
        "GET",
        "/{tenant}/.well-known/openid-configuration",
        "OpenID Connect discovery (v1 endpoints)",
        "addendum §4.6",
    ),
    e(
        "GET",
        "/common/discovery/instance",
        "MSAL's instance discovery",
        "addendum §4.7 (MSAL for Python)",
    ),
    e(
        "GET",
        "/{tenant}/discovery/v2.0/keys",
        "the keys that verify issued tokens (also /discovery/keys)",
        "OpenID Connect discovery (jwks_uri)",
    ),
    e(
        "GET",
        "/metadata/identity/oauth2/token",
        "managed identity, Azure IMDS shape (Metadata: true); with --arc-key-dir, Azure Arc's agent (a Basic challenge naming a key file)",
        "addendum §6.1, §6.3",
    ),
    e(
        "GET",
        "/msi/token",
        "managed identity, App Service/Functions shape (X-IDENTITY-HEADER; 2017-09-01 with secret)",
        "addendum §6.2",
    ),
    e(
        "POST",
        "/api/machines/{id}/{action}",
        "the seven machine actions (isolate ... restrictCodeExecution)",
        "reference §5-§7",
    ),
    e("POST", "/api/machineactions/{id}/cancel", "cancel an action", "reference §5, addendum §2.3"),
    e(
        "GET",
        "/api/machines",
        "machines, with $filter, $top, $skip, $select and paging",
        "reference §8, addendum §1.7",
    ),
    e("GET", "/api/machines/{id}", "one machine, by id or name", "reference §8"),
    e(
        "GET",
        "/api/machineactions",
        "machine actions, with $filter, $top, $skip, $select",
        "reference §9",
    ),
    e("GET", "/api/machineactions/{id}", "one machine action", "reference §9"),
    e(
        "GET",
        "/api/machines/findbyip(ip='{ip}',timestamp={time})",
        "machines that held an internal IP within 15 minutes of a time",
        "addendum §1.1",
    ),
    e(
        "GET",
        "/api/machines/findbytag?tag={tag}&useStartsWithFilter={bool}",
        "machines by tag, exact or by prefix",
        "addendum §1.2",
    ),
    e("POST", "/api/machines/{id}/tags", "add or remove a machine's tag", "addendum §1.3"),
    e(
        "POST",
        "/api/machines/AddOrRemoveTagForMultipleMachines",
        "add or remove a tag on up to 500 machines",
        "addendum §1.4",
    ),
    e("GET", "/api/machines/{id}/logonusers", "a machine's log-on users", "addendum §1.5"),
    e("GET", "/api/files/{sha1}/machines", "machines that have seen a file", "addendum §1.6"),
    e(
        "POST",
        "/api/machines/{id}/startInvestigation",
        "start an automated investigation",
        "addendum §2.2",
    ),
    e(
        "GET",
        "/api/machineactions/{id}/GetPackageUri",
        "the link to a collected investigation package",
        "addendum §2.1",
    ),
    e(
        "POST",
        "/v1.0/security/runHuntingQuery",
        "Microsoft Graph, on its own listener: Advanced Hunting over DeviceInfo and DeviceFileEvents for a subset of KQL (ThreatHunting.Read.All, 45 a minute)",
        "addendum §3.1",
    ),
    e(
        "GET",
        "/_sim/stats",
        "counters, per API too, and per tenant with --tenants (?tenant= for one tenant's)",
        "the simulator's own",
    ),
    e(
        "GET",
        "/_sim/tenants",
        "the tenants of --tenants: name, id (the tokens' tid) and fleet size",
        "the simulator's own",
    ),
    e(
        "GET",
        "/_sim/identities",
        "the host's managed identities with their client, object and resource ids",
        "the simulator's own",
    ),
    e(
        "POST",
        "/_sim/clients/{id}/revoke",
        "revoke an app or identity: its tokens and its next login fail (also /restore); ?tenant= withdraws that tenant's consent only",
        "the simulator's own",
    ),
    e(
        "POST",
        "/_sim/machines/{id}/online",
        "change a device's state (also /offline)",
        "the simulator's own",
    ),
    e(
        "POST",
        "/_sim/machines/{id}/name",
        "rename a device: a JSON string, its new computerDnsName",
        "the simulator's own",
    ),
    e(
        "GET",
        "/_sim/machines/{id}/tags",
        "a device's tags, set with POST (also /ips: its IP history, /files: the files it saw)",
        "the simulator's own",
    ),
    e(
        "GET",
        "/_sim/files",
        "the generated fleet's well-known files and the machines that saw them",
        "the simulator's own",
    ),
    e(
        "GET",
        "/_sim/packages/{id}.zip",
        "the (empty) investigation package GetPackageUri links to",
        "the simulator's own",
    ),
];

/// The endpoint list as `simulate --help` prints it.
pub(crate) fn help_text() -> String {
    let mut out = String::from(
        "Endpoints (method, path; what; source: reference = mde-api.md, addendum = mde-api-addendum.md):\n",
    );
    for e in ENDPOINTS {
        out.push_str(&format!("  {:<5}{}\n        {}; {}\n", e.method, e.path, e.what, e.source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_endpoint_with_its_source() {
        let readme = include_str!("../../README.md");
        for e in ENDPOINTS {
            let row = format!("| `{} {}` |", e.method, e.path);
            let line = readme.lines().find(|l| l.starts_with(&row));
            let line = line.unwrap_or_else(|| panic!("README has no row starting {row}"));
            assert!(line.contains(e.source), "{row}: the README names its source {:?}", e.source);
        }
    }
}
