//! The simulator's Entra ID side over real loopback HTTP: every identifier
//! of the service principal in both login forms, tokens that are JWTs with
//! the requested `aud` and verify with the published keys, discovery,
//! certificate assertions, federated tokens, the managed-identity endpoints
//! and revocation; each error body checked against a documented or captured
//! Entra fixture (named at each check).

mod sim_support;

use aws_lc_rs::rsa::PublicKeyComponents;
use aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256;
use mdebulk::api::jwt::{self, Algorithm, Jws, SigningKey};
use mdebulk::sim::{FederatedCredential, IdentityConfig, SimConfig};
use serde_json::{Map, Value, json};
use sim_support::*;

/// Every identifier the login must accept, with its source (the same list
/// the simulator's docs give).
const IDENTIFIERS: [&str; 7] = [
    // Documented on the API's own pages.
    "https://api.securitycenter.microsoft.com",
    // Documented on the web-app and partner pages (v2 scope).
    "https://securitycenter.onmicrosoft.com/windowsatpservice",
    // Legacy, older Microsoft Threat Protection pages.
    "https://api.securitycenter.windows.com",
    // The newer API host, asked for by clients in production.
    "https://api.security.microsoft.com",
    // The app id of WindowsDefenderATP.
    "fc780465-2017-40d4-a0c5-307022471b92",
    // GCC, then GCC High and DoD.
    "https://api-gcc.securitycenter.microsoft.us",
    "https://api-gov.securitycenter.microsoft.us",
];

over_http_and_tls! {
    every_identifier_logs_in_both_ways_and_the_token_carries_it => identifiers_over_http, identifiers_over_tls;
    discovery_points_back_at_the_simulator => discovery_over_http, discovery_over_tls;
    certificate_assertions_are_checked_as_entra_checks_them => certificate_assertions_over_http, certificate_assertions_over_tls;
    federated_tokens_are_traded_under_a_federated_credential => federated_tokens_over_http, federated_tokens_over_tls;
    managed_identity_endpoints_in_their_own_shapes => managed_identity_over_http, managed_identity_over_tls;
}

/// The keys of an Entra error body, from the documented one (E-ERR).
fn entra_error_keys() -> Vec<String> {
    keys(&fixture("entra-token-error-70011-doc.json"))
}

/// Checks an Entra error: status, `error`, the AADSTS code first in the
/// description and in `error_codes`, and every field of the documented body.
fn assert_entra(r: &Reply, status: u16, error: &str, code: u64) {
    assert_eq!((r.status, r.json["error"].as_str()), (status, Some(error)), "{}", r.text);
    assert_eq!(keys(&r.json), entra_error_keys(), "{}", r.text);
    assert_eq!(r.json["error_codes"][0].as_u64(), Some(code), "{}", r.text);
    let description = r.json["error_description"].as_str().unwrap_or("");
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
}

/// A token request.
async fn login(env: &Env, path: &str, form: &[(&str, &str)]) -> Reply {
    send(env.http.post(format!("{}{path}", env.base)).form(form)).await
}

/// Claims of a JWT, verified against the keys the discovery document names.
async fn verified_claims(env: &Env, token: &str) -> Map<String, Value> {
    let doc = env.http.get(format!("{}/t1/v2.0/.well-known/openid-configuration", env.base));
    let doc = send(doc).await;
    let jwks = send(env.http.get(doc.json["jwks_uri"].as_str().unwrap())).await;
    let jws = Jws::parse(token).expect("a JWT");
    assert_eq!(jws.header_str("alg"), Some("RS256"));
    let key = &jwks.json["keys"][0];
    assert_eq!(jws.header_str("kid"), key["kid"].as_str());
    let components = PublicKeyComponents {
        n: jwt::b64url_decode(key["n"].as_str().unwrap()).unwrap(),
        e: jwt::b64url_decode(key["e"].as_str().unwrap()).unwrap(),
    };
    let (input, sig) = token.rsplit_once('.').unwrap();
    components
        .verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &jwt::b64url_decode(sig).unwrap())
        .expect("the token verifies with the published key");
    jws.claims
}

async fn every_identifier_logs_in_both_ways_and_the_token_carries_it(tls: bool) {
    let env = Env::start_over(tls, config()).await;
    for id in IDENTIFIERS {
        let scope = format!("{id}/.default");
        let v2 = login(
            &env,
            "/t1/oauth2/v2.0/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("scope", &scope),
            ],
        )
        .await;
        assert_eq!(v2.status, 200, "{id}: {}", v2.text);
        assert_eq!(keys(&v2.json), keys(&fixture("token-response.json")), "{id}");
        assert_eq!(v2.json["ext_expires_in"], v2.json["expires_in"]);
        let v1 = login(
            &env,
            "/t1/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("resource", id),
            ],
        )
        .await;
        assert_eq!(v1.status, 200, "{id}: {}", v1.text);
        for k in keys(&fixture("entra-v1-token-200.json")) {
            assert!(v1.json.get(&k).is_some_and(Value::is_string), "{k} in {}", v1.text);
        }
        for reply in [&v2, &v1] {
            let token = reply.json["access_token"].as_str().unwrap();
            let claims = verified_claims(&env, token).await;
            assert_eq!(claims["aud"], id, "the token's audience is the identifier asked for");
            assert_eq!(claims["appid"], "app");
            assert_eq!(claims["ver"], "1.0");
            assert!(claims["roles"].as_array().unwrap().iter().any(|r| r == "Machine.Isolate"));
            let api = env.http.get(format!("{}/api/machines?$top=1", env.base)).bearer_auth(token);
            assert_eq!(send(api).await.status, 200, "the API takes a token for {id}");
        }
    }
    // A client secret in a Basic header (RFC 6749 §2.3.1) works too.
    let basic = env
        .http
        .post(format!("{}/t1/oauth2/v2.0/token", env.base))
        .basic_auth("app", Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)]);
    assert_eq!(send(basic).await.status, 200);
    // Tenant-less authorities refuse an app-only grant.
    for tenant in ["common", "organizations", "consumers"] {
        let r = login(
            &env,
            &format!("/{tenant}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("scope", SCOPE),
            ],
        )
        .await;
        assert_entra(&r, 400, "invalid_request", 9001023);
    }
}

async fn discovery_points_back_at_the_simulator(tls: bool) {
    let env = Env::start_over(tls, SimConfig { tenant: Some("t1".into()), ..config() }).await;
    let get = |path: &str| send(env.http.get(format!("{}{path}", env.base)));
    let v2 = get("/t1/v2.0/.well-known/openid-configuration").await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    // Every field of the documented excerpt is there.
    for k in keys(&fixture("entra-oidc-discovery-v2-truncated.json")) {
        assert!(v2.json.get(&k).is_some(), "{k}");
    }
    assert_eq!(v2.json["token_endpoint"], format!("{}/t1/oauth2/v2.0/token", env.base));
    assert_eq!(v2.json["jwks_uri"], format!("{}/t1/discovery/v2.0/keys", env.base));
    assert!(v2.json["issuer"].as_str().unwrap().starts_with(&env.base));
    let methods = &v2.json["token_endpoint_auth_methods_supported"];
    assert!(methods.as_array().unwrap().iter().any(|m| m == "private_key_jwt"));
    let v1 = get("/T1/.well-known/openid-configuration").await;
    assert_eq!(v1.json["token_endpoint"], format!("{}/T1/oauth2/token", env.base));
    let common = get("/common/v2.0/.well-known/openid-configuration").await;
    assert_eq!(common.status, 200);
    assert!(common.json["issuer"].as_str().unwrap().contains("{tenantid}"));
    // An unknown tenant as Entra answers it (captured: entra-error-90002-captured.json).
    let unknown = get("/t2/v2.0/.well-known/openid-configuration").await;
    assert_eq!((unknown.status, unknown.json["error"].as_str()), (400, Some("invalid_tenant")));
    assert_eq!(keys(&unknown.json), keys(&fixture("entra-error-90002-captured.json")));
    assert!(unknown.json["error_description"].as_str().unwrap().starts_with("AADSTS90002: "));
    // MSAL's instance discovery.
    let auth = format!("{}/t1/oauth2/v2.0/authorize", env.base);
    let inst = send(
        env.http
            .get(format!("{}/common/discovery/instance", env.base))
            .query(&[("api-version", "1.1"), ("authorization_endpoint", &auth)]),
    )
    .await;
    assert_eq!(inst.status, 200, "{}", inst.text);
    assert_eq!(
        inst.json["tenant_discovery_endpoint"],
        format!("{}/t1/v2.0/.well-known/openid-configuration", env.base)
    );
    assert!(inst.json["metadata"][0]["aliases"].is_array());
    let other = send(env.http.get(format!("{}/common/discovery/instance", env.base)).query(&[
        ("api-version", "1.1"),
        ("authorization_endpoint", "https://login.example.com/t1/oauth2/v2.0/authorize"),
    ]))
    .await;
    assert_entra(&other, 400, "invalid_instance", 50049);
    let s = env.stats().await;
    assert_eq!(s.discovery_requests, 6, "each discovery request is counted");
}

/// A certificate with an RSA key, as a tenant registers one.
struct Cert {
    der: Vec<u8>,
    pem: String,
    key: SigningKey,
}

fn rsa_cert(name: &str) -> Cert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert =
        rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
    Cert {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key: SigningKey::from_der(&key.serialize_der()).unwrap(),
    }
}

/// A signed JWT with `header` fields (besides `alg`) and `claims`.
fn signed(key: &SigningKey, alg: Algorithm, header: Value, claims: Value) -> String {
    let Value::Object(header) = header else { panic!("header object") };
    key.sign(alg, header, &claims).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn certificate_assertions_are_checked_as_entra_checks_them(tls: bool) {
    let registered = rsa_cert("app-cert");
    let stranger = rsa_cert("other-cert");
    assert!(registered.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let env = Env::start_over(
        tls,
        SimConfig {
            client_id: Some("app".into()),
            identity: IdentityConfig {
                client_certificates: vec![registered.der.clone()],
                ..IdentityConfig::default()
            },
            ..config()
        },
    )
    .await;
    // `Env::start` logged in with a secret; the app's client id is `app`.
    let url = format!("{}/t1/oauth2/v2.0/token", env.base);
    let claims = |jti: &str| json!({"aud": url, "iss": "app", "sub": "app", "jti": jti, "nbf": now(), "exp": now() + 600});
    let post = |assertion: String| {
        let req = env.http.post(&url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("scope", SCOPE),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &assertion),
        ]);
        async move { send(req).await }
    };
    let x5t = jwt::x5t(&registered.der);
    let s256 = jwt::x5t_s256(&registered.der);
    // The header shapes of the older (RS256, x5t) and current (PS256,
    // x5t#S256) documentation, and x5c alone.
    let older = fixture("entra-client-assertion-header-rs256-older.json");
    let current = fixture("entra-client-assertion-header-ps256.json");
    for (alg, header) in [
        (Algorithm::Rs256, json!({"typ": older["typ"], "x5t": x5t})),
        (Algorithm::Ps256, json!({"typ": current["typ"], "x5t#S256": s256})),
        (Algorithm::Rs256, json!({"typ": "JWT", "x5c": [jwt::b64_std(&registered.der)]})),
        // MSAL for Python pads its thumbprints (`=`); Entra takes them.
        (Algorithm::Ps256, json!({"typ": "JWT", "x5t#S256": format!("{s256}=")})),
    ] {
        let jti = mdebulk::api::model::new_guid();
        let r = post(signed(&registered.key, alg, header, claims(&jti))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let token = r.json["access_token"].as_str().unwrap();
        assert_eq!(verified_claims(&env, token).await["appidacr"], "2");
    }
    // The claims of the documented example are the ones we send.
    let mut doc_claims = keys(&fixture("entra-client-assertion-claims-current.json"));
    doc_claims.sort();
    let mut ours = keys(&claims("x"));
    ours.sort();
    assert_eq!(ours, doc_claims);

    let rs =
        |header: Value, claims: Value| signed(&registered.key, Algorithm::Rs256, header, claims);
    let head = json!({"typ": "JWT", "x5t": x5t});
    let reused = mdebulk::api::model::new_guid();
    assert_eq!(post(rs(head.clone(), claims(&reused))).await.status, 200);
    let cases: Vec<(&str, String, u64)> = vec![
        ("a replayed jti", rs(head.clone(), claims(&reused)), 50027),
        (
            "a key other than the registered certificate's",
            signed(&stranger.key, Algorithm::Rs256, head.clone(), claims("k")),
            700027,
        ),
        (
            "an unregistered certificate",
            signed(
                &stranger.key,
                Algorithm::Rs256,
                json!({"x5t": jwt::x5t(&stranger.der)}),
                claims("u"),
            ),
            700027,
        ),
        ("no key named", rs(json!({"typ": "JWT"}), claims("n")), 700027),
        (
            "an expired assertion",
            rs(
                head.clone(),
                json!({"aud": url, "iss": "app", "sub": "app", "jti": "e", "nbf": now() - 3600, "exp": now() - 1800}),
            ),
            700024,
        ),
        (
            "another audience",
            rs(
                head.clone(),
                json!({"aud": "https://login.microsoftonline.com/t1/oauth2/v2.0/token", "iss": "app", "sub": "app", "jti": "a", "exp": now() + 600}),
            ),
            50027,
        ),
        (
            "sub other than iss",
            rs(
                head.clone(),
                json!({"aud": url, "iss": "app", "sub": "someone", "jti": "s", "exp": now() + 600}),
            ),
            50048,
        ),
        ("not a JWT", "not-a-jwt".to_string(), 50027),
    ];
    for (what, assertion, code) in cases {
        let r = post(assertion).await;
        // Fields as documented (entra-token-error-70011-doc.json).
        assert_entra(&r, 401, "invalid_client", code);
        assert!(!r.text.contains("BEGIN"), "{what}: no key material in errors");
    }
    // The assertion without its type.
    let r = send(env.http.post(&url).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("scope", SCOPE),
        ("client_assertion", &rs(head.clone(), claims("t"))),
    ]))
    .await;
    assert_entra(&r, 400, "invalid_request", 900144);
    // A revoked app's certificate is gone.
    env.sim.revoke_client("app");
    let r = post(rs(head.clone(), claims("r"))).await;
    assert_entra(&r, 401, "invalid_client", 700027);
}

async fn federated_tokens_are_traded_under_a_federated_credential(tls: bool) {
    let issuer_cert = rsa_cert("issuer");
    let other = rsa_cert("other");
    let iss = "https://oidc.example.test/cluster-1";
    let sub = "system:serviceaccount:ir:mdebulk";
    let env = Env::start_over(
        tls,
        SimConfig {
            identity: IdentityConfig {
                federated: vec![FederatedCredential {
                    issuer: iss.into(),
                    subject: sub.into(),
                    certificate: issuer_cert.der.clone(),
                }],
                ..IdentityConfig::default()
            },
            ..config()
        },
    )
    .await;
    let token = |key: &SigningKey, claims: Value| {
        signed(key, Algorithm::Rs256, json!({"typ": "JWT"}), claims)
    };
    let good = json!({"iss": iss, "sub": sub, "aud": ["api://AzureADTokenExchange"], "exp": now() + 3600, "iat": now()});
    let post = |assertion: String| {
        let req = env.http.post(format!("{}/t1/oauth2/v2.0/token", env.base)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-2222-3333-4444-555555555555"),
            ("scope", SCOPE),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &assertion),
        ]);
        async move { send(req).await }
    };
    let first = token(&issuer_cert.key, good.clone());
    for _ in 0..2 {
        // The same projected token may be presented again.
        let r = post(first.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    for (claims, key, status, error, code) in [
        (
            with("iss", json!("https://elsewhere.test")),
            &issuer_cert.key,
            400,
            "invalid_request",
            700211,
        ),
        (
            with("sub", json!("system:serviceaccount:ir:other")),
            &issuer_cert.key,
            400,
            "invalid_request",
            700213,
        ),
        (with("aud", json!("api://Other")), &issuer_cert.key, 400, "invalid_request", 700212),
        (with("exp", json!(now() - 3600)), &issuer_cert.key, 401, "invalid_client", 700024),
        (good.clone(), &other.key, 401, "invalid_client", 50027),
    ] {
        assert_entra(&post(token(key, claims)).await, status, error, code);
    }
}

async fn managed_identity_endpoints_in_their_own_shapes(tls: bool) {
    let user = "5e29463d-71da-4fe0-8e69-999b57db23b0";
    let env = Env::start_over(
        tls,
        SimConfig {
            identity: IdentityConfig {
                managed_identities: vec![user.into()],
                ..IdentityConfig::default()
            },
            ..config()
        },
    )
    .await;
    let resource = "https://api.securitycenter.microsoft.com";
    let imds = |query: Vec<(&'static str, String)>, metadata: bool| {
        let mut req =
            env.http.get(format!("{}/metadata/identity/oauth2/token", env.base)).query(&query);
        if metadata {
            req = req.header("Metadata", "true");
        }
        async move { send(req).await }
    };
    let base =
        || vec![("api-version", "2018-02-01".to_string()), ("resource", resource.to_string())];
    let system = imds(base(), true).await;
    assert_eq!(system.status, 200, "{}", system.text);
    assert_eq!(keys(&system.json), keys(&fixture("imds-token-200.json")));
    for k in ["expires_in", "expires_on", "not_before"] {
        assert!(system.json[k].is_string(), "IMDS sends {k} as a string");
    }
    assert_eq!(system.json["refresh_token"], "");
    let token = system.json["access_token"].as_str().unwrap();
    let claims = verified_claims(&env, token).await;
    assert_eq!(claims["aud"], resource);
    let api = env.http.get(format!("{}/api/machines?$top=1", env.base)).bearer_auth(token);
    assert_eq!(send(api).await.status, 200);
    let mut by_id = base();
    by_id.push(("client_id", user.to_string()));
    let assigned = imds(by_id, true).await;
    assert_eq!(assigned.status, 200);
    let claims = verified_claims(&env, assigned.json["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["appid"], user, "the user-assigned identity's token");
    // Errors as the IMDS page documents them (imds-error-doc.json).
    let error_keys = keys(&fixture("imds-error-doc.json"));
    let no_header = imds(base(), false).await;
    assert_eq!(
        (no_header.status, no_header.json["error"].as_str()),
        (400, Some("bad_request_102"))
    );
    assert_eq!(keys(&no_header.json), error_keys);
    assert_eq!(no_header.json, fixture("imds-error-doc.json"));
    let mut unknown = base();
    unknown.push(("client_id", "00000000-0000-0000-0000-000000000009".to_string()));
    let r = imds(unknown, true).await;
    assert_eq!((r.status, r.json["error"].as_str()), (400, Some("invalid_request")));
    assert_eq!(keys(&r.json), error_keys);
    let vault = imds(
        vec![("api-version", "2018-02-01".into()), ("resource", "https://vault.azure.net".into())],
        true,
    )
    .await;
    assert_eq!((vault.status, vault.json["error"].as_str()), (400, Some("invalid_resource")));
    assert!(vault.json["error_description"].as_str().unwrap().starts_with("AADSTS50001: "));
    // A managed identity gets a Graph token too (for --query), for Graph
    // alone.
    let graph = imds(
        vec![
            ("api-version", "2018-02-01".into()),
            ("resource", "https://graph.microsoft.com".into()),
        ],
        true,
    )
    .await;
    assert_eq!(graph.status, 200, "{}", graph.text);
    let claims = Jws::parse(graph.json["access_token"].as_str().unwrap()).unwrap().claims;
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["roles"], serde_json::json!(["ThreatHunting.Read.All"]));

    // App Service / Functions.
    let msi = |version: &str, header: Option<(&str, &str)>| {
        let mut req = env
            .http
            .get(format!("{}/MSI/token", env.base))
            .query(&[("api-version", version), ("resource", resource)]);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        async move { send(req).await }
    };
    let app = msi("2019-08-01", Some(("X-IDENTITY-HEADER", "sim-identity-header"))).await;
    assert_eq!(app.status, 200, "{}", app.text);
    assert_eq!(keys(&app.json), keys(&fixture("appservice-token-200.json")));
    assert!(app.json["expires_on"].is_string());
    assert_eq!(msi("2019-08-01", Some(("X-IDENTITY-HEADER", "wrong"))).await.status, 401);
    assert_eq!(msi("2019-08-01", None).await.status, 401);
    let legacy = msi("2017-09-01", Some(("secret", "sim-identity-header"))).await;
    assert_eq!(legacy.status, 200, "{}", legacy.text);
    let date = legacy.json["expires_on"].as_str().unwrap();
    assert!(date.ends_with(" +00:00") && date.contains('/'), "a date, not a number: {date}");

    let s = env.stats().await;
    assert_eq!(s.managed_identity_requests, 10, "each managed-identity request is counted");
    // Revoking the identity refuses its next token and the ones it has.
    env.sim.revoke_client(user);
    let mut by_id = base();
    by_id.push(("client_id", user.to_string()));
    assert_eq!(imds(by_id, true).await.status, 400);
    let old = env
        .http
        .get(format!("{}/api/machines?$top=1", env.base))
        .bearer_auth(assigned.json["access_token"].as_str().unwrap());
    assert_eq!(send(old).await.status, 401);
}
