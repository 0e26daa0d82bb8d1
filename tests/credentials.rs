//! Logging in by every method, the real binary against the real simulator:
//! a token command and a stand-in Azure CLI refreshing mid-run, a ready
//! token outliving its run, certificates (PEM and PFX, with and without the
//! chain), managed identity (IMDS and App Service, system and user
//! assigned), workload identity with the token file rotated mid-run, and
//! the permission check of `auth check` and `run`. Every run lasts longer
//! than the simulator's token lifetime and fails no row; no token, key or
//! secret appears in the output, the results or the journal.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mdebulk::api::model::Machine;
use mdebulk::sim::{FleetSpec, SimConfig};

/// The scope the client asks for, and the resource of the v1 shapes.
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";

/// Fleet size and seed of every simulator here, so the machines an
/// in-process simulator generates are those of `mdebulk simulate`.
const MACHINES: usize = 600;
const SEED: u64 = 7;

/// `mdebulk simulate` in a child process, for the flags an in-process
/// configuration does not expose (certificates, identities).
struct SimProcess {
    child: Child,
    url: String,
}

impl SimProcess {
    fn start(extra: &[&str]) -> SimProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mdebulk"))
            .args(["simulate", "--listen", "127.0.0.1:0", "--machines"])
            .arg(MACHINES.to_string())
            .args(["--seed", &SEED.to_string(), "--settle", "300ms", "--limit", "none"])
            .args(extra)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}"));
        SimProcess { url: url.to_string(), child }
    }

    async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_sim/stats", self.url)).await.unwrap().json().await.unwrap()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Windows machines, online, with unique names, of the simulators here.
async fn machines(n: usize) -> Vec<Machine> {
    let sim = sim(SimConfig {
        fleet: FleetSpec::Generate { machines: MACHINES },
        seed: SEED,
        ..sim_config(&[])
    })
    .await;
    windows_online(&sim, n)
}

/// `mdebulk` with nothing in its environment but PATH and the simulator's
/// URLs: each test adds its method's variables.
fn bare(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MDE_API_URL", url)
        .env("MDE_LOGIN_URL", url)
        .stdin(Stdio::null());
    cmd
}

/// `run INPUT --action isolate` paced to last longer than a 2 s token.
fn isolate_slowly(cmd: &mut Command, input: &Path, results: &Path) {
    cmd.arg("run")
        .arg(input)
        .args(["--action", "isolate", "--comment", "x", "--no-progress", "--limit", "4/1s", "-o"])
        .arg(results);
}

/// Everything a run leaves to read: its output, results and journal.
fn everything(out: &Output, results: &Path) -> String {
    let journal = PathBuf::from(format!("{}.journal", results.display()));
    format!(
        "{}\n{}\n{}",
        text(out),
        std::fs::read_to_string(results).unwrap_or_default(),
        std::fs::read_to_string(journal).unwrap_or_default()
    )
}

/// The run succeeded on every row.
fn all_submitted(out: &Output, results: &Path, n: usize) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let rows = read_results(results);
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{:?}", status_counts(&rows));
}

/// Keeps `file` holding a fresh token from the simulator, rewritten every
/// 300 ms until the returned flag is set; every token written is recorded.
fn keep_fresh(
    url: &str,
    file: PathBuf,
) -> (Arc<AtomicBool>, Arc<std::sync::Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (url, stop2, seen2) = (url.to_string(), stop.clone(), seen.clone());
    let task = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) {
            let token = access_token(&url, "tenant-1", "app-1", "any-secret").await;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, &token).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
            seen2.lock().unwrap().push(token);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (stop, seen, task)
}

fn assert_no_token(all: &str, tokens: &[String]) {
    assert!(!tokens.is_empty());
    for t in tokens {
        assert!(!all.contains(t.as_str()), "a token leaked:\n{all}");
    }
}

/// `MDE_TOKEN_COMMAND` prints JSON with `expires_in`; tokens live 2 s and
/// the run lasts about 5: the command runs again before each expiry, and
/// no row fails.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_command_is_run_again_before_the_token_expires() {
    let sim = SimProcess::start(&["--token-ttl", "2s"]);
    let dir = TempDir::new("token-command");
    let input = dir.write("hosts.csv", ids_csv(&machines(18).await));
    let token_file = dir.path("token");
    let (stop, tokens, task) = keep_fresh(&sim.url, token_file.clone());
    while !token_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = dir.path("runs");
    let command = format!(
        "echo run >> '{}'; printf '{{\"access_token\":\"%s\",\"expires_in\":\"1\"}}' \"$(cat '{}')\"",
        runs.display(),
        token_file.display()
    );
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("MDE_TOKEN_COMMAND", &command);
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    all_submitted(&out, &results, 18);
    let ran = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(ran >= 3, "the command ran {ran} times");
    assert_no_token(&everything(&out, &results), &tokens.lock().unwrap());
}

/// A token command that fails shows its exit code and a scrubbed excerpt
/// of its stderr, and nothing is sent.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_command_sends_nothing_and_hides_its_secrets() {
    let sim = SimProcess::start(&[]);
    let dir = TempDir::new("token-command-fails");
    let input = dir.write("hosts.csv", ids_csv(&machines(2).await));
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env(
        "MDE_TOKEN_COMMAND",
        "echo 'vault: permission denied for token hvs.CAESIJlWh0bS2pUd9d8ZQxQm' >&2; exit 4",
    );
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("exited with 4") && all.contains("vault: permission denied"), "{all}");
    assert!(!all.contains("hvs.CAESIJlWh0bS2pUd9d8ZQxQm"), "{all}");
    assert_eq!(sim.stats().await["actions_created"], 0);
}

/// A stand-in `az` on PATH prints what `az account get-access-token`
/// prints; it is asked for the API's resource and the tenant, and run again
/// as the 2 s tokens near expiry.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_token_is_fetched_again_as_it_expires() {
    use std::os::unix::fs::PermissionsExt;
    let sim = SimProcess::start(&["--token-ttl", "2s"]);
    let dir = TempDir::new("azure-cli");
    let input = dir.write("hosts.csv", ids_csv(&machines(18).await));
    let token_file = dir.path("token");
    let (stop, tokens, task) = keep_fresh(&sim.url, token_file.clone());
    while !token_file.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bin = dir.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let args_log = dir.path("az-args");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\nexp=$(( $(date +%s) + 1 ))\nprintf '{{\"accessToken\":\"%s\",\"expiresOn\":\"2026-12-01 23:59:59.000000\",\"expires_on\":%s,\"subscription\":\"sub\",\"tenant\":\"tenant-1\",\"tokenType\":\"Bearer\"}}\\n' \"$(cat '{token}')\" \"$exp\"\n",
        log = args_log.display(),
        token = token_file.display()
    );
    let az = bin.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("AZURE_TENANT_ID", "tenant-1");
    isolate_slowly(&mut cmd, &input, &results);
    cmd.args(["--auth", "azure-cli"]);
    let out = output(cmd).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    all_submitted(&out, &results, 18);
    let calls = std::fs::read_to_string(&args_log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert!(lines.len() >= 3, "az ran {} times", lines.len());
    assert_eq!(
        lines[0],
        format!("account get-access-token --resource {RESOURCE} --output json --tenant tenant-1")
    );
    assert_no_token(&everything(&out, &results), &tokens.lock().unwrap());
}

/// A ready token that expires mid-run stops the run cleanly (exit 2, the
/// rest `not_sent`) with a message naming the refreshable methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_token_outlived_by_its_run_stops_it_cleanly() {
    // The token outlives the start of the run even on a loaded machine
    // (3 s), and the run (12 rows at 2 a second) outlives the token.
    let sim = SimProcess::start(&["--token-ttl", "3s"]);
    let dir = TempDir::new("ready-token");
    let input = dir.write("hosts.csv", ids_csv(&machines(12).await));
    let token = access_token(&sim.url, "tenant-1", "app-1", "any-secret").await;
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("MDE_TOKEN", &token);
    isolate_slowly(&mut cmd, &input, &results);
    cmd.args(["--limit", "2/1s"]);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("MDE_TOKEN_COMMAND"), "{all}");
    let counts = status_counts(&read_results(&results));
    assert!(counts.get("not_sent").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(!counts.contains_key("error"), "{counts:?}");
    assert_no_token(&everything(&out, &results), &[token]);
}

/// An RSA key and a certificate for it signed by a CA of its own: the
/// leaf's key (PKCS#8 PEM and DER) and both certificates as DER.
struct Issued {
    key_pem: String,
    key_der: Vec<u8>,
    leaf: Vec<u8>,
    ca: Vec<u8>,
}

fn issue(name: &str) -> Issued {
    let rsa = || rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ca_key = rsa();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rsa();
    let mut leaf_params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    leaf_params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Issued {
        key_pem: leaf_key.serialize_pem(),
        key_der: leaf_key.serialize_der(),
        leaf: leaf.der().to_vec(),
        ca: ca.der().to_vec(),
    }
}

fn pem_cert(der: &[u8]) -> String {
    mdebulk::api::jwt::pem_certificate(der)
}

fn pfx(issued: &Issued, password: &str) -> Vec<u8> {
    let chain = p12_keystore::PrivateKeyChain::new(
        b"app".to_vec(),
        p12_keystore::PrivateKey::from_der(&issued.key_der).unwrap(),
        [
            p12_keystore::Certificate::from_der(&issued.leaf).unwrap(),
            p12_keystore::Certificate::from_der(&issued.ca).unwrap(),
        ],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("app", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().unwrap()
}

/// Nothing secret in `all`: no JWT (they all start `eyJ`), no key, none of
/// `secrets`.
fn assert_nothing_secret(all: &str, secrets: &[&str]) {
    assert!(!all.contains("eyJ"), "a token leaked:\n{all}");
    assert!(!all.contains("PRIVATE KEY"), "a key leaked:\n{all}");
    for s in secrets {
        assert!(!all.contains(s), "{s:?} leaked:\n{all}");
    }
}

/// Logs in with a certificate in each form the environment takes: PEM and
/// PFX, with and without the chain; tokens live 2 s, runs last about 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_logs_in_as_pem_and_pfx_with_and_without_its_chain() {
    let dir = TempDir::new("certificate");
    let issued = issue("mdebulk-app");
    let registered = dir.write("registered.pem", pem_cert(&issued.leaf));
    let sim =
        SimProcess::start(&["--token-ttl", "2s", "--client-cert", registered.to_str().unwrap()]);
    // Each run its own machines: an isolation still pending would make a
    // second one `already_pending`.
    let fleet = machines(4 * 14).await;
    let pem = dir.write(
        "app.pem",
        format!("{}{}{}", issued.key_pem, pem_cert(&issued.leaf), pem_cert(&issued.ca)),
    );
    let password = "Pfx-pa55word-never-logged";
    let pfx_file = dir.write("app.pfx", pfx(&issued, password));
    let mut before = 0;
    for (i, (file, chain)) in
        [(&pem, false), (&pem, true), (&pfx_file, false), (&pfx_file, true)].into_iter().enumerate()
    {
        let input = dir.write(&format!("hosts-{i}.csv"), ids_csv(&fleet[i * 14..(i + 1) * 14]));
        let results = dir.path(&format!("out-{i}.results.csv"));
        let mut cmd = bare(&sim.url);
        cmd.env("AZURE_TENANT_ID", "tenant-1")
            .env("AZURE_CLIENT_ID", "app-1")
            .env("AZURE_CLIENT_CERTIFICATE_PATH", file)
            .env("AZURE_CLIENT_CERTIFICATE_PASSWORD", password)
            .env("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", if chain { "true" } else { "false" });
        isolate_slowly(&mut cmd, &input, &results);
        cmd.args(["--auth", "certificate"]);
        let out = output(cmd).await;
        all_submitted(&out, &results, 14);
        let issued_now = sim.stats().await["tokens_issued"].as_u64().unwrap();
        assert!(issued_now - before >= 2, "{} {chain}: no refresh", file.display());
        before = issued_now;
        assert_nothing_secret(&everything(&out, &results), &[password]);
    }
    // A certificate the app does not have is Entra's 700027, before any action.
    let other = issue("stranger");
    let stranger = dir.write("stranger.pem", format!("{}{}", other.key_pem, pem_cert(&other.leaf)));
    let results = dir.path("stranger.results.csv");
    let input = dir.write("stranger.csv", ids_csv(&fleet[..2]));
    let mut cmd = bare(&sim.url);
    cmd.env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &stranger);
    isolate_slowly(&mut cmd, &input, &results);
    let created = sim.stats().await["actions_created"].as_u64().unwrap();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("AADSTS700027"), "{}", text(&out));
    assert!(text(&out).contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{}", text(&out));
    assert_eq!(sim.stats().await["actions_created"].as_u64().unwrap(), created);
}

/// A federated token signed by the issuer's key, `aud`
/// `api://AzureADTokenExchange`, living `ttl` seconds.
fn federated_token(key: &mdebulk::api::jwt::SigningKey, ttl: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": "https://oidc.example/issuer",
        "sub": "system:serviceaccount:soc:mdebulk",
        "aud": "api://AzureADTokenExchange",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": format!("fed-{now}-{ttl}"),
    });
    key.sign(mdebulk::api::jwt::Algorithm::Rs256, serde_json::Map::new(), &claims).unwrap()
}

/// Workload identity: the token file holds a federated token that expires
/// 2 s in; it is rotated after 1 s, as the platform does. Each refresh reads
/// the file again, so the run outlives both the first federated token and
/// every access token without a failed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_reads_the_rotated_token_file_at_each_refresh() {
    let dir = TempDir::new("workload");
    let issued = issue("oidc-issuer");
    let issuer_cert = dir.write("issuer.pem", pem_cert(&issued.leaf));
    let sim = SimProcess::start(&[
        "--token-ttl",
        "2s",
        "--federated-issuer",
        "https://oidc.example/issuer",
        "--federated-subject",
        "system:serviceaccount:soc:mdebulk",
        "--federated-cert",
        issuer_cert.to_str().unwrap(),
    ]);
    let key = mdebulk::api::jwt::SigningKey::from_pem(issued.key_pem.as_bytes()).unwrap();
    let input = dir.write("hosts.csv", ids_csv(&machines(18).await));
    let token_file = dir.write("azure-identity-token", federated_token(&key, 2));
    let rotate = {
        let (file, fresh) = (token_file.clone(), federated_token(&key, 600));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, fresh).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        })
    };
    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    cmd.env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_AUTHORITY_HOST", &sim.url)
        .env_remove("MDE_LOGIN_URL");
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    rotate.await.unwrap();
    all_submitted(&out, &results, 18);
    assert!(sim.stats().await["tokens_issued"].as_u64().unwrap() >= 3);
    assert_nothing_secret(&everything(&out, &results), &[]);
}

/// Managed identity in every shape the host may offer, system- and
/// user-assigned, on the simulator's own address (never 169.254.169.254):
/// each run outlives its 2 s tokens with no failed row, and `auth check`
/// names the identity the token was issued to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_logs_in_by_imds_and_app_service_system_and_user_assigned() {
    let header = "h3ader-value-never-logged";
    let sim = SimProcess::start(&[
        "--token-ttl",
        "2s",
        "--managed-identity",
        "7d4e2b8a-0000-4000-8000-00000000ua01",
        "--identity-header",
        header,
    ]);
    let user = "7d4e2b8a-0000-4000-8000-00000000ua01";
    let dir = TempDir::new("managed");
    let fleet = machines(7 * 14).await;
    let msi = format!("{}/msi/token", sim.url);
    // The user-assigned identity's object and resource ids, as the host knows them.
    let identities: serde_json::Value =
        reqwest::get(format!("{}/_sim/identities", sim.url)).await.unwrap().json().await.unwrap();
    let ids =
        identities.as_array().unwrap().iter().find(|i| i["client_id"] == user).unwrap().clone();
    type Setup<'a> = (&'a str, Vec<(&'a str, String)>, Vec<String>);
    let cases: Vec<Setup> = vec![
        (
            "imds-system",
            vec![],
            vec!["--auth".into(), "managed-identity".into(), "--imds-url".into(), sim.url.clone()],
        ),
        (
            "imds-user",
            vec![],
            vec![
                "--imds-url".into(),
                sim.url.clone(),
                "--managed-identity-client-id".into(),
                user.into(),
            ],
        ),
        (
            "appservice-system",
            vec![("IDENTITY_ENDPOINT", msi.clone()), ("IDENTITY_HEADER", header.into())],
            vec![],
        ),
        (
            "appservice-user",
            vec![
                ("IDENTITY_ENDPOINT", msi.clone()),
                ("IDENTITY_HEADER", header.into()),
                ("AZURE_CLIENT_ID", user.into()),
            ],
            vec![],
        ),
        ("msi-2017", vec![("MSI_ENDPOINT", msi.clone()), ("MSI_SECRET", header.into())], vec![]),
        (
            "imds-object-user",
            vec![],
            vec![
                "--imds-url".into(),
                sim.url.clone(),
                "--managed-identity-object-id".into(),
                ids["object_id"].as_str().unwrap().to_string(),
            ],
        ),
        (
            "appservice-resource-user",
            vec![("IDENTITY_ENDPOINT", msi.clone()), ("IDENTITY_HEADER", header.into())],
            vec![
                "--managed-identity-resource-id".into(),
                ids["resource_id"].as_str().unwrap().to_string(),
            ],
        ),
    ];
    for (i, (name, vars, flags)) in cases.iter().enumerate() {
        let input = dir.write(&format!("{name}.csv"), ids_csv(&fleet[i * 14..(i + 1) * 14]));
        let results = dir.path(&format!("{name}.results.csv"));
        let mut cmd = bare(&sim.url);
        cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        isolate_slowly(&mut cmd, &input, &results);
        cmd.args(flags);
        let before = sim.stats().await["managed_identity_requests"].as_u64().unwrap();
        let out = output(cmd).await;
        all_submitted(&out, &results, 14);
        let asked = sim.stats().await["managed_identity_requests"].as_u64().unwrap() - before;
        assert!(asked >= 2, "{name}: {asked} identity requests");
        assert_nothing_secret(&everything(&out, &results), &[header]);

        let mut check = bare(&sim.url);
        check.envs(vars.iter().map(|(k, v)| (k, v)));
        check.args(["auth", "check", "--action", "isolate"]).args(flags);
        let out = output(check).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {all}");
        assert!(all.contains("method:    managed-identity"), "{all}");
        if name.ends_with("user") {
            assert!(all.contains(user), "{name}: {all}");
        }
        assert!(all.contains("Machine.Isolate for isolate: present"), "{all}");
        assert_nothing_secret(&all, &[header]);
    }
}

/// Azure Arc's agent: the first request is challenged with a key file in
/// the agent's directory, the client reads it and asks again; each refresh
/// of the 2 s tokens goes through a new challenge, with no failed row and
/// no key in any output. A user-assigned identity, which Arc does not have,
/// is refused before anything is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_logs_in_through_azure_arcs_key_file_challenge() {
    let keys = TempDir::new("arc-keys");
    let key_dir = keys.path("");
    let sim = SimProcess::start(&["--token-ttl", "2s", "--arc-key-dir", key_dir.to_str().unwrap()]);
    let dir = TempDir::new("arc");
    let input = dir.write("hosts.csv", ids_csv(&machines(14).await));
    let results = dir.path("hosts.results.csv");
    let endpoint = format!("{}/metadata/identity/oauth2/token", sim.url);
    let arc = |cmd: &mut Command| {
        cmd.env("IDENTITY_ENDPOINT", &endpoint)
            .env("IMDS_ENDPOINT", &sim.url)
            .env("MDEBULK_ARC_KEY_DIR", &key_dir);
    };
    let mut cmd = bare(&sim.url);
    arc(&mut cmd);
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    all_submitted(&out, &results, 14);
    let issued: Vec<String> = std::fs::read_dir(&key_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(issued.len() >= 2, "{} challenges", issued.len());
    // Each challenge is one request refused and one let in.
    let asked = sim.stats().await["managed_identity_requests"].as_u64().unwrap();
    assert!(asked >= 2 * issued.len() as u64, "{asked} requests, {} keys", issued.len());
    let keys_sent: Vec<&str> = issued.iter().map(String::as_str).collect();
    assert_nothing_secret(&everything(&out, &results), &keys_sent);

    let mut check = bare(&sim.url);
    arc(&mut check);
    check.args(["auth", "check", "--action", "isolate"]);
    let out = output(check).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("Azure Arc"), "{all}");

    let before = sim.stats().await["managed_identity_requests"].as_u64().unwrap();
    let mut user = bare(&sim.url);
    arc(&mut user);
    user.env("AZURE_CLIENT_ID", "7d4e2b8a-0000-4000-8000-00000000ua01");
    isolate_slowly(&mut user, &input, &dir.path("user.results.csv"));
    let out = output(user).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("Azure Arc has only the machine's system-assigned identity"), "{all}");
    assert_eq!(sim.stats().await["managed_identity_requests"].as_u64().unwrap(), before);
}

/// `auth check` names the permission a token lacks; `run` of a file that
/// needs it is refused with exit 2 before any action call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_is_named_and_the_run_refused_before_any_action_call() {
    let sim = SimProcess::start(&["--roles", "Machine.Read.All,Machine.Scan"]);
    let dir = TempDir::new("roles");
    let input = dir.write("hosts.csv", ids_csv(&machines(5).await));
    let with_secret = |cmd: &mut Command| {
        cmd.env("AZURE_TENANT_ID", "tenant-1")
            .env("AZURE_CLIENT_ID", "app-1")
            .env("AZURE_CLIENT_SECRET", "s3cret-value-never-logged");
    };
    let mut check = bare(&sim.url);
    with_secret(&mut check);
    check.args(["auth", "check"]).arg(&input).args(["--action", "isolate"]);
    let out = output(check).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("roles:     Machine.Read.All, Machine.Scan"), "{all}");
    assert!(all.contains("allows:    scan"), "{all}");
    assert!(all.contains("Machine.Isolate for isolate: MISSING"), "{all}");
    assert!(all.contains("audience:  https://"), "{all}");
    assert!(all.contains("method:    secret"), "{all}");

    let results = dir.path("out.results.csv");
    let mut cmd = bare(&sim.url);
    with_secret(&mut cmd);
    isolate_slowly(&mut cmd, &input, &results);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("Machine.Isolate (for isolate)"), "{all}");
    let stats = sim.stats().await;
    assert_eq!(stats["actions_created"], 0, "{stats}");
    assert!(stats["by_api"].get("isolate").is_none_or(|a| a["calls"] == 0), "{stats}");
    assert!(!results.exists(), "a refused run leaves no results file");
    assert_nothing_secret(&all, &["s3cret-value-never-logged"]);
}

/// `--auth azure-cli` without `az` on PATH says so and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_missing_from_path_is_named() {
    let sim = SimProcess::start(&[]);
    let dir = TempDir::new("no-az");
    let empty = dir.path("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let mut cmd = bare(&sim.url);
    cmd.env("PATH", &empty).args(["auth", "check", "--auth", "azure-cli"]);
    let out = output(cmd).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("not found on PATH"), "{all}");
    assert_eq!(sim.stats().await["token_requests"], 0);
}
