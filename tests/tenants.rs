//! A run over many tenants (`--tenants FILE`): the real binary against one
//! simulator serving three tenants over loopback HTTP, each tenant logged
//! in with its own profile. Rows of three tenants in one input; a row
//! naming a tenant the file does not define refuses the file before any
//! call; every call carries the token of the row's own tenant; a tenant
//! whose consent is withdrawn stops alone and resumes later without a
//! device touched twice; undo reverses each tenant's actions with that
//! tenant's credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    TempDir, output, read_results, scoped_token, stats, tenant_machines, tenants_sim, text,
};
use mdebulk::sim::{Sim, SimConfig};

/// The app the simulator consents in every tenant, and its secret.
const APP: &str = "app-1";
const SECRET: &str = "s3cret-value-never-logged";

/// The profiles: contoso is `tenant-01` by name, fabrikam `tenant-02` by
/// its id (GUID), northwind `tenant-03`; each secret in a variable of its
/// own.
fn profiles(sim: &Sim, dir: &TempDir) -> PathBuf {
    let ids = sim.tenants();
    let mut text = String::new();
    for (name, tenant) in [
        ("contoso", ids[0].name.as_str()),
        ("fabrikam", ids[1].id.as_str()),
        ("northwind", ids[2].name.as_str()),
    ] {
        text.push_str(&format!(
            "[tenant.{name}]\ntenant_id = \"{tenant}\"\nauth = \"secret\"\nclient_id = \"{APP}\"\nclient_secret_env = \"SECRET_{}\"\napi_url = \"{url}\"\nlogin_url = \"{url}\"\n\n",
            name.to_uppercase(),
            url = sim.url()
        ));
    }
    let path = dir.path("tenants.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `mdebulk run INPUT --tenants PROFILES -o RESULTS` with each tenant's
/// secret in its variable and no credentials of the process's own.
fn run(sim: &Sim, profiles: &Path, input: &Path, results: &Path, extra: &[&str]) -> Command {
    let mut cmd = tenants_command(sim);
    cmd.arg("run").arg(input).arg("--tenants").arg(profiles).arg("-o").arg(results).args(extra);
    cmd
}

/// The binary with the profiles' secret variables set, and the
/// environment's own credentials taken away: only the profiles log in.
fn tenants_command(sim: &Sim) -> Command {
    let mut cmd = common::mdebulk(sim);
    for var in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "MDE_API_URL",
        "MDE_LOGIN_URL",
    ] {
        cmd.env_remove(var);
    }
    for name in ["CONTOSO", "FABRIKAM", "NORTHWIND"] {
        cmd.env(format!("SECRET_{name}"), SECRET);
    }
    cmd
}

/// Rows of the three tenants, interleaved, mixed actions, the tenant given
/// by profile name (any case) or tenant id: (tenant cell, machine id,
/// action) each.
fn mixed_rows(sim: &Sim) -> Vec<(String, String, &'static str)> {
    let t = sim.tenants();
    let a = tenant_machines(sim, &t[0].name);
    let b = tenant_machines(sim, &t[1].name);
    let c = tenant_machines(sim, &t[2].name);
    vec![
        ("contoso".into(), a[0].id.clone(), "isolate"),
        ("FABRIKAM".into(), b[0].id.clone(), "isolate"),
        (t[1].id.clone(), b[1].id.clone(), "scan"),
        ("northwind".into(), c[0].id.clone(), "collect-investigation-package"),
        ("Contoso".into(), a[1].id.clone(), "scan"),
        ("northwind".into(), c[1].id.clone(), "isolate"),
        ("contoso".into(), a[2].id.clone(), "isolate"),
        ("fabrikam".into(), b[2].id.clone(), "isolate"),
    ]
}

fn csv(rows: &[(String, String, &str)]) -> String {
    let mut s = String::from("customer,machine_id,action,comment\n");
    for (tenant, id, action) in rows {
        s.push_str(&format!("{tenant},{id},{action},IR-18\n"));
    }
    s
}

fn config() -> SimConfig {
    SimConfig { settle: std::time::Duration::from_millis(300), ..SimConfig::default() }
}

#[tokio::test]
async fn three_tenants_with_mixed_actions_in_one_run_each_row_in_its_own_tenant() {
    let sim = tenants_sim(3, config()).await;
    let dir = TempDir::new("tenants-mixed");
    let profiles = profiles(&sim, &dir);
    let rows = mixed_rows(&sim);
    let input = dir.path("rows.csv");
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = text(&out);
    for line in [
        "contoso: 3 row(s): submitted 3",
        "fabrikam: 3 row(s): submitted 3",
        "northwind: 2 row(s): submitted 2",
    ] {
        assert!(summary.contains(line), "{line:?} in {summary}");
    }

    // One results file, input order, every row with its tenant as given.
    let written = read_results(&results);
    assert_eq!(written.len(), rows.len());
    for (i, (row, (tenant, id, action))) in written.iter().zip(&rows).enumerate() {
        assert_eq!(row["line"], (i + 2).to_string());
        assert_eq!(&row["customer"], tenant);
        assert_eq!(&row["machine_id"], id);
        assert_eq!(row["action"], *action);
        assert_eq!(row["status"], "submitted", "{row:?}");
        assert!(!row["action_id"].is_empty());
    }

    // Each tenant saw its own rows' actions, with its own token: no call
    // was refused as another tenant's (401) or missed a machine (404).
    let s = stats(&sim);
    assert_eq!(s.unauthorized, 0);
    assert_eq!(s.not_found, 0);
    assert_eq!(s.throttled, 0);
    let names: Vec<String> = sim.tenants().into_iter().map(|t| t.name).collect();
    for (name, created) in names.iter().zip([3, 3, 2]) {
        let per = &s.tenants[name];
        assert_eq!(per.actions_created, created, "{name}");
        assert_eq!(per.unauthorized + per.not_found, 0, "{name}");
        assert!(per.tokens_issued >= 1, "{name} logged in on its own");
    }
    for count in sim.action_counts().values() {
        assert_eq!(*count, 1);
    }

    // The shares' files are owner-only, beside the results.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let shares = dir.path("rows.results.csv.tenants");
        assert_eq!(std::fs::metadata(&shares).unwrap().permissions().mode() & 0o777, 0o700);
        for entry in std::fs::read_dir(&shares).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
    // The secrets are nowhere in what the run printed or wrote.
    assert!(!summary.contains(SECRET));
    for entry in std::fs::read_dir(dir.path("rows.results.csv.tenants")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
    }
}

#[tokio::test]
async fn a_row_naming_a_tenant_the_file_does_not_define_refuses_the_run_before_any_call() {
    let sim = tenants_sim(3, config()).await;
    let dir = TempDir::new("tenants-unknown");
    let profiles = profiles(&sim, &dir);
    let mut rows = mixed_rows(&sim);
    rows.insert(3, ("contoso-old".into(), "ab".repeat(20), "isolate"));
    let input = dir.path("rows.csv");
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("line 5, column customer: \"contoso-old\""), "{said}");
    assert!(said.contains("\"contoso\", \"fabrikam\", \"northwind\""), "{said}");
    assert_eq!(stats(&sim).requests, 0, "not even a login");
    assert!(!results.exists());

    // With --skip-invalid the row is recorded `invalid` in its place, and
    // the others are sent.
    let out = output(run(&sim, &profiles, &input, &results, &["--skip-invalid"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let written = read_results(&results);
    assert_eq!(written.len(), rows.len());
    assert_eq!(written[3]["status"], "invalid");
    assert_eq!(written[3]["customer"], "contoso-old");
    assert_eq!(written.iter().filter(|r| r["status"] == "submitted").count(), rows.len() - 1);
    assert_eq!(stats(&sim).actions_created, rows.len() as u64 - 1);
}

#[tokio::test]
async fn another_tenants_token_is_refused_by_the_simulator_and_never_used_by_the_runner() {
    let sim = tenants_sim(3, config()).await;
    let t = sim.tenants();
    let a = tenant_machines(&sim, &t[0].name);
    // The simulator: tenant-02's token does not reach tenant-01's machine.
    let http = reqwest::Client::new();
    let scope = "https://api.securitycenter.microsoft.com/.default";
    let token_b = scoped_token(&http, &sim.url(), &t[1].name, APP, SECRET, scope).await;
    let reply = http
        .get(format!("{}/api/machines/{}", sim.url(), a[0].id))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert!(matches!(reply.status().as_u16(), 401 | 404), "{}", reply.status());

    // The runner: a row of tenant-01's machine labelled as fabrikam's is
    // sent with fabrikam's token, so the machine is not found there — and
    // the machine in tenant-01 is untouched.
    let dir = TempDir::new("tenants-cross");
    let profiles = profiles(&sim, &dir);
    let input = dir.path("rows.csv");
    let rows = vec![("fabrikam".to_string(), a[0].id.clone(), "isolate")];
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let written = read_results(&results);
    assert_ne!(written[0]["status"], "submitted", "{:?}", written[0]);
    let s = stats(&sim);
    assert_eq!(s.tenants[&t[0].name].actions_created, 0);
    // No login and no call of tenant-01's: its credentials were never used.
    assert_eq!(s.tenants[&t[0].name].requests, 0);
    assert!(s.tenants[&t[1].name].requests >= 2);
}

#[tokio::test]
async fn one_tenants_revoked_consent_stops_its_rows_alone_and_resume_finishes_them_once() {
    let sim = tenants_sim(3, config()).await;
    let t = sim.tenants();
    assert!(sim.revoke_client_in(APP, &t[1].name));
    let dir = TempDir::new("tenants-revoked");
    let profiles = profiles(&sim, &dir);
    let rows = mixed_rows(&sim);
    let input = dir.path("rows.csv");
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("tenant fabrikam"), "{said}");
    assert!(said.contains("--resume"), "{said}");
    let written = read_results(&results);
    assert_eq!(written.len(), rows.len());
    for (row, (tenant, _, _)) in written.iter().zip(&rows) {
        let fabrikam = tenant.eq_ignore_ascii_case("fabrikam") || *tenant == t[1].id;
        let expected = if fabrikam { "not_sent" } else { "submitted" };
        assert_eq!(row["status"], expected, "{row:?}");
    }
    assert_eq!(stats(&sim).tenants[&t[1].name].actions_created, 0);

    // Consent granted again: the resume sends fabrikam's rows, and only them.
    sim.restore_client(APP);
    let out = output(run(&sim, &profiles, &input, &results, &["--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = read_results(&results);
    assert!(written.iter().all(|r| r["status"] == "submitted"), "{written:?}");
    let s = stats(&sim);
    assert_eq!(s.actions_created, rows.len() as u64);
    assert_eq!(s.duplicate_submissions, 0);
    for count in sim.action_counts().values() {
        assert_eq!(*count, 1);
    }
    // Run again as it is: refused, nothing sent.
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--resume"));
    assert_eq!(stats(&sim).actions_created, rows.len() as u64);
}

#[tokio::test]
async fn tenant_restricts_a_run_to_one_tenant_and_its_resume() {
    let sim = tenants_sim(3, config()).await;
    let t = sim.tenants();
    let dir = TempDir::new("tenants-one");
    let profiles = profiles(&sim, &dir);
    let rows = mixed_rows(&sim);
    let input = dir.path("rows.csv");
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out =
        output(run(&sim, &profiles, &input, &results, &["--tenant", &t[2].name.to_uppercase()]))
            .await;
    // `tenant-03` is northwind's tenant id: --tenant takes either.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = read_results(&results);
    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|r| r["customer"] == "northwind" && r["status"] == "submitted"));
    let s = stats(&sim);
    assert_eq!(s.actions_created, 2);
    assert_eq!(s.tenants[&t[0].name].requests + s.tenants[&t[1].name].requests, 0);

    let out = output(run(&sim, &profiles, &input, &results, &["--tenant", "nobody"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--tenant \"nobody\""), "{}", text(&out));
}

#[tokio::test]
async fn status_and_undo_follow_each_tenant_with_its_own_credentials() {
    let sim = tenants_sim(3, config()).await;
    let t = sim.tenants();
    let dir = TempDir::new("tenants-undo");
    let profiles = profiles(&sim, &dir);
    let rows = mixed_rows(&sim);
    let input = dir.path("rows.csv");
    std::fs::write(&input, csv(&rows)).unwrap();
    let results = dir.path("rows.results.csv");
    let out = output(run(&sim, &profiles, &input, &results, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // status --wait: every tenant's actions followed to their end.
    let mut status = tenants_command(&sim);
    status.arg("status").arg(&results).arg("--tenants").arg(&profiles);
    status.args(["--wait", "--poll-interval", "200ms", "--wait-timeout", "30s"]);
    let out = output(status).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = read_results(&results);
    assert_eq!(written.len(), rows.len());
    for (row, (tenant, id, _)) in written.iter().zip(&rows) {
        assert_eq!(row["status"], "succeeded", "{row:?}");
        assert_eq!(&row["customer"], tenant, "the tenant column stays as written");
        assert_eq!(&row["machine_id"], id);
    }

    // devices: every tenant's isolated devices in one report, each row
    // headed by its tenant.
    let report = dir.path("isolated.csv");
    let mut devices = tenants_command(&sim);
    devices.arg("devices").arg("--tenants").arg(&profiles).arg("--isolated").arg("-o").arg(&report);
    let out = output(devices).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = read_results(&report);
    let mut isolated: Vec<(String, String)> =
        listed.iter().map(|r| (r["tenant"].clone(), r["machine_id"].clone())).collect();
    isolated.sort();
    let mut expected: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.2 == "isolate")
        .map(|(tenant, id, _)| {
            let name = match tenant.to_lowercase().as_str() {
                "contoso" | "fabrikam" | "northwind" => tenant.to_lowercase(),
                _ => "fabrikam".to_string(),
            };
            (name, id.clone())
        })
        .collect();
    expected.sort();
    assert_eq!(isolated, expected);

    // undo: each isolation released in its own tenant, the rest skipped.
    let mut undo = tenants_command(&sim);
    undo.arg("undo").arg(&results).arg("--tenants").arg(&profiles).arg("--yes");
    let out = output(undo).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let undone = read_results(&dir.path("rows.results.undo.csv"));
    assert_eq!(undone.len(), rows.len());
    for (row, (tenant, id, action)) in undone.iter().zip(&rows) {
        assert_eq!(&row["customer"], tenant);
        assert_eq!(&row["machine_id"], id);
        let expected = if *action == "isolate" { "submitted" } else { "skipped" };
        assert_eq!(row["status"], expected, "{row:?}");
    }
    let s = stats(&sim);
    assert_eq!(s.unauthorized + s.not_found, 0);
    // Each tenant's own rows, then its own releases: contoso and fabrikam
    // had three rows and two isolations each, northwind two and one.
    for (name, created) in t.iter().map(|t| &t.name).zip([5, 5, 3]) {
        assert_eq!(s.tenants[name].actions_created, created, "{name}");
    }
    let releases = sim
        .action_counts()
        .iter()
        .filter(|((_, kind), _)| kind == "Unisolate")
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert_eq!(releases, rows.iter().filter(|r| r.2 == "isolate").count() as u64);
}

#[tokio::test]
async fn a_tag_finds_each_tenants_own_devices_with_its_own_token() {
    let sim = tenants_sim(3, config()).await;
    let t = sim.tenants();
    let http = reqwest::Client::new();
    // Two tagged machines in contoso, one in northwind, none in fabrikam.
    let mut tagged = Vec::new();
    for (tenant, n) in [(&t[0].name, 2), (&t[2].name, 1)] {
        for m in tenant_machines(&sim, tenant).into_iter().take(n) {
            let r = http
                .post(format!("{}/_sim/machines/{}/tags?tenant={tenant}", sim.url(), m.id))
                .json(&["IR-18"])
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            tagged.push(m.id);
        }
    }
    let dir = TempDir::new("tenants-tag");
    let profiles = profiles(&sim, &dir);
    let results = dir.path("ir18.results.csv");
    let mut cmd = tenants_command(&sim);
    cmd.args(["run", "--tag", "ir-18", "--action", "isolate", "--comment", "IR-18", "--tenants"])
        .arg(&profiles)
        .arg("-o")
        .arg(&results);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = read_results(&results);
    let got: Vec<(String, String)> =
        written.iter().map(|r| (r["tenant"].clone(), r["machine_id"].clone())).collect();
    let expected = vec![
        ("contoso".to_string(), tagged[0].clone()),
        ("contoso".to_string(), tagged[1].clone()),
        ("northwind".to_string(), tagged[2].clone()),
    ];
    let mut sorted = got.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want);
    assert!(written.iter().all(|r| r["status"] == "submitted"), "{written:?}");
    let s = stats(&sim);
    assert_eq!(s.unauthorized + s.not_found, 0);
    assert_eq!(s.tenants[&t[1].name].actions_created, 0);
}
