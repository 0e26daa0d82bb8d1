//! `mdebulk auth check`: gets a token by the chosen method and shows what
//! it is (method, tenant, identity, audience, expiry) and what it allows
//! (its `roles` and `scp` against each action's permission), so "Missing
//! application roles" is found before a run instead of row by row.
//! Nothing but the token request is sent; the token itself is never shown.

use std::time::{Duration, UNIX_EPOCH};

use crate::api::action::ActionKind;
use crate::api::auth::token_permissions;
use crate::api::client::Client;
use crate::api::jwt::Jws;
use crate::api::time::format_utc;
use crate::cli::{AuthCheckArgs, auth_check_config};

/// `mdebulk auth check`: exit 0 when the token allows every action asked
/// about; an error (exit 2) when no token comes or a permission is missing.
pub(crate) async fn check(
    args: &AuthCheckArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<u8> {
    let (client_config, wanted) = auth_check_config(args, env)?;
    let method = client_config.credentials.method();
    let identity = client_config.credentials.identity();
    let configured_tenant = client_config.credentials.tenant().to_string();
    let client = Client::new(client_config)?;
    let token = client
        .tokens()
        .bearer()
        .await
        .map_err(|e| anyhow::anyhow!("no token by --auth {method}: {e}"))?;
    println!("method:    {method}");
    println!("identity:  {identity}");
    let jws = Jws::parse(token.expose()).ok();
    let claim = |name: &str| jws.as_ref().and_then(|j| j.claim_str(name)).map(str::to_string);
    let tenant = claim("tid").unwrap_or(configured_tenant);
    println!("tenant:    {}", if tenant.is_empty() { "(not stated)" } else { &tenant });
    let Some(jws) = &jws else {
        println!("token:     not a readable JWT: only the API can tell what it allows");
        return Ok(0);
    };
    if let Some(app) = claim("appid").or_else(|| claim("azp")) {
        println!("app id:    {app}");
    }
    if let Some(upn) = claim("upn").or_else(|| claim("unique_name")) {
        println!("user:      {upn}");
    }
    println!("audience:  {}", claim("aud").unwrap_or_else(|| "(none)".to_string()));
    if let Some(exp) = jws.claim_time("exp").and_then(|e| u64::try_from(e).ok()) {
        let at = UNIX_EPOCH + Duration::from_secs(exp);
        let left = exp.saturating_sub(crate::api::auth::epoch_seconds()) / 60;
        println!("expires:   {} (in {left} min)", format_utc(at));
    }
    let granted = token_permissions(token.expose()).unwrap_or_default();
    println!(
        "roles:     {}",
        if granted.is_empty() { "(none)".to_string() } else { granted.join(", ") }
    );
    let allowed: Vec<&str> = ActionKind::ALL
        .iter()
        .filter(|a| granted.iter().any(|g| g == a.permission()))
        .map(|a| a.cli_name())
        .collect();
    println!(
        "allows:    {}",
        if allowed.is_empty() { "no action".to_string() } else { allowed.join(", ") }
    );
    if !granted.iter().any(|g| g == "Machine.Read.All" || g == "Machine.ReadWrite.All") {
        println!(
            "note:      without Machine.Read.All, device names, pre-flight checks, --wait and status cannot look anything up"
        );
    }
    let mut missing = Vec::new();
    for action in &wanted {
        let need = action.permission();
        if granted.iter().any(|g| g == need) {
            println!("needed:    {need} for {}: present", action.cli_name());
        } else {
            println!("needed:    {need} for {}: MISSING", action.cli_name());
            missing.push(need);
        }
    }
    if missing.is_empty() {
        return Ok(0);
    }
    missing.dedup();
    anyhow::bail!(
        "the token lacks {}: add the WindowsDefenderATP application permission to the app registration and grant admin consent (README, \"Registering the app\")",
        missing.join(", ")
    )
}
