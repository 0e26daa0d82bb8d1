//! The rest of the machine family over real loopback HTTP against the
//! in-process simulator: findbyip (and its regression: it used to fall into
//! `machines/{id}`), findbytag, tags on one machine and on many, machines by
//! file, log-on users, startInvestigation, GetPackageUri, `$select`, their
//! permissions, documented errors and quotas, the `/_sim` hooks that set
//! tags, IP history and files, and `/_sim/stats` counts per API.
//!
//! Payloads are compared with the documentation's examples, copied from
//! `mde-api-addendum.md`'s fixtures into `tests/fixtures/` (sources in its
//! README): `mde-machines-logonusers-200.json`, `mde-machines-tags-request.json`,
//! `mde-machines-addorremovetagformultiplemachines-request.json`,
//! `mde-machines-startinvestigation-request.json` and
//! `mde-machineactions-getpackageuri-200.json`.

mod sim_support;

use std::time::{Duration, SystemTime};

use mdebulk::api::time::format_utc;
use mdebulk::sim::{FleetSpec, SimConfig, fleet};
use serde_json::{Value, json};
use sim_support::*;

/// 100 machines, no quota, every permission.
fn all_roles() -> SimConfig {
    SimConfig {
        roles: mdebulk::sim::KNOWN_ROLES.iter().map(|r| r.to_string()).collect(),
        ..config()
    }
}

fn ids_of(r: &Reply) -> Vec<String> {
    let value = r.json["value"].as_array().unwrap_or_else(|| panic!("a list: {}", r.text));
    value.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

fn find_by_ip(ip: &str, at: SystemTime) -> String {
    let ts = format_utc(at);
    format!("/api/machines/findbyip(ip='{ip}',timestamp={}Z)", &ts[..19])
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

fn parse_time(v: &Value) -> Option<SystemTime> {
    v.as_str().and_then(mdebulk::api::time::parse_utc)
}

over_http_and_tls! {
    findbyip_finds_machines_by_their_ip_history_and_no_longer_falls_into_machines_id => findbyip_finds_machines_by_their_ip_history_and_no_longer_falls_into_machines_id_over_http, findbyip_finds_machines_by_their_ip_history_and_no_longer_falls_into_machines_id_over_tls;
    findbytag_matches_exactly_or_by_prefix_without_regard_to_case => findbytag_matches_exactly_or_by_prefix_without_regard_to_case_over_http, findbytag_matches_exactly_or_by_prefix_without_regard_to_case_over_tls;
    tags_are_added_and_removed_and_every_look_up_sees_them => tags_are_added_and_removed_and_every_look_up_sees_them_over_http, tags_are_added_and_removed_and_every_look_up_sees_them_over_tls;
    tags_for_many_machines_at_once_up_to_500 => tags_for_many_machines_at_once_up_to_500_over_http, tags_for_many_machines_at_once_up_to_500_over_tls;
    tags_need_machine_read_write_all => tags_need_machine_read_write_all_over_http, tags_need_machine_read_write_all_over_tls;
    machines_by_file_take_sha1_only => machines_by_file_take_sha1_only_over_http, machines_by_file_take_sha1_only_over_tls;
    logon_users_in_the_documented_shape => logon_users_in_the_documented_shape_over_http, logon_users_in_the_documented_shape_over_tls;
    start_investigation_answers_201_with_an_investigation_and_holds_50_an_hour => start_investigation_answers_201_with_an_investigation_and_holds_50_an_hour_over_http, start_investigation_answers_201_with_an_investigation_and_holds_50_an_hour_over_tls;
    package_uri_after_a_collection_succeeds_in_the_documented_quirky_shape => package_uri_after_a_collection_succeeds_in_the_documented_quirky_shape_over_http, package_uri_after_a_collection_succeeds_in_the_documented_quirky_shape_over_tls;
    package_uri_holds_two_calls_a_minute => package_uri_holds_two_calls_a_minute_over_http, package_uri_holds_two_calls_a_minute_over_tls;
    select_keeps_the_listed_properties_in_the_entity_order => select_keeps_the_listed_properties_in_the_entity_order_over_http, select_keeps_the_listed_properties_in_the_entity_order_over_tls;
    hooks_set_tags_and_ip_history_and_fleet_files_carry_them => hooks_set_tags_and_ip_history_and_fleet_files_carry_them_over_http, hooks_set_tags_and_ip_history_and_fleet_files_carry_them_over_tls;
    a_cpu_throttle_names_the_apis_own_limit => a_cpu_throttle_names_the_apis_own_limit_over_http, a_cpu_throttle_names_the_apis_own_limit_over_tls;
}

async fn findbyip_finds_machines_by_their_ip_history_and_no_longer_falls_into_machines_id(
    tls: bool,
) {
    let env = Env::start_over(tls, config()).await;
    let fleet = env.sim.fleet();
    let ip0 = fleet[0].last_ip_address.clone().unwrap();
    // The regression: this path used to answer 404 "Machine findbyip(...) was not found".
    let r = env.get(&find_by_ip(&ip0, ago(60))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.json), ["@odata.context", "value"]);
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Machines", env.base));
    assert_eq!(ids_of(&r), [fleet[0].id.clone()]);
    let one = env.get(&format!("/api/machines/{}", fleet[0].id)).await;
    let mut entity = one.json.as_object().unwrap().clone();
    entity.shift_remove("@odata.context");
    assert_eq!(r.json["value"][0], Value::Object(entity));

    // Record 0 (i % 3 == 0) held two addresses before its current one.
    let h = send(env.http.get(format!("{}/_sim/machines/{}/ips", env.base, fleet[0].id))).await;
    let spans = h.json.as_array().unwrap().clone();
    assert_eq!(spans.len(), 3, "{}", h.text);
    assert_eq!(spans[2]["ipAddress"], ip0);
    assert!(spans[2]["to"].is_null());
    assert_eq!(spans[0]["ipAddress"], "172.17.1.1");
    assert_eq!(spans[1]["ipAddress"], "172.16.1.1");
    let (from, to) = (parse_time(&spans[1]["from"]).unwrap(), parse_time(&spans[1]["to"]).unwrap());
    let mid = from + (to.duration_since(from).unwrap() / 2);
    let r = env.get(&find_by_ip("172.16.1.1", mid)).await;
    assert_eq!(ids_of(&r), [fleet[0].id.clone()]);
    // The current address was not yet its address then ...
    let r = env.get(&find_by_ip(&ip0, mid)).await;
    assert_eq!((r.status, ids_of(&r).len()), (200, 0), "{}", r.text);
    // ... but ±15 minutes around the change it is.
    let r = env.get(&find_by_ip(&ip0, to - Duration::from_secs(10 * 60))).await;
    assert_eq!(ids_of(&r), [fleet[0].id.clone()]);
    let r = env.get(&find_by_ip(&ip0, to - Duration::from_secs(20 * 60))).await;
    assert!(ids_of(&r).is_empty());
    // Record 2 (i % 3 == 2) never changed address.
    let h = send(env.http.get(format!("{}/_sim/machines/{}/ips", env.base, fleet[2].id))).await;
    assert_eq!(h.json.as_array().unwrap().len(), 1);

    // No match: 200 with an empty list.
    let r = env.get(&find_by_ip("192.0.2.1", ago(60))).await;
    assert_eq!((r.status, ids_of(&r).len()), (200, 0));
    // Older than 30 days, in the future, or malformed: 400 BadRequest.
    for path in [
        find_by_ip(&ip0, ago(31 * 86_400)),
        find_by_ip(&ip0, SystemTime::now() + Duration::from_secs(3600)),
        format!("/api/machines/findbyip(ip={ip0},timestamp=2026-11-30T08:00:00Z)"),
        format!("/api/machines/findbyip(ip='{ip0}')"),
        "/api/machines/findbyip(ip='10.0.1.1',timestamp=yesterday)".to_string(),
    ] {
        assert_error(&env.get(&path).await, 400, "BadRequest");
    }
    let s = env.stats().await;
    assert_eq!(s.by_api["GET machines/findbyip"].calls, 11);
    assert_eq!(s.by_api["GET machines/{id}"].calls, 1);
}

async fn findbytag_matches_exactly_or_by_prefix_without_regard_to_case(tls: bool) {
    let env = Env::start_over(tls, config()).await;
    let ids = env.ids();
    let pick = |rule: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..ids.len()).filter(|&i| rule(i)).map(|i| ids[i].clone()).collect()
    };
    let tag = |q: &str| format!("/api/machines/findbytag?{q}");
    let r = env.get(&tag("tag=Tier0")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Machines", env.base));
    assert_eq!(ids_of(&r), pick(&|i| i % 50 == 0));
    assert_eq!(
        ids_of(&env.get(&tag("tag=tier0&useStartsWithFilter=false")).await),
        pick(&|i| i % 50 == 0)
    );
    assert_eq!(ids_of(&env.get(&tag("tag=Finance")).await), pick(&|i| i % 10 == 3));
    assert_eq!(ids_of(&env.get(&tag("tag=Finance-EMEA")).await), pick(&|i| i % 20 == 13));
    assert_eq!(
        ids_of(&env.get(&tag("tag=fin&useStartsWithFilter=true")).await),
        pick(&|i| i % 10 == 3)
    );
    assert_eq!(ids_of(&env.get(&tag("tag=fin")).await), Vec::<String>::new());
    assert_eq!(ids_of(&env.get(&tag("tag=IR%2Dquarantine")).await), pick(&|i| i % 40 == 11));
    for (i, m) in env.sim.fleet().iter().enumerate() {
        assert_eq!(m.extra["machineTags"], json!(fleet::generated_tags(i)));
    }
    assert_error(&env.get(&tag("useStartsWithFilter=true")).await, 400, "BadRequest");
    assert_error(&env.get(&tag("tag=")).await, 400, "BadRequest");
    assert_error(&env.get(&tag("tag=VIP&useStartsWithFilter=maybe")).await, 400, "BadRequest");
    assert_eq!(env.stats().await.by_api["GET machines/findbytag"].calls, 10);
}

async fn tags_are_added_and_removed_and_every_look_up_sees_them(tls: bool) {
    let env = Env::start_over(tls, all_roles()).await;
    let id = env.ids()[7].clone();
    let body = fixture("mde-machines-tags-request.json");
    assert_eq!(body, json!({"Value": "test Tag 2", "Action": "Add"}));
    let path = format!("/api/machines/{id}/tags");
    let r = env.post(&path, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Machines/$entity", env.base));
    assert_eq!(r.json["id"], id);
    assert_eq!(r.json["machineTags"], json!(["test Tag 2"]));
    let got = env.get(&format!("/api/machines/{id}")).await;
    assert_eq!(got.json, r.json);
    // Adding it again, in another case, changes nothing.
    let again = env.post(&path, json!({"Value": "TEST TAG 2", "Action": "Add"})).await;
    assert_eq!(again.json["machineTags"], json!(["test Tag 2"]));
    let found = env.get("/api/machines/findbytag?tag=test%20tag%202").await;
    assert_eq!(ids_of(&found), [id.as_str()]);
    let filtered = send(
        env.http
            .get(format!("{}/api/machines", env.base))
            .bearer_auth(&env.token)
            .query(&[("$filter", "machineTags eq 'test Tag 2'")]),
    )
    .await;
    assert_eq!(ids_of(&filtered), [id.as_str()]);
    let r = env.post(&path, json!({"Value": "test tag 2", "Action": "Remove"})).await;
    assert_eq!((r.status, r.json["machineTags"].clone()), (200, json!([])));
    assert!(ids_of(&env.get("/api/machines/findbytag?tag=test%20Tag%202").await).is_empty());
    // Removing an absent tag is no error either.
    let r = env.post(&path, json!({"Value": "never", "Action": "Remove"})).await;
    assert_eq!(r.status, 200);

    assert_error(
        &env.post(&path, json!({"Value": "x", "Action": "Toggle"})).await,
        400,
        "InvalidRequestBody",
    );
    assert_error(
        &env.post(&path, json!({"value": "x", "action": "Add"})).await,
        400,
        "InvalidRequestBody",
    );
    assert_error(&env.post(&path, json!({"Action": "Add"})).await, 400, "MissingRequiredParameter");
    assert_error(&env.post(&path, json!({"Value": "x"})).await, 400, "MissingRequiredParameter");
    let unknown = format!("/api/machines/{}/tags", "0".repeat(40));
    assert_error(&env.post(&unknown, body).await, 404, "ResourceNotFound");
    let s = env.stats().await;
    assert_eq!(s.by_api["POST machines/{id}/tags"].calls, 9);
    assert_eq!(s.by_api["POST machines/{id}/tags"].admitted, 9);
}

async fn tags_for_many_machines_at_once_up_to_500(tls: bool) {
    let env = Env::start_over(tls, all_roles()).await;
    let ids = env.ids();
    let path = "/api/machines/AddOrRemoveTagForMultipleMachines";
    // The documentation's body names machines this tenant does not have.
    let doc = fixture("mde-machines-addorremovetagformultiplemachines-request.json");
    let r = env.post(path, doc.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Machines", env.base));
    assert!(ids_of(&r).is_empty());

    let mut body = doc.clone();
    body["MachineIds"] = json!([ids[2], ids[9].to_uppercase(), "f".repeat(40), ids[2]]);
    let r = env.post(path, body.clone()).await;
    assert_eq!(ids_of(&r), [ids[2].clone(), ids[9].clone()]);
    for m in r.json["value"].as_array().unwrap() {
        assert_eq!(m["machineTags"].as_array().unwrap().last().unwrap(), "Tag");
    }
    assert_eq!(
        ids_of(&env.get("/api/machines/findbytag?tag=tag").await),
        [ids[2].clone(), ids[9].clone()]
    );
    body["Action"] = json!("Remove");
    let r = env.post(path, body).await;
    assert_eq!(r.status, 200);
    assert!(ids_of(&env.get("/api/machines/findbytag?tag=Tag").await).is_empty());

    let many: Vec<String> = (0..501).map(|i| format!("{i:040x}")).collect();
    let mut big = doc.clone();
    big["MachineIds"] = json!(many[..500]);
    assert_eq!(env.post(path, big.clone()).await.status, 200);
    big["MachineIds"] = json!(many);
    assert_error(&env.post(path, big).await, 400, "MaximumBatchSizeExceeded");
    let mut empty = doc;
    empty["MachineIds"] = json!([]);
    assert_error(&env.post(path, empty).await, 400, "MissingRequiredParameter");
    let s = env.stats().await;
    assert_eq!(s.by_api["POST machines/AddOrRemoveTagForMultipleMachines"].calls, 6);
}

async fn tags_need_machine_read_write_all(tls: bool) {
    // The default roles carry Machine.Read.All only.
    let env = Env::start_over(tls, config()).await;
    let id = env.ids()[0].clone();
    let r = env
        .post(&format!("/api/machines/{id}/tags"), fixture("mde-machines-tags-request.json"))
        .await;
    assert_error(&r, 403, "Forbidden");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("Machine.ReadWrite.All"));
    let r = env
        .post(
            "/api/machines/AddOrRemoveTagForMultipleMachines",
            fixture("mde-machines-addorremovetagformultiplemachines-request.json"),
        )
        .await;
    assert_error(&r, 403, "Forbidden");
    let r = env.get(&format!("/api/machines/{id}/logonusers")).await;
    assert!(r.json["error"]["message"].as_str().unwrap().contains("User.Read.All"), "{}", r.text);
    assert_error(&r, 403, "Forbidden");
    let r =
        env.post(&format!("/api/machines/{id}/startInvestigation"), json!({"Comment": "x"})).await;
    assert_error(&r, 403, "Forbidden");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("Alert.ReadWrite.All"));
    let s = env.stats().await;
    assert_eq!(s.forbidden, 4);
    assert_eq!(s.by_api["POST machines/{id}/tags"].admitted, 0);
    assert_eq!(env.sim.fleet()[0].extra["machineTags"], json!(["Tier0"]));
}

async fn machines_by_file_take_sha1_only(tls: bool) {
    let env = Env::start_over(tls, config()).await;
    let ids = env.ids();
    let files = |h: &str| format!("/api/files/{h}/machines");
    let doc_hash = fleet::WELL_KNOWN_FILES[0];
    let r = env.get(&files(doc_hash)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Machines", env.base));
    let tenth: Vec<String> = (0..100).step_by(10).map(|i| ids[i].clone()).collect();
    assert_eq!(ids_of(&r), tenth);
    assert_eq!(ids_of(&env.get(&files(&doc_hash.to_uppercase())).await), tenth);
    assert_eq!(ids_of(&env.get(&files(fleet::WELL_KNOWN_FILES[3])).await), [ids[4].clone()]);
    let hooks = send(env.http.get(format!("{}/_sim/files", env.base))).await;
    assert_eq!(hooks.json[doc_hash], json!(tenth));
    // Unknown file: 200 with an empty list.
    let unknown = "b".repeat(40);
    let r = env.get(&files(&unknown)).await;
    assert_eq!((r.status, ids_of(&r).len()), (200, 0));
    // Another hash function, or no hash: 400 InvalidHashValue.
    for (h, word) in
        [("d".repeat(32), "MD5"), ("e".repeat(64), "SHA-256"), ("xyz".into(), "not a hash")]
    {
        let r = env.get(&files(&h)).await;
        assert_error(&r, 400, "InvalidHashValue");
        assert!(r.json["error"]["message"].as_str().unwrap().contains(word), "{}", r.text);
    }
    // The hook gives a machine the file.
    let hook = format!("{}/_sim/machines/{}/files", env.base, ids[5]);
    let set = send(env.http.post(&hook).json(&json!([unknown.to_uppercase()]))).await;
    assert_eq!((set.status, set.json.clone()), (200, json!([unknown.clone()])));
    assert_eq!(ids_of(&env.get(&files(&unknown)).await), [ids[5].clone()]);
    let bad = send(env.http.post(&hook).json(&json!(["nope"]))).await;
    assert_error(&bad, 400, "InvalidRequestBody");
    assert_eq!(env.stats().await.by_api["GET files/{id}/machines"].calls, 8);
}

async fn logon_users_in_the_documented_shape(tls: bool) {
    let env = Env::start_over(tls, all_roles()).await;
    let id = env.ids()[3].clone();
    let r = env.get(&format!("/api/machines/{id}/logonusers")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = fixture("mde-machines-logonusers-200.json");
    assert_eq!(keys(&r.json), keys(&doc));
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Users", env.base));
    assert!(doc["@odata.context"].as_str().unwrap().ends_with("/api/$metadata#Users"));
    let users = r.json["value"].as_array().unwrap();
    assert!((1..=3).contains(&users.len()), "{}", r.text);
    let example = &doc["value"][0];
    for u in users {
        assert_eq!(keys(u), keys(example));
        for k in keys(example) {
            let same_type = std::mem::discriminant(&u[&k]) == std::mem::discriminant(&example[&k]);
            assert!(same_type, "{k}: {} vs {}", u[&k], example[&k]);
        }
        let (domain, name) =
            (u["accountDomain"].as_str().unwrap(), u["accountName"].as_str().unwrap());
        assert_eq!(u["id"], format!("{domain}\\{name}"));
        for k in ["firstSeen", "lastSeen"] {
            let t = u[k].as_str().unwrap();
            assert_eq!((t.len(), t.ends_with('Z'), t.contains('.')), (20, true, false), "{t}");
        }
        assert!(parse_time(&u["firstSeen"]) <= parse_time(&u["lastSeen"]));
        assert_eq!(u["isOnlyNetworkUser"], u["logonTypes"] == "Network");
    }
    // The same machine always has the same users.
    assert_eq!(env.get(&format!("/api/machines/{id}/logonusers")).await.json, r.json);
    let r = env.get(&format!("/api/machines/{}/logonusers", "0".repeat(40))).await;
    assert_error(&r, 404, "ResourceNotFound");
    assert_eq!(env.stats().await.by_api["GET machines/{id}/logonusers"].calls, 3);
}

async fn start_investigation_answers_201_with_an_investigation_and_holds_50_an_hour(tls: bool) {
    let env =
        Env::start_over(tls, SimConfig { limits: SimConfig::default().limits, ..all_roles() })
            .await;
    let fleet = env.sim.fleet();
    let w = env.windows_online();
    let path = |i: usize| format!("/api/machines/{}/startInvestigation", fleet[i].id);
    let body = fixture("mde-machines-startinvestigation-request.json");
    assert_eq!(body, json!({"Comment": "Test investigation"}));
    let r = env.post(&path(w), body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        keys(&r.json),
        [
            "@odata.context",
            "id",
            "startTime",
            "endTime",
            "state",
            "cancelledBy",
            "statusDetails",
            "machineId",
            "computerDnsName",
            "triggeringAlertId"
        ]
    );
    assert_eq!(
        r.json["@odata.context"],
        format!("{}/api/$metadata#Investigations/$entity", env.base)
    );
    assert_eq!(r.json["id"], "60001");
    assert_eq!(r.json["state"], "Running");
    assert_eq!(r.json["machineId"], fleet[w].id);
    assert_eq!(r.json["computerDnsName"], json!(fleet[w].computer_dns_name));
    assert!(parse_time(&r.json["startTime"]).is_some());
    for k in ["endTime", "cancelledBy", "statusDetails", "triggeringAlertId"] {
        assert!(r.json[k].is_null(), "{k}");
    }
    let linux = fleet.iter().position(|m| m.os_platform.as_deref() == Some("Linux")).unwrap();
    assert_error(&env.post(&path(linux), body.clone()).await, 400, "OsPlatformNotSupported");
    assert_error(&env.post(&path(w), json!({})).await, 400, "MissingRequiredParameter");
    assert_error(&env.post(&path(w), json!({"comment": "x"})).await, 400, "InvalidRequestBody");
    let unknown = format!("/api/machines/{}/startInvestigation", "0".repeat(40));
    assert_error(&env.post(&unknown, body.clone()).await, 404, "ResourceNotFound");
    // Five calls so far; the documented 50 an hour admits 45 more.
    for _ in 0..45 {
        assert_eq!(env.post(&path(w), body.clone()).await.status, 201);
    }
    let r = env.post(&path(w), body).await;
    assert_error(&r, 429, "TooManyRequests");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("50 per 01:00:00"), "{}", r.text);
    assert!(r.retry_after.unwrap() > 60);
    let s = env.stats().await.by_api["POST machines/{id}/startInvestigation"].clone();
    assert_eq!((s.calls, s.admitted, s.throttled), (51, 50, 1));
}

async fn package_uri_after_a_collection_succeeds_in_the_documented_quirky_shape(tls: bool) {
    let cfg = SimConfig { settle: Duration::from_millis(200), ..config() };
    let env = Env::start_over(tls, cfg).await;
    let id = env.ids()[env.windows_online()].clone();
    let collect =
        env.action(&id, "collectInvestigationPackage", json!({"Comment": "forensics"})).await;
    assert_eq!(collect.status, 201, "{}", collect.text);
    let action = collect.json["id"].as_str().unwrap().to_string();
    // Exists but not complete: 404.
    let pending = env.get(&format!("/api/machineactions/{action}/GetPackageUri")).await;
    assert_error(&pending, 404, "ResourceNotFound");
    assert_eq!(wait_final(&env, &action, Duration::from_secs(10)).await["status"], "Succeeded");
    let r = env.get(&format!("/api/machineactions/{action}/getPackageUri")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = fixture("mde-machineactions-getpackageuri-200.json");
    assert_eq!(keys(&r.json), keys(&doc));
    assert!(doc["@odata.context"].as_str().unwrap().ends_with("/api/$metadata#Edm.String"));
    assert_eq!(r.json["@odata.context"], format!("{}/api/$metadata#Edm.String", env.base));
    let (value, doc_value) = (r.json["value"].as_str().unwrap(), doc["value"].as_str().unwrap());
    for v in [value, doc_value] {
        assert!(v.starts_with("\"https://") || v.starts_with("\"http://"), "{v}");
        assert!(v.ends_with('"') && v.len() > 2, "{v}");
    }
    let link = value.trim_matches('"');
    assert!(link.starts_with(&format!("{}/_sim/packages/{action}.zip?token=", env.base)), "{link}");
    let zip = env.http.get(link).send().await.unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.headers()["content-type"], "application/zip");
    assert!(zip.bytes().await.unwrap().starts_with(b"PK\x05\x06"));
    // Not a collection, or unknown: 404.
    let isolate = env.action(&id, "isolate", json!({"Comment": "c"})).await;
    let other = isolate.json["id"].as_str().unwrap();
    assert_error(
        &env.get(&format!("/api/machineactions/{other}/GetPackageUri")).await,
        404,
        "ResourceNotFound",
    );
    let unknown =
        env.get("/api/machineactions/7327b54fd718525cbca07dacde913b5ac3c85673/GetPackageUri").await;
    assert_error(&unknown, 404, "ResourceNotFound");
    assert_eq!(env.stats().await.by_api["GET machineactions/{id}/GetPackageUri"].calls, 4);
}

async fn package_uri_holds_two_calls_a_minute(tls: bool) {
    let cfg = SimConfig {
        settle: Duration::from_millis(200),
        limits: SimConfig::default().limits,
        ..config()
    };
    let env = Env::start_over(tls, cfg).await;
    let id = env.ids()[env.windows_online()].clone();
    let collect =
        env.action(&id, "collectInvestigationPackage", json!({"Comment": "forensics"})).await;
    let action = collect.json["id"].as_str().unwrap().to_string();
    assert_eq!(wait_final(&env, &action, Duration::from_secs(10)).await["status"], "Succeeded");
    let path = format!("/api/machineactions/{action}/GetPackageUri");
    assert_eq!(env.get(&path).await.status, 200);
    assert_eq!(env.get(&path).await.status, 200);
    let third = env.get(&path).await;
    assert_error(&third, 429, "TooManyRequests");
    assert!(
        third.json["error"]["message"].as_str().unwrap().contains("2 per 00:01:00"),
        "{}",
        third.text
    );
    assert!((1..=60).contains(&third.retry_after.unwrap()));
    // Other APIs keep their own lanes and their own limits.
    for _ in 0..3 {
        assert_eq!(env.get(&format!("/api/machineactions/{action}")).await.status, 200);
    }
    let s = env.stats().await;
    let p = &s.by_api["GET machineactions/{id}/GetPackageUri"];
    assert_eq!((p.calls, p.admitted, p.throttled), (3, 2, 1));
    assert_eq!(s.by_api["GET machineactions/{id}"].throttled, 0);
}

async fn select_keeps_the_listed_properties_in_the_entity_order(tls: bool) {
    let env = Env::start_over(tls, SimConfig { page_size: Some(40), ..config() }).await;
    let ids = env.ids();
    let get = |path: &str, select: &str| {
        send(
            env.http
                .get(format!("{}{path}", env.base))
                .bearer_auth(&env.token)
                .query(&[("$select", select)]),
        )
    };
    let r = get("/api/machines", "computerDnsName,id").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["@odata.context"],
        format!("{}/api/$metadata#Machines(computerDnsName,id)", env.base)
    );
    let value = r.json["value"].as_array().unwrap();
    assert_eq!(value.len(), 40);
    for (i, m) in value.iter().enumerate() {
        assert_eq!(keys(m), ["id", "computerDnsName"]);
        assert_eq!(m["id"], ids[i]);
    }
    // The next page keeps the projection.
    let next = r.json["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$select=computerDnsName%2Cid"), "{next}");
    let page = send(env.http.get(next).bearer_auth(&env.token)).await;
    assert_eq!(keys(&page.json["value"][0]), ["id", "computerDnsName"]);
    assert_eq!(page.json["value"][0]["id"], ids[40]);

    let one = get(&format!("/api/machines/{}", ids[1]), "machineTags,lastSeen").await;
    assert_eq!(
        one.json["@odata.context"],
        format!("{}/api/$metadata#Machines(machineTags,lastSeen)/$entity", env.base)
    );
    assert_eq!(keys(&one.json), ["@odata.context", "lastSeen", "machineTags"]);
    assert_eq!(one.json["machineTags"], json!(["VIP"]));

    let w = env.windows_online();
    let a = env.action(&ids[w], "isolate", json!({"Comment": "c"})).await;
    let action = a.json["id"].as_str().unwrap().to_string();
    let list = get("/api/machineactions", "status,id,type").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(
        list.json["@odata.context"],
        format!("{}/api/$metadata#MachineActions(status,id,type)", env.base)
    );
    assert_eq!(keys(&list.json["value"][0]), ["id", "type", "status"]);
    let single = get(&format!("/api/machineactions/{action}"), "machineId").await;
    assert_eq!(keys(&single.json), ["@odata.context", "machineId"]);
    assert_eq!(single.json["machineId"], ids[w]);
    // The property list of actions is the entity's own, in its order.
    let full = env.get(&format!("/api/machineactions/{action}")).await;
    let all: Vec<String> = keys(&full.json).into_iter().skip(1).collect();
    let every = get(&format!("/api/machineactions/{action}"), &all.join(",")).await;
    assert_eq!(keys(&every.json), keys(&full.json));
    // `*` is everything, as without $select.
    let star = get(&format!("/api/machines/{}", ids[1]), "*").await;
    assert_eq!(star.json, env.get(&format!("/api/machines/{}", ids[1])).await.json);

    for (path, select) in [
        ("/api/machines".to_string(), "id,nope"),
        (format!("/api/machines/{}", ids[1]), "ID"),
        ("/api/machineactions".to_string(), "status,"),
        (format!("/api/machineactions/{action}"), "computerName"),
    ] {
        assert_error(&get(&path, select).await, 400, "ODataError");
    }
}

async fn hooks_set_tags_and_ip_history_and_fleet_files_carry_them(tls: bool) {
    let now = SystemTime::now();
    let at = |secs: u64| format_utc(now - Duration::from_secs(secs));
    let machine = |id: &str, extra: Value| {
        let mut m = json!({"id": id, "computerDnsName": format!("{id}.contoso.test"),
            "lastIpAddress": "10.9.9.9", "healthStatus": "Active", "osPlatform": "Windows11"});
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(m).unwrap()
    };
    let sha = "c".repeat(40);
    let fleet_machines = vec![
        machine(
            "a1",
            json!({"ipHistory": [{"ipAddress": "10.5.5.5", "from": at(7200), "to": at(3600)},
                                 {"ipAddress": "10.9.9.9", "from": at(3600), "to": null}],
                   "files": [sha.clone()]}),
        ),
        // Without a history: lastIpAddress from firstSeen to lastSeen.
        machine(
            "b2",
            json!({"firstSeen": at(3000), "lastSeen": at(600), "lastIpAddress": "10.5.5.5"}),
        ),
    ];
    let env =
        Env::start_over(tls, SimConfig { fleet: FleetSpec::Machines(fleet_machines), ..config() })
            .await;
    // The simulator-only keys are never part of the entity.
    let a1 = env.get("/api/machines/a1").await;
    assert!(a1.json.get("ipHistory").is_none() && a1.json.get("files").is_none(), "{}", a1.text);
    assert_eq!(
        ids_of(&env.get(&find_by_ip("10.5.5.5", now - Duration::from_secs(5400))).await),
        ["a1"]
    );
    assert_eq!(
        ids_of(&env.get(&find_by_ip("10.5.5.5", now - Duration::from_secs(300))).await),
        ["b2"]
    );
    assert_eq!(ids_of(&env.get(&format!("/api/files/{sha}/machines")).await), ["a1"]);

    // Tags hook: replaces the list, visible in every look-up.
    let hook = |what: &str| format!("{}/_sim/machines/a1/{what}", env.base);
    let t = send(env.http.post(hook("tags")).json(&json!(["VIP", "Ops"]))).await;
    assert_eq!((t.status, t.json.clone()), (200, json!(["VIP", "Ops"])));
    assert_eq!(env.get("/api/machines/a1").await.json["machineTags"], json!(["VIP", "Ops"]));
    assert_eq!(ids_of(&env.get("/api/machines/findbytag?tag=ops").await), ["a1"]);
    let t = send(env.http.get(hook("tags"))).await;
    assert_eq!(t.json, json!(["VIP", "Ops"]));
    // IP hook: a new history, whose last address becomes lastIpAddress.
    let spans = json!([{"ipAddress": "10.7.7.7", "from": at(600), "to": null}]);
    let h = send(env.http.post(hook("ips")).json(&spans)).await;
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.json[0]["ipAddress"], "10.7.7.7");
    assert!(h.json[0]["to"].is_null());
    assert_eq!(env.get("/api/machines/a1").await.json["lastIpAddress"], "10.7.7.7");
    assert_eq!(ids_of(&env.get(&find_by_ip("10.7.7.7", now)).await), ["a1"]);
    assert!(
        ids_of(&env.get(&find_by_ip("10.5.5.5", now - Duration::from_secs(5400))).await).is_empty()
    );
    for (what, bad) in
        [("ips", json!([{"ipAddress": "x"}])), ("tags", json!("VIP")), ("files", json!({}))]
    {
        assert_error(&send(env.http.post(hook(what)).json(&bad)).await, 400, "InvalidRequestBody");
    }
    let missing =
        send(env.http.post(format!("{}/_sim/machines/zz/tags", env.base)).json(&json!([]))).await;
    assert_error(&missing, 404, "ResourceNotFound");
    let delete = send(env.http.delete(hook("tags"))).await;
    assert_error(&delete, 404, "NotFound");
    let no_package = send(env.http.get(format!("{}/_sim/packages/nope.zip", env.base))).await;
    assert_error(&no_package, 404, "NotFound");
    // Hooks are not API calls.
    let s = env.stats().await;
    assert_eq!(s.by_api["GET machines/findbyip"].calls, 4);
    assert_eq!(s.by_api["POST machines/{id}/tags"].calls, 0);
}

#[test]
fn fleet_files_with_bad_simulator_keys_are_refused_with_the_machine_named() {
    let bad = r#"[{"id":"a1"},{"id":"b2","ipHistory":[{"ipAddress":"10.0.0.300"}]}]"#;
    let e = fleet::parse(bad).unwrap_err();
    assert!(e.contains("machine #2") && e.contains("ipAddress"), "{e}");
    let e = fleet::parse(r#"[{"id":"a1","files":["abc"]}]"#).unwrap_err();
    assert!(e.contains("machine #1") && e.contains("SHA-1"), "{e}");
    assert!(fleet::parse(r#"[{"id":"a1","files":[],"ipHistory":[]}]"#).is_ok());
}

async fn a_cpu_throttle_names_the_apis_own_limit(tls: bool) {
    let cfg =
        SimConfig { cpu_throttle_rate: 1.0, limits: SimConfig::default().limits, ..all_roles() };
    let env = Env::start_over(tls, cfg).await;
    let r = env.get("/api/machineactions/abc/GetPackageUri").await;
    assert_error(&r, 429, "TooManyRequests");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("2 per 00:01:00"), "{}", r.text);
    let id = env.ids()[0].clone();
    let r =
        env.post(&format!("/api/machines/{id}/startInvestigation"), json!({"Comment": "c"})).await;
    assert!(r.json["error"]["message"].as_str().unwrap().contains("50 per 01:00:00"), "{}", r.text);
    let r = env.get("/api/machines/findbytag?tag=VIP").await;
    assert!(
        r.json["error"]["message"].as_str().unwrap().contains("100 per 00:01:00"),
        "{}",
        r.text
    );
    assert_eq!(env.stats().await.cpu_throttled, 3);
}
