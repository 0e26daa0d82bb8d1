//! Guardrails by policy and by approval: the protected-devices policy
//! (`--protect`, `MDEBULK_PROTECT`) and plan/apply with a digest, the real
//! binary against the simulator. Action calls are counted, never timed.

mod common;

use std::collections::BTreeSet;

use common::*;
use mdebulk::api::model::Machine;
use mdebulk::sim::Sim;

/// Renames a machine through the simulator's hook.
async fn rename(sim: &Sim, id: &str, name: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/machines/{id}/name", sim.url()))
        .json(&name)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Every action the simulator holds, as `GET machineactions` lists them.
async fn actions(sim: &Sim) -> Vec<serde_json::Value> {
    api_json(sim, "/api/machineactions").await["value"].as_array().unwrap().clone()
}

/// A machine's `rbacGroupName`.
fn group(m: &Machine) -> String {
    m.extra["rbacGroupName"].as_str().unwrap().to_string()
}

/// The machine ids of rows with `status`.
fn ids_with(rows: &[std::collections::HashMap<String, String>], status: &str) -> BTreeSet<String> {
    rows.iter().filter(|r| r["status"] == status).map(|r| r["machine_id"].clone()).collect()
}

fn ids(machines: &[&Machine]) -> BTreeSet<String> {
    machines.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_controller_by_tag_or_group_is_never_isolated_and_the_run_is_refused() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-tag-group");
    let machines = windows_online(&sim, 12);
    set_tags(&sim, &machines[1].id, &["Tier0", "DomainController"]).await;
    // The group of machine 4 protects every machine of the input in it.
    let dc_group = group(&machines[4]);
    let protected: Vec<&Machine> = machines
        .iter()
        .enumerate()
        .filter(|(i, m)| *i == 1 || group(m) == dc_group)
        .map(|(_, m)| m)
        .collect();
    assert!(protected.len() < machines.len(), "some devices are left to isolate");
    let policy = dir.write(
        "protect.toml",
        format!(
            "# never cut off a DC\ntags = [\"domaincontroller\"]\ngroups = [\"{}\"]\n",
            dc_group.to_uppercase()
        ),
    );
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let lookups = api_calls(&sim, "GET machines");
    let protect = ["--protect", policy.to_str().unwrap(), "--no-progress"];
    let out = output(isolate(&sim, &input, &protect)).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&format!("{} row(s) would act on devices", protected.len())), "{all}");
    assert!(all.contains("line 3: isolate") && all.contains(&machines[1].id), "{all}");
    assert!(all.contains("tags \"domaincontroller\"") && all.contains("--skip-protected"), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 0, "nothing is sent");
    assert_eq!(
        api_calls(&sim, "GET machines") - lookups,
        1,
        "the 12 ids are looked up in one batch"
    );
    assert!(!dir.path("hosts.results.csv").exists());
    assert!(!dir.path("hosts.results.csv.journal").exists(), "a refused run leaves no journal");

    // A dry run plans the others and marks them protected.
    let out = output(isolate(&sim, &input, &[&protect[..], &["--dry-run"]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = read_results(&dir.path("hosts.plan.csv"));
    assert_eq!(ids_with(&plan, "protected"), ids(&protected));
    assert!(text(&out).contains("protected by policy, not sent: line"), "{}", text(&out));

    // With --skip-protected the rest is sent; protected rows are not failures.
    let out = output(isolate(&sim, &input, &[&protect[..], &["--skip-protected"]].concat())).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(ids_with(&rows, "protected"), ids(&protected));
    assert_eq!(ids_with(&rows, "submitted").len(), machines.len() - protected.len());
    assert_eq!(api_calls(&sim, "isolate") as usize, machines.len() - protected.len());
    let acted: BTreeSet<String> =
        actions(&sim).await.iter().map(|a| a["machineId"].as_str().unwrap().to_string()).collect();
    assert!(acted.is_disjoint(&ids(&protected)), "no action reached a protected device");
    let why = rows.iter().find(|r| r["machine_id"] == machines[1].id).unwrap();
    assert_eq!(why["error_code"], "Protected");
    assert!(why["error_message"].contains("protect.toml"), "{why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_by_glob_and_machine_ids_are_protected_and_actions_limit_what_is_guarded() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-glob");
    let machines = windows_online(&sim, 6);
    rename(&sim, &machines[2].id, "DC-LON-01.contoso.test").await;
    let policy = dir.write(
        "protect.toml",
        format!("names = [\"dc-???-0?\"]\nmachine_ids = [\"{}\"]\n", machines[4].id.to_uppercase()),
    );
    // Rows by name: the renamed DC matches the glob on its first label.
    let mut names = String::from("device_name\n");
    for (i, m) in machines.iter().enumerate() {
        let name =
            if i == 2 { "dc-lon-01".to_string() } else { m.computer_dns_name.clone().unwrap() };
        names.push_str(&format!("{name}\n"));
    }
    let input = dir.write("names.csv", names);
    let flags = ["--protect", policy.to_str().unwrap(), "--no-progress", "--skip-protected"];
    let out = output(isolate(&sim, &input, &flags)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("names.results.csv"));
    assert_eq!(ids_with(&rows, "protected"), ids(&[&machines[2], &machines[4]]));
    assert_eq!(api_calls(&sim, "isolate"), 4);
    let msg = &rows[2]["error_message"];
    assert!(msg.contains("names \"dc-???-0?\""), "{msg}");
    assert!(rows[4]["error_message"].contains("machine_ids"), "{:?}", rows[4]);

    // A policy guarding offboard only lets isolations through; scans are
    // never guarded by default.
    let offboard_only =
        dir.write("offboard.toml", "names = [\"dc-*\"]\nactions = [\"offboard\"]\n");
    let flags = ["--protect", offboard_only.to_str().unwrap(), "--no-progress", "--force"];
    let dc = dir.write("dc.csv", format!("machine_id\n{}\n", machines[2].id));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&dc).args(["--action", "unisolate", "--comment", "x"]).args(flags);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = output(isolate(&sim, &dc, &flags)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 5, "isolate is not guarded by this policy");
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&dc).args(["--action", "offboard", "--comment", "x", "--yes"]).args(flags);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 2: offboard"), "{}", text(&out));
    assert_eq!(api_calls(&sim, "offboard"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdebulk_protect_names_the_policy_and_the_flag_wins() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-env");
    let machines = windows_online(&sim, 3);
    set_tags(&sim, &machines[0].id, &["DomainController"]).await;
    let policy = dir.write("protect.toml", "tags = [\"DomainController\"]\n");
    let empty = dir.write("nothing.toml", "");
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let mut cmd = isolate(&sim, &input, &["--no-progress"]);
    cmd.env("MDEBULK_PROTECT", &policy);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("1 row(s) would act on devices"), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 0);
    let mut cmd = isolate(&sim, &input, &["--no-progress", "--protect", empty.to_str().unwrap()]);
    cmd.env("MDEBULK_PROTECT", &policy);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_policy_is_refused_with_its_line_and_column_before_any_call() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-bad");
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    for (body, at, what) in [
        ("tags = [\"DC\"]\nname = [\"dc-*\"]\n", "protect.toml:2:1", "unknown field"),
        ("tags = \"DomainController\"\n", "protect.toml:1:8", "invalid type"),
        ("actions = [\"isolate\", \"nuke\"]\n", "protect.toml:1:23", "nuke"),
    ] {
        let policy = dir.write("protect.toml", body);
        let out = output(isolate(&sim, &input, &["--protect", policy.to_str().unwrap()])).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains(at) && all.contains(what), "{at} {what}: {all}");
    }
    assert_eq!(stats(&sim).requests, 0, "nothing at all is sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_targets_are_checked_against_the_policy_too() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-targets");
    let machines = windows_online(&sim, 3);
    set_tags(&sim, &machines[0].id, &["IR-9"]).await;
    set_tags(&sim, &machines[1].id, &["IR-9", "DomainController"]).await;
    let policy = dir.write("protect.toml", "tags = [\"domaincontroller\"]\n");
    let out_path = dir.path("ir9.csv");
    let mut cmd = mdebulk(&sim);
    cmd.args(["run", "--tag", "IR-9", "--action", "isolate", "--comment", "IR", "--no-progress"])
        .args(["--protect", policy.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(&machines[1].id), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 0);
}

/// `run hosts.csv --action isolate --comment IR-7 --dry-run --planner alice`
/// over the device names of `machines`; returns the digest it printed.
async fn plan(sim: &Sim, dir: &TempDir, machines: &[Machine]) -> String {
    let mut names = String::from("device_name,owner\n");
    for (i, m) in machines.iter().enumerate() {
        names.push_str(&format!("{},owner-{i}\n", m.computer_dns_name.as_deref().unwrap()));
    }
    let input = dir.write("hosts.csv", names);
    let mut cmd = mdebulk(sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate", "--comment", "IR-7"]);
    cmd.args(["--dry-run", "--planner", "alice", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    let digest = all
        .lines()
        .find_map(|l| l.trim().strip_prefix("plan digest: "))
        .unwrap_or_else(|| panic!("no digest in {all}"))
        .to_string();
    assert_eq!(digest.len(), 64, "{digest}");
    assert!(all.contains(&format!("mdebulk apply {}", dir.path("hosts.plan.csv").display())));
    assert!(dir.path("hosts.plan.csv.params.json").exists());
    digest
}

fn apply(sim: &Sim, dir: &TempDir, digest: &str) -> std::process::Command {
    let mut cmd = mdebulk(sim);
    cmd.arg("apply").arg(dir.path("hosts.plan.csv")).args(["--digest", digest]);
    cmd.args(["--approver", "bob", "--no-progress"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_plan_is_applied_exactly_with_the_digest_planner_and_approver_in_each_comment()
{
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("apply");
    let machines = windows_online(&sim, 4);
    let digest = plan(&sim, &dir, &machines).await;
    assert_eq!(api_calls(&sim, "isolate"), 0);
    let out = output(apply(&sim, &dir, &digest)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("plan {digest} by alice, approved by bob")),
        "{}",
        text(&out)
    );
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(ids_with(&rows, "submitted"), ids(&machines.iter().collect::<Vec<_>>()));
    assert_eq!(api_calls(&sim, "isolate"), 4, "each planned row once");
    let prefix = format!("[plan {} by alice, approved by bob] IR-7", &digest[..12]);
    let listed = actions(&sim).await;
    assert_eq!(listed.len(), 4);
    for a in &listed {
        assert_eq!(a["requestorComment"].as_str(), Some(prefix.as_str()), "{a}");
    }
    let journal = std::fs::read_to_string(dir.path("hosts.results.csv.journal")).unwrap();
    assert!(journal.contains(&digest) && journal.contains("\"approver\":\"bob\""), "{journal}");
    // Applying it again is refused like any run over existing results.
    let out = output(apply(&sim, &dir, &digest)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_plan_or_another_digest_is_refused_before_any_call() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("apply-edited");
    let machines = windows_online(&sim, 3);
    let digest = plan(&sim, &dir, &machines).await;
    let last = if digest.ends_with('0') { '1' } else { '0' };
    let other = format!("{}{last}", &digest[..63]);
    let out = output(apply(&sim, &dir, &other)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not this plan's digest"), "{}", text(&out));
    let plan_path = dir.path("hosts.plan.csv");
    let body = std::fs::read_to_string(&plan_path).unwrap();
    std::fs::write(&plan_path, body.replace(&machines[1].id, &machines[2].id)).unwrap();
    let out = output(apply(&sim, &dir, &digest)).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("changed since the dry run made it"), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 0);
    assert!(!dir.path("hosts.results.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_device_was_renamed_since_is_refused_naming_the_row() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("apply-renamed");
    let machines = windows_online(&sim, 3);
    let digest = plan(&sim, &dir, &machines).await;
    rename(&sim, &machines[1].id, "someone-else.contoso.test").await;
    let out = output(apply(&sim, &dir, &digest)).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("1 row(s) of the plan would not be carried out as approved"), "{all}");
    assert!(all.contains("line 3: isolate") && all.contains("someone-else.contoso.test"), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 0);
    assert!(!dir.path("hosts.results.csv.journal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_and_a_replay_are_checked_against_the_policy_too() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("protect-resume");
    let machines = windows_online(&sim, 4);
    set_tags(&sim, &machines[3].id, &["DomainController"]).await;
    let policy = dir.write("protect.toml", "tags = [\"DomainController\"]\n");
    let input = dir.write("hosts.csv", ids_csv(&machines[..3]));
    let out = output(isolate(&sim, &input, &["--no-progress"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 3);

    // The DC joins the input: a resume with the policy refuses it alone
    // (the rows sent earlier are not in question) and keeps the journal.
    let input = dir.write("hosts.csv", ids_csv(&machines));
    let flags = ["--no-progress", "--resume", "--protect", policy.to_str().unwrap()];
    let out = output(isolate(&sim, &input, &flags)).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("1 row(s) would act on devices") && all.contains("line 5: isolate"),
        "{all}"
    );
    assert_eq!(api_calls(&sim, "isolate"), 3);
    assert!(dir.path("hosts.results.csv.journal").exists(), "a resumed run's journal is kept");

    // Replaying a results file that holds the DC is refused the same way.
    let earlier = dir.write(
        "earlier.results.csv",
        format!("machine_id,line,status\n{},2,error\n{},3,error\n", machines[0].id, machines[3].id),
    );
    let replay = dir.path("replay.csv");
    let flags = ["--no-progress", "--only", "error", "-o", replay.to_str().unwrap()];
    let out = output(isolate(
        &sim,
        &earlier,
        &[&flags[..], &["--protect", policy.to_str().unwrap()]].concat(),
    ))
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("line 3: isolate") && all.contains(&machines[3].id), "{all}");
    assert_eq!(api_calls(&sim, "isolate"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_the_plan_with_the_column_choices_the_plan_was_made_with() {
    let sim = sim(sim_config(&["100/60s", "1500/3600s"])).await;
    let dir = TempDir::new("apply-columns");
    let machines = windows_online(&sim, 2);
    // `name` is the owner here, not the device: left out with --ignore-column.
    let body: String = machines.iter().map(|m| format!("{},Alice\n", m.id)).collect();
    let input = dir.write("hosts.csv", format!("machine_id,name\n{body}"));
    let mut cmd = mdebulk(&sim);
    cmd.arg("run").arg(&input).args(["--action", "isolate", "--comment", "IR-7"]);
    cmd.args(["--ignore-column", "name", "--dry-run", "--planner", "alice", "--no-progress"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    let digest = all.lines().find_map(|l| l.trim().strip_prefix("plan digest: ")).unwrap();
    let out = output(apply(&sim, &dir, digest)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(api_calls(&sim, "isolate"), 2);
}
