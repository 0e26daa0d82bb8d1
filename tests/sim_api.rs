//! The simulator over real loopback HTTP: tokens, 401/403, every action's
//! reply and validation error, the check order, duplicates and the action
//! lifecycle, checked against the reference and tests/fixtures.

mod sim_support;

use std::time::Duration;

use mdebulk::api::model::{Entity, MachineAction, TokenResponse};
use mdebulk::sim::SimConfig;
use serde_json::{Value, json};
use sim_support::*;

#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_in_both_forms() {
    let env = Env::start(config()).await;
    let v2 = send(
        env.http.post(format!("{}/contoso.onmicrosoft.com/oauth2/v2.0/token", env.base)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-2222-3333-4444-555555555555"),
            ("client_secret", "s3cret"),
            ("scope", "https://securitycenter.onmicrosoft.com/windowsatpservice/.default"),
        ]),
    )
    .await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    assert_eq!(keys(&v2.json), keys(&fixture("token-response.json")));
    assert_eq!(v2.json["token_type"], "Bearer");
    assert_eq!(v2.json["expires_in"], 3599);
    assert_eq!(v2.json["ext_expires_in"], 3599);
    let v1 = send(env.http.post(format!("{}/t1/oauth2/token", env.base)).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", "s3cret"),
        ("resource", "https://api.securitycenter.microsoft.com"),
    ]))
    .await;
    assert_eq!(v1.status, 200, "{}", v1.text);
    assert_eq!(v1.json["expires_in"], "3599", "the v1 endpoint sends strings");
    assert_eq!(v1.json["resource"], "https://api.securitycenter.microsoft.com");
    for body in [&v2.text, &v1.text] {
        let t: TokenResponse = serde_json::from_str(body).unwrap();
        assert_eq!(t.expires_in, 3599);
        let r = send(
            env.http.get(format!("{}/api/machines?$top=1", env.base)).bearer_auth(&t.access_token),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let s = env.stats().await;
    assert_eq!((s.token_requests, s.tokens_issued), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_errors_use_the_oauth2_shape() {
    let env = Env::start(SimConfig {
        client_id: Some("app".into()),
        client_secret: Some(SECRET.into()),
        tenant: Some("t1".into()),
        ..config()
    })
    .await;
    let post = |path: &str, form: Vec<(&'static str, &'static str)>| {
        let req = env.http.post(format!("{}{path}", env.base)).form(&form);
        async move { send(req).await }
    };
    let good = vec![
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ];
    let with = |k: &'static str, v: &'static str| {
        let mut f: Vec<_> = good.iter().copied().filter(|(key, _)| *key != k).collect();
        if !v.is_empty() {
            f.push((k, v));
        }
        f
    };
    let v2 = "/t1/oauth2/v2.0/token";
    // Each case with the AADSTS code Entra answers it with (mde-api-addendum.md §4.4).
    for (form, path, status, error, aadsts) in [
        (with("grant_type", "password"), v2, 400, "unsupported_grant_type", 70003),
        (with("grant_type", ""), v2, 400, "invalid_request", 900144),
        (with("client_id", ""), v2, 400, "invalid_request", 900144),
        (with("client_id", "other"), v2, 400, "unauthorized_client", 700016),
        (with("client_secret", "wrong"), v2, 401, "invalid_client", 7000215),
        (with("client_secret", ""), v2, 401, "invalid_client", 7000216),
        // Graph is a known resource now (runHuntingQuery); Key Vault is not.
        (with("scope", "https://vault.azure.net/.default"), v2, 400, "invalid_scope", 70011),
        (
            with("scope", "https://api.securitycenter.microsoft.com"),
            v2,
            400,
            "invalid_scope",
            1002012,
        ),
        (with("scope", ""), v2, 400, "invalid_request", 900144),
        (good.clone(), "/t2/oauth2/v2.0/token", 400, "invalid_request", 90002),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("resource", "https://vault.azure.net"),
            ],
            "/t1/oauth2/token",
            400,
            "invalid_resource",
            500011,
        ),
    ] {
        let r = post(path, form.clone()).await;
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (status, Some(error)),
            "{form:?}: {}",
            r.text
        );
        // Every field Entra writes, in its order (a documented body and a
        // captured one agree on them).
        assert_eq!(keys(&r.json), keys(&fixture("entra-token-error-70011-doc.json")), "{}", r.text);
        assert_eq!(keys(&r.json), keys(&fixture("entra-token-error-7000215-captured.json")));
        let code = r.json["error_codes"][0].as_u64().unwrap();
        assert_eq!(code, aadsts, "{form:?}");
        let description = r.json["error_description"].as_str().unwrap();
        assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
        let trace = r.json["trace_id"].as_str().unwrap();
        assert_eq!(trace.len(), 36, "a GUID: {trace}");
        for line in [
            format!("\r\nTrace ID: {trace}"),
            format!("\r\nCorrelation ID: {}", r.json["correlation_id"].as_str().unwrap()),
            format!("\r\nTimestamp: {}", r.json["timestamp"].as_str().unwrap()),
        ] {
            assert!(description.contains(&line), "{line:?} in {description:?}");
        }
        let ts = r.json["timestamp"].as_str().unwrap();
        assert!(ts.len() == 20 && &ts[10..11] == " " && ts.ends_with('Z'), "{ts}");
        assert_eq!(
            r.json["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
        assert!(!r.text.contains(SECRET), "the secret never appears in replies");
    }
    assert_eq!(post(v2, good.clone()).await.status, 200);
    assert_eq!(env.stats().await.tokens_issued, 2, "Env::start's token and the good one");
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_for_missing_unknown_and_expired_tokens() {
    let env = Env::start(SimConfig { token_ttl: Duration::from_secs(1), ..config() }).await;
    let url = format!("{}/api/machines", env.base);
    let cases = [
        env.http.get(&url),
        env.http.get(&url).header("Authorization", "Basic YTpi"),
        env.http.get(&url).header("Authorization", "Bearer"),
        env.http.get(&url).bearer_auth("not-a-token"),
    ];
    for req in cases {
        let r = send(req).await;
        assert_error(&r, 401, "Unauthorized");
        assert_eq!(r.www_authenticate.as_deref(), Some("Bearer"));
    }
    assert_eq!(env.get("/api/machines?$top=1").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(&env.get("/api/machines?$top=1").await, 401, "Unauthorized");
    let id = &env.ids()[0];
    let r = env.action(id, "isolate", json!({"Comment": "x"})).await;
    assert_error(&r, 401, "Unauthorized");
    let s = env.stats().await;
    assert_eq!(s.unauthorized, 6);
    assert_eq!(s.by_api["GET machines"].admitted, 1, "401s consume no quota");
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_by_roles() {
    let env = Env::start(SimConfig { roles: vec!["Machine.Scan".into()], ..config() }).await;
    let id = env.ids()[env.windows_online()].clone();
    for (segment, body) in [
        ("isolate", json!({"Comment": "x"})),
        ("unisolate", json!({"Comment": "x"})),
        ("offboard", json!({"Comment": "x"})),
        ("StopAndQuarantineFile", json!({"Comment": "x", "Sha1": SHA1})),
        ("collectInvestigationPackage", json!({"Comment": "x"})),
        ("restrictCodeExecution", json!({"Comment": "x"})),
    ] {
        assert_error(&env.action(&id, segment, body).await, 403, "Forbidden");
    }
    assert_error(&env.get("/api/machines").await, 403, "Forbidden");
    assert_error(&env.get("/api/machineactions").await, 403, "Forbidden");
    let scan =
        env.action(&id, "runAntiVirusScan", json!({"Comment": "x", "ScanType": "Quick"})).await;
    assert_eq!(scan.status, 201, "{}", scan.text);
    let action = scan.json["id"].as_str().unwrap();
    assert_error(&env.get(&format!("/api/machineactions/{action}")).await, 403, "Forbidden");
    let cancel = env.post(&format!("/api/machineactions/{action}/cancel"), json!({})).await;
    assert_eq!(cancel.status, 200, "any action permission may cancel: {}", cancel.text);
    assert_eq!(env.stats().await.forbidden, 9);

    let reader =
        Env::start(SimConfig { roles: vec!["Machine.ReadWrite.All".into()], ..config() }).await;
    assert_eq!(reader.get("/api/machines?$top=1").await.status, 200);
    let r = reader.action(&reader.ids()[0], "isolate", json!({"Comment": "x"})).await;
    assert_error(&r, 403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn created_actions_carry_every_real_key_in_order() {
    let env = Env::start(SimConfig { app_name: "Customer App".into(), ..config() }).await;
    let fleet = env.sim.fleet();
    let i = env.windows_online();
    let m = &fleet[i];
    let real = fixture("machineaction-offboard-201.json");
    let r = env.action(&m.id, "offboard", json!({"Comment": "Offboard machine by postman"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(keys(&r.json), keys(&real), "every key of the real 201, in order");
    assert!(r.content_type.starts_with("application/json"));
    let host = env.sim.addr().to_string();
    assert_eq!(
        r.json["@odata.context"],
        format!("http://{host}/api/$metadata#MachineActions/$entity")
    );
    for k in [
        "type",
        "title",
        "requestor",
        "requestorComment",
        "status",
        "cancellationRequestor",
        "cancellationComment",
        "cancellationDateTimeUtc",
        "errorHResult",
        "scope",
        "externalId",
        "requestSource",
        "relatedFileInfo",
        "commands",
        "troubleshootInfo",
    ] {
        assert_eq!(r.json[k], real[k], "{k}");
    }
    assert_eq!(r.json["machineId"], m.id.as_str());
    assert_eq!(r.json["computerDnsName"], m.computer_dns_name.as_deref().unwrap());
    let id = r.json["id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_lowercase());
    let created = r.json["creationDateTimeUtc"].as_str().unwrap();
    let updated = r.json["lastUpdateDateTimeUtc"].as_str().unwrap();
    for t in [created, updated] {
        assert_eq!(t.len(), 28, "7 fractional digits and Z: {t}");
        assert!(mdebulk::api::time::parse_utc(t).is_some());
    }
    assert!(updated > created, "a few ticks later");
    let parsed: Entity<MachineAction> = serde_json::from_str(&r.text).unwrap();
    assert_eq!(parsed.value.kind, "Offboard");

    // Scope and relatedFileInfo per action, and the /api/v1.0 prefix.
    let ids = env.ids();
    let online: Vec<&String> = fleet
        .iter()
        .zip(&ids)
        .filter(|(m, _)| {
            m.os_platform.as_deref().unwrap().starts_with("Windows")
                && m.health_status.as_deref() == Some("Active")
        })
        .map(|(_, id)| id)
        .collect();
    for (n, (segment, body, ty, scope)) in [
        ("isolate", json!({"Comment": "c"}), "Isolate", json!("Full")),
        (
            "isolate",
            json!({"Comment": "c", "IsolationType": "Selective"}),
            "Isolate",
            json!("Selective"),
        ),
        (
            "isolate",
            json!({"Comment": "c", "IsolationType": "UnManagedDevice"}),
            "Isolate",
            json!("UnManagedDevice"),
        ),
        ("unisolate", json!({"Comment": "c"}), "Unisolate", Value::Null),
        (
            "runAntiVirusScan",
            json!({"Comment": "c", "ScanType": "Full"}),
            "RunAntiVirusScan",
            json!("Full"),
        ),
        (
            "collectInvestigationPackage",
            json!({"Comment": "c"}),
            "CollectInvestigationPackage",
            Value::Null,
        ),
        ("restrictCodeExecution", json!({"Comment": "c"}), "RestrictCodeExecution", Value::Null),
        (
            "unrestrictCodeExecution",
            json!({"Comment": "c"}),
            "UnrestrictCodeExecution",
            Value::Null,
        ),
        (
            "StopAndQuarantineFile",
            json!({"Comment": "c", "Sha1": SHA1}),
            "StopAndQuarantineFile",
            Value::Null,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = env.post(&format!("/api/v1.0/machines/{}/{segment}", online[n + 1]), body).await;
        assert_eq!(r.status, 201, "{segment}: {}", r.text);
        assert_eq!(r.json["type"], ty);
        assert_eq!(r.json["scope"], scope, "{segment}");
        assert_eq!(r.json["status"], "Pending");
        let file = if ty == "StopAndQuarantineFile" {
            json!({"fileIdentifier": SHA1, "fileIdentifierType": "Sha1"})
        } else {
            Value::Null
        };
        assert_eq!(r.json["relatedFileInfo"], file);
    }
    assert_eq!(env.stats().await.actions_created, 10);

    // The context follows the Host header the client used.
    let r = send(
        env.http
            .get(format!("{}/api/machineactions/{id}", env.base))
            .bearer_auth(&env.token)
            .header("Host", "api.securitycenter.microsoft.com"),
    )
    .await;
    assert_eq!(
        r.json["@odata.context"],
        "http://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors_and_not_found() {
    let env = Env::start(config()).await;
    let fleet = env.sim.fleet();
    let win = fleet[env.windows_online()].id.clone();
    let linux =
        fleet.iter().find(|m| m.os_platform.as_deref() == Some("Linux")).unwrap().id.clone();
    let mac = fleet.iter().find(|m| m.os_platform.as_deref() == Some("macOS")).unwrap().id.clone();
    let unknown = "0000000000000000000000000000000000000000";
    for (id, segment, body, status, code) in [
        (&win, "isolate", json!({"comment": "x"}), 400, "InvalidRequestBody"),
        (
            &win,
            "isolate",
            json!({"Comment": "x", "isolationType": "Full"}),
            400,
            "InvalidRequestBody",
        ),
        (
            &win,
            "isolate",
            json!({"Comment": "x", "IsolationType": "Partial"}),
            400,
            "InvalidRequestBody",
        ),
        (&win, "isolate", json!({"Comment": 42}), 400, "InvalidRequestBody"),
        (&win, "isolate", json!(["Comment"]), 400, "InvalidRequestBody"),
        (&win, "isolate", json!({}), 400, "MissingRequiredParameter"),
        (&win, "isolate", json!({"Comment": ""}), 400, "MissingRequiredParameter"),
        (&win, "runAntiVirusScan", json!({"Comment": "x"}), 400, "MissingRequiredParameter"),
        (
            &win,
            "runAntiVirusScan",
            json!({"Comment": "x", "ScanType": "quick"}),
            400,
            "InvalidRequestBody",
        ),
        (&win, "StopAndQuarantineFile", json!({"Comment": "x"}), 400, "MissingRequiredParameter"),
        (
            &win,
            "StopAndQuarantineFile",
            json!({"Comment": "x", "Sha1": "abc"}),
            400,
            "InvalidHashValue",
        ),
        (&win, "StopAndQuarantineFile", json!({"Sha1": "abc"}), 400, "MissingRequiredParameter"),
        (&win, "offboard", json!({"Comment": "x", "Sha1": SHA1}), 400, "InvalidRequestBody"),
        (&linux, "offboard", json!({"Comment": "x"}), 400, "OsPlatformNotSupported"),
        (&mac, "offboard", json!({"Comment": "x"}), 400, "OsPlatformNotSupported"),
        (
            &linux,
            "StopAndQuarantineFile",
            json!({"Comment": "x", "Sha1": SHA1}),
            400,
            "OsPlatformNotSupported",
        ),
        (
            &linux,
            "StopAndQuarantineFile",
            json!({"Comment": "x", "Sha1": "zz"}),
            400,
            "InvalidHashValue",
        ),
        (&unknown.to_string(), "isolate", json!({"Comment": "x"}), 404, "ResourceNotFound"),
        (&unknown.to_string(), "isolate", json!({"comment": "x"}), 400, "InvalidRequestBody"),
        (
            &"host-00001.contoso.test".to_string(),
            "isolate",
            json!({"Comment": "x"}),
            404,
            "ResourceNotFound",
        ),
    ] {
        let r = env.action(id, segment, body.clone()).await;
        assert_error(&r, status, code);
        assert!(r.json["error"]["message"].is_string(), "{segment} {body}");
    }
    let r = env.action(unknown, "isolate", json!({"Comment": "x"})).await;
    let doc = fixture("error-resourcenotfound.json");
    assert_eq!(doc["error"]["message"], "Machine 123123123 was not found");
    assert_eq!(r.json["error"]["message"], format!("Machine {unknown} was not found"));
    let missing = env.action(&win, "isolate", json!({"Comment": null})).await;
    assert_eq!(missing.json["error"]["message"], "Parameter Comment is missing");
    // Linux and macOS accept the other actions.
    assert_eq!(env.action(&linux, "isolate", json!({"Comment": "x"})).await.status, 201);
    assert_eq!(
        env.action(&mac, "runAntiVirusScan", json!({"Comment": "x", "ScanType": "Quick"}))
            .await
            .status,
        201
    );

    // A non-JSON body.
    let r = send(
        env.http
            .post(format!("{}/api/machines/{win}/isolate", env.base))
            .bearer_auth(&env.token)
            .body("Comment=x"),
    )
    .await;
    assert_error(&r, 400, "InvalidRequestBody");

    // Unknown routes: unsupported action, wrong method, other prefixes.
    for (method, path) in [
        ("POST", format!("/api/machines/{win}/runliveresponse")),
        ("GET", format!("/api/machines/{win}/isolate")),
        ("POST", "/api/machines".to_string()),
        ("GET", "/api/v2.0/machines".to_string()),
        ("GET", "/api/alerts".to_string()),
        ("GET", "/".to_string()),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = send(
            env.http
                .request(m, format!("{}{path}", env.base))
                .bearer_auth(&env.token)
                .json(&json!({"Comment": "x"})),
        )
        .await;
        assert_error(&r, 404, "NotFound");
    }
    // The route is checked before the token.
    let r = send(env.http.get(format!("{}/api/alerts", env.base))).await;
    assert_error(&r, 404, "NotFound");
    let s = env.stats().await;
    assert_eq!(s.bad_request, 20);
    assert_eq!(s.not_found, 3 + 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_order_and_what_consumes_quota() {
    let env = Env::start(SimConfig { limits: vec!["2/60s".parse().unwrap()], ..config() }).await;
    let win = env.ids()[env.windows_online()].clone();
    // 401 comes before the body, and consumes nothing.
    for _ in 0..5 {
        let r = send(
            env.http
                .post(format!("{}/api/machines/{win}/isolate", env.base))
                .json(&json!({"comment": 1})),
        )
        .await;
        assert_error(&r, 401, "Unauthorized");
    }
    // A call that fails validation consumes quota ...
    assert_error(
        &env.action(&win, "isolate", json!({"comment": "x"})).await,
        400,
        "InvalidRequestBody",
    );
    assert_error(
        &env.action("ffff", "isolate", json!({"Comment": "x"})).await,
        404,
        "ResourceNotFound",
    );
    // ... so the next one, however valid, is refused, before its body is looked at.
    let r = env.action(&win, "isolate", json!({"comment": "x"})).await;
    assert_error(&r, 429, "TooManyRequests");
    let s = env.stats().await;
    let api = &s.by_api["isolate"];
    assert_eq!((api.calls, api.admitted, api.throttled), (8, 2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_duplicate_submissions() {
    let env = Env::start(SimConfig { settle: Duration::from_millis(300), ..config() }).await;
    let fleet = env.sim.fleet();
    let online: Vec<String> = fleet
        .iter()
        .filter(|m| m.os_platform.as_deref().unwrap().starts_with("Windows"))
        .map(|m| m.id.clone())
        .collect();
    let (m, other) = (&online[0], &online[1]);
    let isolate = |scope: &str, comment: &str| json!({"Comment": comment, "IsolationType": scope});

    let first = env.action(m, "isolate", isolate("Full", "a")).await;
    assert_eq!(first.status, 201);
    let dup = env.action(m, "isolate", isolate("Full", "b")).await;
    assert_error(&dup, 400, "ActiveRequestAlreadyExists");
    assert_eq!(dup.json["error"]["message"], "Action is already in progress");
    // Same type, other parameters: still refused (key is machine + type), but not resent work.
    assert_error(
        &env.action(m, "isolate", isolate("Selective", "c")).await,
        400,
        "ActiveRequestAlreadyExists",
    );
    // Other types never block each other; other machines are separate.
    assert_eq!(env.action(m, "unisolate", json!({"Comment": "x"})).await.status, 201);
    assert_eq!(env.action(other, "isolate", isolate("Full", "a")).await.status, 201);
    // SAQ with another Sha1 is refused too while the first is pending.
    assert_eq!(
        env.action(m, "StopAndQuarantineFile", json!({"Comment": "x", "Sha1": SHA1})).await.status,
        201
    );
    let other_file = json!({"Comment": "x", "Sha1": "b".repeat(40)});
    assert_error(
        &env.action(m, "StopAndQuarantineFile", other_file).await,
        400,
        "ActiveRequestAlreadyExists",
    );
    // The same Sha1 in another case is the same work: refused, and counted as resent.
    let upper = json!({"Comment": "y", "Sha1": SHA1.to_uppercase()});
    assert_error(
        &env.action(m, "StopAndQuarantineFile", upper).await,
        400,
        "ActiveRequestAlreadyExists",
    );
    let s = env.stats().await;
    assert_eq!((s.duplicates_refused, s.duplicate_submissions), (4, 2));

    // Once the first isolate is final, the same work is accepted again, and counted as resent.
    let done = wait_final(&env, first.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(env.action(m, "isolate", isolate("Full", "again")).await.status, 201);
    // A resend answered 401 counts as well.
    let r = send(
        env.http.post(format!("{}/api/machines/{m}/isolate", env.base)).json(&isolate("Full", "z")),
    )
    .await;
    assert_eq!(r.status, 401);
    let s = env.stats().await;
    assert_eq!(s.duplicate_submissions, 4);
    assert_eq!(s.actions_created, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_settles_succeeds_or_fails() {
    let env = Env::start(SimConfig { settle: Duration::from_millis(200), ..config() }).await;
    let win = env.ids()[env.windows_online()].clone();
    let r = env.action(&win, "isolate", json!({"Comment": "x"})).await;
    let id = r.json["id"].as_str().unwrap();
    let done = wait_final(&env, id, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(done["errorHResult"], 0);
    assert_eq!(done["creationDateTimeUtc"], r.json["creationDateTimeUtc"]);
    assert!(done["lastUpdateDateTimeUtc"].as_str() > r.json["lastUpdateDateTimeUtc"].as_str());
    assert_eq!(keys(&done), keys(&fixture("machineaction-offboard-201.json")));

    let failing =
        Env::start(SimConfig { settle: Duration::from_millis(200), fail_rate: 1.0, ..config() })
            .await;
    let r = failing.action(&win, "isolate", json!({"Comment": "x"})).await;
    assert_eq!(r.json["status"], "Pending");
    assert_eq!(r.json["errorHResult"], 0);
    let done = wait_final(&failing, r.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Failed");
    assert_eq!(done["errorHResult"], -2147467259);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_progress_at_half_the_settle_time() {
    let env = Env::start(SimConfig { settle: Duration::from_secs(8), ..config() }).await;
    let win = env.ids()[env.windows_online()].clone();
    let r = env.action(&win, "collectInvestigationPackage", json!({"Comment": "x"})).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(env.get(&format!("/api/machineactions/{id}")).await.json["status"], "Pending");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mid = env.get(&format!("/api/machineactions/{id}")).await;
    assert_eq!(mid.json["status"], "InProgress");
    // Still in progress: a second collection is refused.
    let again = env.action(&win, "collectInvestigationPackage", json!({"Comment": "y"})).await;
    assert_error(&again, 400, "ActiveRequestAlreadyExists");
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_machines_time_out_unless_they_come_back() {
    let env = Env::start(SimConfig {
        offline_rate: 1.0,
        settle: Duration::from_millis(100),
        action_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    let fleet = env.sim.fleet();
    assert!(fleet.iter().all(|m| m.health_status.as_deref() == Some("Inactive")));
    let (a, b) = (&fleet[0].id, &fleet[1].id);
    let ra = env.action(a, "isolate", json!({"Comment": "x"})).await;
    let rb = env.action(b, "isolate", json!({"Comment": "x"})).await;
    // Machine b comes back online before the timeout: its settle clock starts then.
    let back = send(env.http.post(format!("{}/_sim/machines/{b}/online", env.base))).await;
    assert_eq!(back.status, 200);
    assert_eq!(back.json["healthStatus"], "Active");
    let done_a = wait_final(&env, ra.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done_a["status"], "TimeOut");
    let done_b = wait_final(&env, rb.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done_b["status"], "Succeeded");
    assert_eq!(env.sim.fleet()[1].health_status.as_deref(), Some("Active"));
    let r = send(env.http.post(format!("{}/_sim/machines/nope/online", env.base))).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel() {
    let env = Env::start(SimConfig { settle: Duration::from_millis(300), ..config() }).await;
    let ids = env.ids();
    let win = ids[env.windows_online()].clone();
    let r = env.action(&win, "restrictCodeExecution", json!({"Comment": "x"})).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let c = env
        .post(&format!("/api/machineactions/{id}/cancel"), json!({"Comment": "changed my mind"}))
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(keys(&c.json), keys(&fixture("machineaction-offboard-201.json")));
    assert_eq!(c.json["status"], "Cancelled");
    assert_eq!(c.json["cancellationRequestor"], "mdebulk simulator");
    assert_eq!(c.json["cancellationComment"], "changed my mind");
    assert_eq!(c.json["cancellationDateTimeUtc"], c.json["lastUpdateDateTimeUtc"]);
    // It stays cancelled past the settle time, and cancelling again is refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(env.get(&format!("/api/machineactions/{id}")).await.json["status"], "Cancelled");
    assert_error(
        &env.post(&format!("/api/machineactions/{id}/cancel"), json!({})).await,
        400,
        "BadRequest",
    );
    // A cancelled action does not block a new one; a final one cannot be cancelled.
    let r = env.action(&win, "restrictCodeExecution", json!({"Comment": "x"})).await;
    assert_eq!(r.status, 201);
    let done = wait_final(&env, r.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done["status"], "Succeeded");
    let late = env
        .post(&format!("/api/machineactions/{}/cancel", done["id"].as_str().unwrap()), json!({}))
        .await;
    assert_error(&late, 400, "BadRequest");
    // Without a body the comment is null; unknown ids are 404; bad bodies 400.
    let r = env.action(&win, "isolate", json!({"Comment": "x"})).await;
    let nobody = send(
        env.http
            .post(format!(
                "{}/api/machineactions/{}/cancel",
                env.base,
                r.json["id"].as_str().unwrap()
            ))
            .bearer_auth(&env.token),
    )
    .await;
    assert_eq!(nobody.status, 200);
    assert_eq!(nobody.json["cancellationComment"], Value::Null);
    let unknown = env
        .post("/api/machineactions/00000000-0000-0000-0000-000000000000/cancel", json!({}))
        .await;
    assert_error(&unknown, 404, "ResourceNotFound");
    assert_error(
        &env.post(&format!("/api/machineactions/{id}/cancel"), json!({"comment": "x"})).await,
        400,
        "InvalidRequestBody",
    );
    assert_error(
        &env.get("/api/machineactions/00000000-0000-0000-0000-000000000000").await,
        404,
        "ResourceNotFound",
    );
    assert_eq!(env.stats().await.cancelled, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_get_exact_counts() {
    let env = Env::start(SimConfig { limits: vec!["50/60s".parse().unwrap()], ..config() }).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let http = env.http.clone();
        let url = format!("{}/api/machines/{}", env.base, env.ids()[i % 100]);
        let token = env.token.clone();
        tasks
            .push(tokio::spawn(async move { send(http.get(url).bearer_auth(token)).await.status }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => throttled += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, throttled), (50, 150));
    let s = env.stats().await;
    assert_eq!(s.by_api["GET machines/{id}"].admitted, 50);
    assert_eq!(s.throttled, 150);
}

/// The service's routing ignores the case of its literal path segments
/// (ASP.NET routes so, and clients in production send `stopAndQuarantineFile`
/// as well as the documented spelling): the simulator acts where it would.
#[tokio::test(flavor = "multi_thread")]
async fn literal_path_segments_match_in_any_case() {
    let env = Env::start(config()).await;
    let fleet = env.sim.fleet();
    let m = &fleet[env.windows_online()];
    let r = env
        .post(
            &format!("/API/Machines/{}/StopAndQuarantineFile", m.id.to_uppercase()),
            json!({"Comment": "c", "Sha1": SHA1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["type"], "StopAndQuarantineFile");
    assert_eq!(r.json["machineId"], m.id.as_str());
    let id = r.json["id"].as_str().unwrap().to_string();
    let got = env.get(&format!("/api/V1.0/MachineActions/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(env.stats().await.actions_created, 1);
}
