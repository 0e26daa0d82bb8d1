//! The simulator serving several tenants at once (`--tenants N`), over
//! loopback HTTP and TLS: each tenant's own fleet, reached with its own
//! token on the one API base URL; another tenant's machines out of reach;
//! tokens of tenants the simulator does not serve refused; quotas, consent
//! and counters per tenant; and a simulator without `--tenants` unchanged.

mod sim_support;

use std::collections::HashSet;

use mdebulk::api::jwt::{self, Algorithm, Jws, SigningKey};
use mdebulk::sim::{IdentityConfig, SimConfig, Stats};
use serde_json::{Value, json};
use sim_support::{Env, SCOPE, SECRET, assert_error, config, send};

over_http_and_tls! {
    disjoint_fleets_each_reached_with_its_own_token => disjoint_fleets_over_http, disjoint_fleets_over_tls;
    another_tenants_machine_is_not_found => another_tenants_machine_over_http, another_tenants_machine_over_tls;
    a_token_of_a_tenant_not_served_is_unauthorized => foreign_tid_over_http, foreign_tid_over_tls;
    quotas_are_per_tenant => quotas_per_tenant_over_http, quotas_per_tenant_over_tls;
    consent_withdrawn_in_one_tenant_only => consent_per_tenant_over_http, consent_per_tenant_over_tls;
}

/// The `tid` claim of a token.
fn tid(token: &str) -> String {
    Jws::parse(token).expect("a JWT").claim_str("tid").expect("a tid").to_string()
}

/// A token request for app `app` in `tenant`, its reply as it comes.
async fn login(env: &Env, tenant: &str) -> sim_support::Reply {
    send(env.http.post(format!("{}/{tenant}/oauth2/v2.0/token", env.base)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ]))
    .await
}

async fn disjoint_fleets_each_reached_with_its_own_token(tls: bool) {
    let env = Env::start_tenants(tls, 3, config()).await;
    let tenants = env.sim.tenants();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["tenant-01", "tenant-02", "tenant-03"]);
    let mut seen = HashSet::new();
    for t in &tenants {
        let ids = env.tenant_ids(&t.name);
        assert_eq!(ids.len(), 100, "each tenant has the --machines fleet");
        for id in &ids {
            assert!(seen.insert(id.clone()), "machine {id} in two tenants");
        }
        // By name and by id: the same tenant, its own machines and no other.
        for key in [&t.name, &t.id] {
            let token = env.token_for(key).await;
            assert_eq!(tid(&token), t.id, "the tid of a token of {key}");
            assert_eq!(env.listed_ids(&token).await, ids, "{key} lists its own fleet");
        }
    }
    // The ids are GUIDs, distinct, and the hook lists them as the handle does.
    let listed = send(env.http.get(format!("{}/_sim/tenants", env.base))).await;
    assert_eq!(listed.status, 200);
    let hook: Vec<(String, String, u64)> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_string();
            (s("name"), s("id"), t["machines"].as_u64().unwrap())
        })
        .collect();
    let handle: Vec<(String, String, u64)> =
        tenants.iter().map(|t| (t.name.clone(), t.id.clone(), 100)).collect();
    assert_eq!(hook, handle);
    assert_eq!(tenants.iter().map(|t| &t.id).collect::<HashSet<_>>().len(), 3);
    // A tenant the simulator does not serve: Entra's AADSTS90002.
    let r = login(&env, "tenant-04").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_request");
    assert_eq!(r.json["error_codes"], json!([90002]), "{}", r.text);
    assert!(env.sim.tenant_fleet("tenant-04").is_none());
    env.sim.shutdown().await;
}

async fn another_tenants_machine_is_not_found(tls: bool) {
    let env = Env::start_tenants(tls, 3, config()).await;
    let (a, b) = (env.token_for("tenant-01").await, env.token_for("tenant-02").await);
    let a_fleet = env.sim.tenant_fleet("tenant-01").unwrap();
    let target = a_fleet
        .iter()
        .find(|m| m.os_platform.as_deref().unwrap_or("").starts_with("Windows"))
        .expect("a Windows machine")
        .id
        .clone();
    let comment = json!({"Comment": "x", "IsolationType": "Full"});
    // B's token on A's machine: not in B's data.
    assert_error(
        &env.get_as(&b, &format!("/api/machines/{target}")).await,
        404,
        "ResourceNotFound",
    );
    let path = format!("/api/machines/{target}/isolate");
    assert_error(&env.post_as(&b, &path, comment.clone()).await, 404, "ResourceNotFound");
    // A tenant's machines are named alike in every tenant (the generated
    // fleet's names), but a name reaches the machine of the token's tenant.
    let name = a_fleet[0].computer_dns_name.clone().unwrap();
    let by_name = env.get_as(&b, &format!("/api/machines/{name}")).await;
    assert_eq!(by_name.status, 200, "{}", by_name.text);
    assert_eq!(by_name.json["id"].as_str().unwrap(), env.tenant_ids("tenant-02")[0]);
    let stats = env.stats().await;
    assert_eq!(stats.actions_created, 0, "no action in any tenant");
    assert!(env.sim.action_counts().is_empty());
    for t in ["tenant-01", "tenant-02", "tenant-03"] {
        assert_eq!(stats.tenants[t].actions_created, 0, "{t}");
    }
    assert_eq!(stats.tenants["tenant-02"].not_found, 2);
    // A's own token creates it; B neither lists nor reads A's action.
    let created = env.post_as(&a, &path, comment).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let action = created.json["id"].as_str().unwrap();
    let b_actions = env.get_as(&b, "/api/machineactions").await;
    assert_eq!(b_actions.json["value"], json!([]), "{}", b_actions.text);
    let a_actions = env.get_as(&a, "/api/machineactions").await;
    assert_eq!(a_actions.json["value"].as_array().unwrap().len(), 1);
    let read = env.get_as(&b, &format!("/api/machineactions/{action}")).await;
    assert_error(&read, 404, "ResourceNotFound");
    let cancel = format!("/api/machineactions/{action}/cancel");
    let cancel = env.post_as(&b, &cancel, json!({"Comment": "x"})).await;
    assert_error(&cancel, 404, "ResourceNotFound");
    let stats = env.stats().await;
    assert_eq!(stats.tenants["tenant-01"].actions_created, 1);
    assert_eq!(stats.tenants["tenant-02"].actions_created, 0);
    assert_eq!(stats.tenants["tenant-01"].cancelled, 0);
    env.sim.shutdown().await;
}

async fn a_token_of_a_tenant_not_served_is_unauthorized(tls: bool) {
    let env = Env::start_tenants(tls, 2, config()).await;
    // A token validly signed by a simulator of the same process (the same
    // key), for a tenant the multi-tenant simulator does not serve.
    let other = Env::start(config()).await;
    let foreign = other.token_for("fabrikam.example").await;
    assert_ne!(tid(&foreign), env.sim.tenants()[0].id);
    let r = env.get_as(&foreign, "/api/machines").await;
    assert_error(&r, 401, "Unauthorized");
    assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(message.contains(&tid(&foreign)), "{message}");
    let r = env
        .post_as(
            &foreign,
            &format!("/api/machines/{}/isolate", env.tenant_ids("tenant-01")[0]),
            json!({"Comment": "x"}),
        )
        .await;
    assert_error(&r, 401, "Unauthorized");
    let stats = env.stats().await;
    assert_eq!(stats.unauthorized, 2);
    assert_eq!(stats.actions_created, 0);
    // Counted in the totals, in no tenant: it belongs to none of them.
    assert!(
        stats.tenants.values().all(|t| t.unauthorized == 0 && t.by_api["GET machines"].calls == 0)
    );
    other.sim.shutdown().await;
    env.sim.shutdown().await;
}

async fn quotas_are_per_tenant(tls: bool) {
    let cfg = SimConfig { limits: vec!["5/60s".parse().unwrap()], ..config() };
    let env = Env::start_tenants(tls, 3, cfg).await;
    let a = env.token_for("tenant-01").await;
    let b = env.token_for("tenant-02").await;
    for _ in 0..5 {
        assert_eq!(env.get_as(&a, "/api/machines").await.status, 200);
    }
    let refused = env.get_as(&a, "/api/machines").await;
    assert_error(&refused, 429, "TooManyRequests");
    let wait = refused.retry_after.expect("a Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    // Tenant A named by its id is the same tenant: the same quota.
    let a_by_id = env.token_for(&env.sim.tenants()[0].id).await;
    assert_eq!(env.get_as(&a_by_id, "/api/machines").await.status, 429);
    // Tenant B has its whole quota.
    for _ in 0..5 {
        let r = env.get_as(&b, "/api/machines").await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(env.get_as(&b, "/api/machines").await.status, 429);
    let stats = env.stats().await;
    assert_eq!(stats.throttled, 3);
    assert_eq!(stats.tenants["tenant-01"].throttled, 2);
    assert_eq!(stats.tenants["tenant-02"].throttled, 1);
    assert_eq!(stats.tenants["tenant-01"].by_api["GET machines"].admitted, 5);
    assert_eq!(stats.tenants["tenant-03"].by_api["GET machines"].calls, 0);
    env.sim.shutdown().await;
}

async fn consent_withdrawn_in_one_tenant_only(tls: bool) {
    let env = Env::start_tenants(tls, 2, config()).await;
    let a = env.token_for("tenant-01").await;
    let b = env.token_for("tenant-02").await;
    let r = env.hook("clients/app/revoke?tenant=tenant-01").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"client_id": "app", "revoked": true, "tenant": "tenant-01"}));
    // Tenant A: its tokens stop, and it knows the app no more.
    assert_error(&env.get_as(&a, "/api/machines").await, 401, "Unauthorized");
    let refused = login(&env, "tenant-01").await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json["error_codes"], json!([700016]), "{}", refused.text);
    // Tenant B: its token works and it issues new ones.
    assert_eq!(env.get_as(&b, "/api/machines").await.status, 200);
    let fresh = env.token_for("tenant-02").await;
    assert_eq!(env.get_as(&fresh, "/api/machines").await.status, 200);
    // Restored in A: new tokens again.
    assert_eq!(env.hook("clients/app/restore?tenant=tenant-01").await.status, 200);
    let again = env.token_for("tenant-01").await;
    assert_eq!(env.get_as(&again, "/api/machines").await.status, 200);
    // Revoking the app's credentials (no tenant) stops it everywhere.
    assert_eq!(env.hook("clients/app/revoke").await.status, 200);
    for (t, token) in [("tenant-01", &again), ("tenant-02", &fresh)] {
        assert_eq!(env.get_as(token, "/api/machines").await.status, 401, "{t}");
        assert_eq!(login(&env, t).await.json["error_codes"], json!([7000215]), "{t}");
    }
    env.sim.shutdown().await;
}

/// Every counter of `s` by name, `by_api` and `tenants` left out.
fn counters(s: &Stats) -> Vec<(String, u64)> {
    let Value::Object(map) = serde_json::to_value(s).unwrap() else { panic!("an object") };
    map.into_iter().filter_map(|(k, v)| v.as_u64().map(|n| (k, n))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn per_tenant_stats_add_up_to_the_totals() {
    let env = Env::start_tenants(
        false,
        3,
        SimConfig { limits: vec!["4/60s".parse().unwrap()], ..config() },
    )
    .await;
    // A workload touching every tenant differently: lists (some throttled),
    // actions (some duplicates, one on a missing machine), a bad body.
    for (n, t) in ["tenant-01", "tenant-02", "tenant-03"].into_iter().enumerate() {
        let token = env.token_for(t).await;
        for _ in 0..(n + 3) {
            env.get_as(&token, "/api/machines").await;
        }
        let ids = env.tenant_ids(t);
        for id in ids.iter().take(n + 1) {
            for _ in 0..2 {
                env.post_as(
                    &token,
                    &format!("/api/machines/{id}/runAntiVirusScan"),
                    json!({"Comment": "x", "ScanType": "Quick"}),
                )
                .await;
            }
        }
        env.post_as(
            &token,
            "/api/machines/0000/runAntiVirusScan",
            json!({"Comment": "x", "ScanType": "Quick"}),
        )
        .await;
        env.post_as(&token, &format!("/api/machines/{}/isolate", ids[0]), json!({"comment": "x"}))
            .await;
    }
    let stats = env.stats().await;
    assert_eq!(stats.tenants.len(), 3);
    assert!(stats.throttled > 0 && stats.actions_created > 0 && stats.duplicates_refused > 0);
    assert!(stats.bad_request > 0 && stats.not_found > 0 && stats.tokens_issued == 4);
    let totals = counters(&stats);
    for (name, total) in &totals {
        let sum: u64 = stats
            .tenants
            .values()
            .map(|t| counters(t).into_iter().find(|(k, _)| k == name).map_or(0, |c| c.1))
            .sum();
        assert_eq!(sum, *total, "{name}");
    }
    for (api, total) in &stats.by_api {
        let calls: u64 = stats.tenants.values().map(|t| t.by_api[api].calls).sum();
        let admitted: u64 = stats.tenants.values().map(|t| t.by_api[api].admitted).sum();
        let throttled: u64 = stats.tenants.values().map(|t| t.by_api[api].throttled).sum();
        assert_eq!(
            (calls, admitted, throttled),
            (total.calls, total.admitted, total.throttled),
            "{api}"
        );
    }
    // The hook narrowed to one tenant serves that tenant's counters.
    let one = send(env.http.get(format!("{}/_sim/stats?tenant=tenant-02", env.base))).await;
    let one: Stats = serde_json::from_value(one.json).unwrap();
    assert_eq!(one, stats.tenants["tenant-02"]);
    assert_eq!(stats.tenants["tenant-02"].actions_created, 2);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_take_their_tenant() {
    let env = Env::start_tenants(false, 2, config()).await;
    let b_id = env.tenant_ids("tenant-02")[3].clone();
    // Hooks on tenant data demand a tenant; an unknown one is not found.
    let r = env.hook(&format!("machines/{b_id}/offline")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("?tenant="), "{}", r.text);
    let r = env.hook(&format!("machines/{b_id}/offline?tenant=tenant-09")).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains("tenant-01, tenant-02"), "{}", r.text);
    // In another tenant the machine does not exist.
    let r = env.hook(&format!("machines/{b_id}/offline?tenant=tenant-01")).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let b = env.sim.tenants()[1].id.clone();
    let r = env.hook(&format!("machines/{b_id}/offline?tenant={b}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["healthStatus"], "Inactive");
    let b_fleet = env.sim.tenant_fleet("tenant-02").unwrap();
    assert_eq!(b_fleet[3].health_status.as_deref(), Some("Inactive"));
    // Tags set in tenant B are seen with B's token only.
    let tags = send(
        env.http
            .post(format!("{}/_sim/machines/{b_id}/tags?tenant=tenant-02", env.base))
            .json(&json!(["Customer-B"])),
    )
    .await;
    assert_eq!(tags.status, 200, "{}", tags.text);
    let token = env.token_for("tenant-02").await;
    let found = env.get_as(&token, "/api/machines/findbytag?tag=Customer-B").await;
    assert_eq!(found.json["value"].as_array().map(Vec::len), Some(1), "{}", found.text);
    let found = env.get("/api/machines/findbytag?tag=Customer-B").await;
    assert_eq!(found.json["value"], json!([]), "{}", found.text);
    let files = send(env.http.get(format!("{}/_sim/files", env.base))).await;
    assert_eq!(files.status, 400, "{}", files.text);
    let files = send(env.http.get(format!("{}/_sim/files?tenant=tenant-02", env.base))).await;
    let ids = env.tenant_ids("tenant-02");
    for listed in files.json.as_object().unwrap().values().flat_map(|v| v.as_array().unwrap()) {
        assert!(ids.contains(&listed.as_str().unwrap().to_string()), "{listed}");
    }
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_names_each_tenant_by_its_id() {
    let env = Env::start_tenants(false, 2, config()).await;
    let b = env.sim.tenants()[1].clone();
    for key in [&b.name, &b.id] {
        let url = format!("{}/{key}/v2.0/.well-known/openid-configuration", env.base);
        let r = send(env.http.get(url)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let issuer = r.json["issuer"].as_str().unwrap();
        assert!(issuer.contains(&b.id), "{issuer}");
    }
    // The token's issuer is the one discovery announces.
    let token = env.token_for(&b.name).await;
    let iss = Jws::parse(&token).unwrap().claim_str("iss").unwrap().to_string();
    assert!(iss.contains(&b.id), "{iss}");
    let url = format!("{}/tenant-03/v2.0/.well-known/openid-configuration", env.base);
    let r = send(env.http.get(url)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["error"], "invalid_tenant");
    // The v1 endpoint serves the tenant of its URL too.
    let v1 = send(env.http.post(format!("{}/{}/oauth2/token", env.base, b.id)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", SECRET),
        ("resource", "https://api.securitycenter.microsoft.com"),
    ]))
    .await;
    assert_eq!(v1.status, 200, "{}", v1.text);
    let v1 = v1.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(tid(&v1), b.id);
    assert_eq!(env.listed_ids(&v1).await, env.tenant_ids("tenant-02"));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_of_the_app_logs_in_to_every_tenant() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mssp-app".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let signer = SigningKey::from_der(&key.serialize_der()).unwrap();
    let cfg = SimConfig {
        client_id: Some("app".into()),
        identity: IdentityConfig {
            client_certificates: vec![cert.der().to_vec()],
            ..IdentityConfig::default()
        },
        ..config()
    };
    let env = Env::start_tenants(false, 3, cfg).await;
    let with_certificate = |tenant: String| {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", env.base);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let now = now.as_secs();
        let claims = json!({"aud": url, "iss": "app", "sub": "app", "nbf": now, "exp": now + 600,
            "jti": mdebulk::api::model::new_guid()});
        let Value::Object(header) = json!({"typ": "JWT", "x5t": jwt::x5t(cert.der())}) else {
            unreachable!()
        };
        let assertion = signer.sign(Algorithm::Rs256, header, &claims).unwrap();
        let req = env.http.post(url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", SCOPE),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &assertion),
        ]);
        async move { send(req).await }
    };
    for t in env.sim.tenants() {
        let r = with_certificate(t.name.clone()).await;
        assert_eq!(r.status, 200, "{}: {}", t.name, r.text);
        let token = r.json["access_token"].as_str().unwrap();
        assert_eq!(tid(token), t.id);
        assert_eq!(env.listed_ids(token).await, env.tenant_ids(&t.name));
    }
    // A tenant that withdrew its consent refuses the certificate as well.
    assert_eq!(env.hook("clients/app/revoke?tenant=tenant-02").await.status, 200);
    let refused = with_certificate("tenant-02".into()).await;
    assert_eq!(refused.json["error_codes"], json!([700016]), "{}", refused.text);
    assert_eq!(with_certificate("tenant-03".into()).await.status, 200);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_identity_lives_in_the_first_tenant() {
    let env = Env::start_tenants(false, 2, config()).await;
    let r = send(
        env.http
            .get(format!("{}/metadata/identity/oauth2/token", env.base))
            .query(&[
                ("api-version", "2018-02-01"),
                ("resource", "https://api.securitycenter.microsoft.com"),
            ])
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(tid(&token), env.sim.tenants()[0].id);
    assert_eq!(env.listed_ids(&token).await, env.tenant_ids("tenant-01"));
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tenants_nothing_changes() {
    let env = Env::start(config()).await;
    assert!(env.sim.tenants().is_empty());
    let stats = send(env.http.get(format!("{}/_sim/stats", env.base))).await;
    assert!(stats.json.get("tenants").is_none(), "{}", stats.text);
    let tenants = send(env.http.get(format!("{}/_sim/tenants", env.base))).await;
    assert_eq!(tenants.json, json!([]));
    // Any tenant name logs in, and every token sees the one fleet.
    for t in ["t1", "contoso.onmicrosoft.com", "tenant-01", "tenant-99"] {
        let token = env.token_for(t).await;
        assert_eq!(env.listed_ids(&token).await, env.ids(), "{t}");
    }
    assert_eq!(env.sim.tenant_fleet("anything").map(|f| f.len()), Some(100));
    // Hooks need no tenant.
    let id = env.ids()[2].clone();
    assert_eq!(env.hook(&format!("machines/{id}/offline")).await.status, 200);
    assert_eq!(env.stats().await.tenants.len(), 0);
    env.sim.shutdown().await;
}

/// Microsoft Graph's hunting serves the tenant of its token too: each
/// tenant's query sees its own devices and no other's.
#[tokio::test(flavor = "multi_thread")]
async fn hunting_queries_see_only_their_tenants_devices() {
    let env = Env::start_tenants(false, 2, config()).await;
    let graph = env.sim.graph_url();
    let mut tokens = Vec::new();
    // Both logins first, so the query of the first tenant follows the
    // second tenant's login: what it sees comes from its own token.
    for tenant in ["tenant-01", "tenant-02"] {
        let login =
            send(env.http.post(format!("{}/{tenant}/oauth2/v2.0/token", env.base)).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ]))
            .await;
        assert_eq!(login.status, 200, "{}", login.text);
        tokens.push((tenant, login.json["access_token"].as_str().unwrap().to_string()));
    }
    for (tenant, token) in tokens {
        let r = send(
            env.http
                .post(format!("{graph}/v1.0/security/runHuntingQuery"))
                .bearer_auth(&token)
                .json(&json!({"Query": "DeviceInfo | distinct DeviceId"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let mut seen: Vec<String> = r.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["DeviceId"].as_str().unwrap().to_string())
            .collect();
        seen.sort();
        let mut own = env.tenant_ids(tenant);
        own.sort();
        assert_eq!(seen, own, "{tenant}'s query sees its own fleet");
    }
}
