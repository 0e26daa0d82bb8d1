//! Look-ups and lists over real loopback HTTP: `$filter`, `$top`, `$skip`
//! and their errors, newest-first actions, name resolution with re-imaged
//! twins, paging, the fleet's determinism and fleet files.

mod sim_support;

use std::time::Duration;

use mdebulk::api::model::{Machine, MachineAction, ODataList};
use mdebulk::sim::{FleetSpec, Sim, SimConfig, fleet};
use serde_json::{Value, json};
use sim_support::*;

fn ids_of(r: &Reply) -> Vec<String> {
    r.json["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// `GET machines?$filter=...` with the filter percent-encoded.
async fn filter_machines(env: &Env, filter: &str) -> Reply {
    send(
        env.http
            .get(format!("{}/api/machines", env.base))
            .bearer_auth(&env.token)
            .query(&[("$filter", filter)]),
    )
    .await
}

async fn filter_actions(env: &Env, filter: &str) -> Reply {
    send(
        env.http
            .get(format!("{}/api/machineactions", env.base))
            .bearer_auth(&env.token)
            .query(&[("$filter", filter)]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_list_in_fleet_order_with_every_documented_key() {
    let env = Env::start(config()).await;
    let r = env.get("/api/machines").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(keys(&r.json), ["@odata.context", "value"]);
    assert_eq!(
        r.json["@odata.context"],
        format!("http://{}/api/$metadata#Machines", env.sim.addr())
    );
    assert_eq!(ids_of(&r), env.ids());
    let doc = fixture("machines-list.json");
    let doc_keys = keys(&doc["value"][0]);
    for m in r.json["value"].as_array().unwrap() {
        for k in &doc_keys {
            assert!(m.get(k).is_some(), "machine lacks {k}");
        }
        assert_eq!(m["onboardingStatus"], "Onboarded");
        assert!(m["machineTags"].is_array());
    }
    let typed: ODataList<Machine> = serde_json::from_str(&r.text).unwrap();
    assert_eq!(typed.value, env.sim.fleet());
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_filters() {
    let env = Env::start(SimConfig { offline_rate: 0.1, ..config() }).await;
    let fleet = env.sim.fleet();
    let name = |i: usize| fleet[i].computer_dns_name.clone().unwrap();
    let count = |pred: &dyn Fn(&Machine) -> bool| fleet.iter().filter(|m| pred(m)).count();
    let cases: Vec<(String, usize)> = vec![
        (format!("computerDnsName eq '{}'", name(3)), 1),
        (format!("computerDnsName eq '{}'", name(3).to_uppercase()), 0),
        ("startswith(computerDnsName,'host-0001')".into(), 10),
        ("osPlatform eq 'Linux'".into(), count(&|m| m.os_platform.as_deref() == Some("Linux"))),
        (
            "osPlatform eq 'Linux' or osPlatform eq 'macOS'".into(),
            count(&|m| m.is_linux_or_macos()),
        ),
        ("rbacGroupId eq 143".into(), count(&|m| m.is_linux_or_macos())),
        (
            "healthStatus ne 'Active'".into(),
            count(&|m| m.health_status.as_deref() != Some("Active")),
        ),
        (
            "(osPlatform eq 'Linux' or osPlatform eq 'macOS') and healthStatus eq 'Active'".into(),
            count(&|m| m.is_linux_or_macos() && m.health_status.as_deref() == Some("Active")),
        ),
        (
            "lastSeen gt 2025-05-31T00:00:00Z".into(),
            count(&|m| m.health_status.as_deref() == Some("Active")),
        ),
        ("lastSeen lt 2025-01-01T00:00:00Z".into(), 0),
        ("computerDnsName eq 'o''brien'".into(), 0),
        (format!("id eq '{}'", fleet[7].id), 1),
        ("machineTags eq 'vip'".into(), 0),
        ("onboardingStatus eq 'Onboarded'".into(), 100),
    ];
    for (filter, expected) in cases {
        let r = filter_machines(&env, &filter).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
        assert_eq!(r.json["value"].as_array().unwrap().len(), expected, "{filter}");
    }
    // A name shared by a device and its re-imaged twin matches both records.
    let primary = fleet::twin_of(100, 0);
    let r = filter_machines(&env, &format!("computerDnsName eq '{}'", name(primary))).await;
    assert_eq!(r.json["value"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn top_skip_and_odata_errors() {
    let env = Env::start(config()).await;
    let ids = env.ids();
    let r = env.get("/api/machines?$top=3&$skip=2").await;
    assert_eq!(ids_of(&r), ids[2..5]);
    assert_eq!(ids_of(&env.get("/api/machines?$skip=98").await), ids[98..]);
    assert_eq!(ids_of(&env.get("/api/machines?$top=0").await), Vec::<String>::new());
    assert_eq!(ids_of(&env.get("/api/machines?$top=10000").await).len(), 100);
    for bad in [
        "$top=10001",
        "$top=-1",
        "$top=abc",
        "$skip=x",
        "$orderby=lastSeen",
        "$select=nope",
        "$top=1&$top=2",
        "$filter=ComputerDnsName%20eq%20'x'",
        "$filter=computerDnsName%20eq%20x",
        "$filter=computerDnsName%20eq%20'x",
        "$filter=computerDnsName%20like%20'x'",
        "$filter=contains(computerDnsName,'x')",
        "$filter=lastSeen%20gt%20'2024-01-01'",
        "$filter=(osPlatform%20eq%20'Linux'",
        "$filter=",
    ] {
        let r = env.get(&format!("/api/machines?{bad}")).await;
        assert_error(&r, 400, "ODataError");
    }
    let r = env.get("/api/machineactions?$filter=computerDnsName%20eq%20'x'").await;
    assert_error(&r, 400, "ODataError");
    // Parameters without a $ are ignored.
    assert_eq!(env.get("/api/machines?api-version=1.0&$top=1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_by_id_or_name_picks_the_latest_twin() {
    let env = Env::start(config()).await;
    let fleet = env.sim.fleet();
    let r = env.get(&format!("/api/machines/{}", fleet[4].id)).await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.json)[0], "@odata.context");
    assert_eq!(
        r.json["@odata.context"],
        format!("http://{}/api/$metadata#Machines/$entity", env.sim.addr())
    );
    assert_eq!(r.json["id"], fleet[4].id.as_str());
    let by_name = env.get("/api/machines/host-00004.contoso.test").await;
    assert_eq!(by_name.json["id"], fleet[4].id.as_str());
    let upper = env.get(&format!("/api/machines/{}", fleet[4].id.to_uppercase())).await;
    assert_eq!(upper.json["id"], fleet[4].id.as_str());
    // Twins: the device record (seen last) wins over the stale re-imaged one.
    let n = fleet.len();
    for k in 0..fleet::twin_count(n) {
        let primary = &fleet[fleet::twin_of(n, k)];
        let twin = &fleet[n - fleet::twin_count(n) + k];
        assert_eq!(primary.computer_dns_name, twin.computer_dns_name);
        assert!(primary.last_seen > twin.last_seen);
        let name = primary.computer_dns_name.as_deref().unwrap();
        let r = env.get(&format!("/api/machines/{name}")).await;
        assert_eq!(r.json["id"], primary.id.as_str());
        // The twin is still reachable by its own id.
        assert_eq!(
            env.get(&format!("/api/machines/{}", twin.id)).await.json["id"],
            twin.id.as_str()
        );
    }
    assert_error(&env.get("/api/machines/nosuchhost.contoso.test").await, 404, "ResourceNotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_actions_newest_first_and_filtered() {
    let env = Env::start(SimConfig { settle: Duration::from_secs(60), ..config() }).await;
    let fleet = env.sim.fleet();
    let windows: Vec<&Machine> =
        fleet.iter().filter(|m| m.os_platform.as_deref().unwrap().starts_with("Windows")).collect();
    let mut created = Vec::new();
    for (i, (m, seg, body)) in [
        (windows[0], "isolate", json!({"Comment": "a"})),
        (windows[1], "isolate", json!({"Comment": "b"})),
        (windows[0], "runAntiVirusScan", json!({"Comment": "c", "ScanType": "Quick"})),
        (windows[2], "StopAndQuarantineFile", json!({"Comment": "d", "Sha1": SHA1})),
    ]
    .into_iter()
    .enumerate()
    {
        let r = env.action(&m.id, seg, body).await;
        assert_eq!(r.status, 201, "{i}: {}", r.text);
        created.push(r.json);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = |i: usize| created[i]["id"].as_str().unwrap().to_string();
    let all = env.get("/api/machineactions").await;
    assert_eq!(
        all.json["@odata.context"],
        format!("http://{}/api/$metadata#MachineActions", env.sim.addr())
    );
    assert_eq!(ids_of(&all), [id(3), id(2), id(1), id(0)], "newest first");
    let typed: ODataList<MachineAction> = serde_json::from_str(&all.text).unwrap();
    assert_eq!(typed.value.len(), 4);
    let doc_keys = keys(&fixture("machineactions-list.json")["value"][0]);
    for a in all.json["value"].as_array().unwrap() {
        assert_eq!(keys(a), keys(&fixture("machineaction-offboard-201.json"))[1..]);
        for k in &doc_keys {
            assert!(a.get(k).is_some(), "{k}");
        }
    }
    assert_eq!(ids_of(&env.get("/api/machineactions?$top=2").await), [id(3), id(2)]);
    assert_eq!(ids_of(&env.get("/api/machineactions?$skip=3").await), [id(0)]);
    let cases: Vec<(String, Vec<String>)> = vec![
        (format!("machineId eq '{}'", windows[0].id), vec![id(2), id(0)]),
        ("type eq 'Isolate'".into(), vec![id(1), id(0)]),
        (format!("id eq '{}' or id eq '{}'", id(0), id(3)), vec![id(3), id(0)]),
        ("status eq 'Pending'".into(), vec![id(3), id(2), id(1), id(0)]),
        ("status eq 'Succeeded'".into(), vec![]),
        ("requestor eq 'mdebulk simulator' and type eq 'RunAntiVirusScan'".into(), vec![id(2)]),
        (
            format!(
                "creationDateTimeUtc ge {}",
                created[2]["creationDateTimeUtc"].as_str().unwrap()
            ),
            vec![id(3), id(2)],
        ),
        (
            format!(
                "creationDateTimeUtc lt {}",
                created[1]["creationDateTimeUtc"].as_str().unwrap()
            ),
            vec![id(0)],
        ),
    ];
    for (filter, expected) in cases {
        let r = filter_actions(&env, &filter).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
        assert_eq!(ids_of(&r), expected, "{filter}");
    }
    let one = env.get(&format!("/api/machineactions/{}", id(3))).await;
    assert_eq!(
        one.json["@odata.context"],
        format!("http://{}/api/$metadata#MachineActions/$entity", env.sim.addr())
    );
    assert_eq!(one.json["relatedFileInfo"]["fileIdentifier"], SHA1);
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_with_next_links() {
    let env = Env::start(SimConfig {
        fleet: FleetSpec::Generate { machines: 10 },
        page_size: Some(4),
        ..config()
    })
    .await;
    let mut url = format!("{}/api/machines", env.base);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = send(env.http.get(&url).bearer_auth(&env.token)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(ids_of(&r));
        pages += 1;
        match r.json.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, env.ids());
    // The link keeps the filter and the remaining $top.
    let r = filter_machines(&env, "startswith(computerDnsName,'host-')").await;
    let next = r.json["@odata.nextLink"].as_str().unwrap();
    assert!(next.contains("$filter=") && next.contains("$skip=4"), "{next}");
    let r = env.get("/api/machines?$top=6").await;
    let next = r.json["@odata.nextLink"].as_str().unwrap().to_string();
    let rest = send(env.http.get(&next).bearer_auth(&env.token)).await;
    assert_eq!(ids_of(&rest), env.ids()[4..6]);
    assert!(rest.json.get("@odata.nextLink").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_fleet_is_deterministic_and_documented() {
    let start = |seed| {
        Sim::start(SimConfig {
            fleet: FleetSpec::Generate { machines: 250 },
            seed,
            offline_rate: 0.2,
            ..config()
        })
    };
    let (a, b, c) = (start(7).await.unwrap(), start(7).await.unwrap(), start(8).await.unwrap());
    assert_eq!(a.fleet(), b.fleet());
    assert_ne!(a.fleet()[0].id, c.fleet()[0].id);
    let f = a.fleet();
    assert_eq!(f.len(), 250);
    let t = fleet::twin_count(250);
    assert_eq!(t, 2);
    for (i, m) in f.iter().enumerate().take(250 - t) {
        assert_eq!(
            m.computer_dns_name.as_deref(),
            Some(format!("host-{i:05}.contoso.test").as_str())
        );
        assert_eq!(m.os_platform.as_deref() == Some("Linux"), i % 10 == 7);
        assert_eq!(m.os_platform.as_deref() == Some("macOS"), i % 20 == 9);
        assert_eq!(
            m.health_status.as_deref() == Some("Inactive"),
            (i + 1).is_multiple_of(5),
            "{i}"
        );
        assert!(
            m.id.len() == 40
                && m.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(m.last_ip_address.as_deref().unwrap().starts_with("10."));
        assert_eq!(m.aad_device_id.is_some(), m.extra["isAadJoined"] == true);
    }
    let oses: std::collections::HashSet<_> =
        f.iter().filter_map(|m| m.os_platform.clone()).collect();
    for os in ["Windows10", "Windows11", "WindowsServer2019", "Linux", "macOS"] {
        assert!(oses.contains(os), "{os}");
    }
    for s in [a, b, c] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_files_in_the_api_shape() {
    let doc = fixture("machines-list.json");
    let machines = fleet::parse(&doc.to_string()).unwrap();
    let env = Env::start(SimConfig { fleet: FleetSpec::Machines(machines), ..config() }).await;
    let r = env.get("/api/machines").await;
    let m = &r.json["value"][0];
    for (k, v) in doc["value"][0].as_object().unwrap() {
        assert_eq!(&m[k], v, "{k}");
    }
    assert_eq!(
        filter_machines(&env, "rbacGroupId eq 140").await.json["value"].as_array().unwrap().len(),
        1
    );
    let r = env.get("/api/machines/mymachine1.contoso.com").await;
    assert_eq!(r.json["id"], "1e5bc9d7e413ddd7902c2932e418702b84d0cc07");
    // The array shape, with an offline machine.
    let array = json!([
        {"id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "computerDnsName": "a", "osPlatform": "Windows11", "healthStatus": "Active"},
        {"id": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "computerDnsName": "b", "osPlatform": "Linux", "healthStatus": "Inactive"}
    ]);
    let machines = fleet::parse(&array.to_string()).unwrap();
    let env = Env::start(SimConfig {
        fleet: FleetSpec::Machines(machines),
        action_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let r = env
        .action("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "isolate", json!({"Comment": "x"}))
        .await;
    assert_eq!(r.status, 201);
    let done = wait_final(&env, r.json["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done["status"], "TimeOut");
    assert_eq!(done["computerDnsName"], "b");
}
