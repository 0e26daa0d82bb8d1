//! `mdebulk run` through an HTTPS CONNECT proxy to the simulator served over
//! TLS (`SimConfig::tls`): `--proxy` with credentials and `--ca-cert`, the
//! clear refusal of a certificate nobody said to trust, `HTTPS_PROXY` /
//! `https_proxy` for a host that is not loopback, and the rule that a proxy
//! from the environment never captures a loopback simulator. The proxy's
//! password must never show in anything the run writes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{TempDir, ids_csv, output, read_results, text, windows_online};
use mdebulk::sim::{Sim, SimConfig, SimTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy's password: it must never be written anywhere.
const PASSWORD: &str = "pr0xy-pa55word-never-shown";

/// Each CONNECT's target and `Proxy-Authorization` header, as received.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A loopback CONNECT proxy that counts tunnels. Every target host is
/// reached at 127.0.0.1 on the asked port, so a name that is not loopback
/// (and never resolves) still leads to the simulator.
struct ConnectProxy {
    /// `127.0.0.1:PORT`.
    addr: String,
    /// CONNECT requests answered.
    connects: Arc<AtomicUsize>,
    /// Each CONNECT's target and `Proxy-Authorization` header.
    seen: Seen,
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connects = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connects.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, c.clone(), s.clone()));
            }
        });
        ConnectProxy { addr, connects, seen }
    }

    fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

/// Reads one CONNECT request, opens the tunnel and splices both ways.
async fn tunnel(mut client: TcpStream, connects: Arc<AtomicUsize>, seen: Seen) {
    // The client waits for our answer before it sends anything else, so
    // nothing past the blank line is read here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let request: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    let [method, target, _version] = request[..] else { return };
    if method != "CONNECT" {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
        return;
    }
    seen.lock().unwrap().push((target.to_string(), auth));
    let Some((_, port)) = target.rsplit_once(':') else { return };
    let Ok(mut upstream) = TcpStream::connect(format!("127.0.0.1:{port}")).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    connects.fetch_add(1, Ordering::SeqCst);
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A simulator over TLS with its generated CA, whose PEM is written to `dir`.
async fn tls_sim(dir: &TempDir) -> (Sim, PathBuf) {
    let sim =
        common::sim(SimConfig { tls: Some(SimTls::Generate), ..common::sim_config(&[]) }).await;
    let ca = dir.write("sim-ca.pem", sim.ca_pem().unwrap());
    (sim, ca)
}

/// `mdebulk run IN --action isolate --comment x` with credentials in a clean
/// environment (no proxy or CA variables of this machine), plus `args`.
fn run(input: &Path, api: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mdebulk"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZURE_TENANT_ID", "tenant-1")
        .env("AZURE_CLIENT_ID", "app-1")
        .env("AZURE_CLIENT_SECRET", "s3cret-value-never-logged")
        .arg("-v")
        .arg("run")
        .arg(input)
        .args(["--action", "isolate", "--comment", "x", "--no-progress", "--limit", "none"])
        .args(["--api-url", api, "--login-url", api])
        .args(args)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Every byte the run left in `dir` (results, journal) and its output, as text.
fn everything_written(dir: &TempDir, out: &std::process::Output) -> String {
    let mut all = text(out);
    for entry in std::fs::read_dir(dir.path("")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

/// The simulator's `/_sim/stats`, fetched over TLS trusting its CA.
async fn served_stats(sim: &Sim) -> serde_json::Value {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).no_proxy().build().unwrap();
    http.get(format!("{}/_sim/stats", sim.url())).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_goes_through_the_proxy_and_its_password_stays_secret() {
    let dir = TempDir::new("proxy-ok");
    let (sim, ca) = tls_sim(&dir).await;
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    let proxy = ConnectProxy::start().await;
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 3)));
    let proxy_url = format!("http://user:{PASSWORD}@{}", proxy.addr);

    let out = output(run(
        &input,
        &sim.url(),
        &["--proxy", &proxy_url, "--ca-cert", ca.to_str().unwrap()],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = read_results(&dir.path("hosts.results.csv"));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "submitted"), "{rows:?}");
    assert_eq!(sim.stats().actions_created, 3);

    assert!(proxy.connects() >= 1, "the proxy saw no tunnel");
    let host = sim.url().trim_start_matches("https://").to_string();
    let seen = proxy.seen.lock().unwrap().clone();
    for (target, auth) in &seen {
        assert_eq!(target, &host);
        // The credentials went to the proxy, as Basic, and nowhere else.
        assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")), "{auth:?}");
    }
    let written = everything_written(&dir, &out);
    assert!(!written.contains(PASSWORD), "the proxy password leaked:\n{written}");
    assert!(!written.contains("s3cret-value-never-logged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_run_naming_the_host_and_the_fix() {
    let dir = TempDir::new("proxy-untrusted");
    let (sim, _ca) = tls_sim(&dir).await;
    let proxy = ConnectProxy::start().await;
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    let proxy_url = format!("http://user:{PASSWORD}@{}", proxy.addr);

    let out = output(run(&input, &sim.url(), &["--proxy", &proxy_url])).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let host = sim.url().trim_start_matches("https://").to_string();
    let line = all
        .lines()
        .find(|l| l.contains("certificate/TLS problem"))
        .unwrap_or_else(|| panic!("no TLS error line:\n{all}"));
    assert!(line.contains(&host), "{line}");
    assert!(line.contains("not trusted"), "{line}");
    assert!(line.contains("--ca-cert FILE") && line.contains("SSL_CERT_FILE"), "{line}");
    assert!(proxy.connects() >= 1, "the handshake was tried through the proxy");

    let stats = served_stats(&sim).await;
    assert_eq!(stats["actions_created"], 0, "{stats}");
    assert_eq!(stats["by_api"]["isolate"]["calls"].as_u64().unwrap_or(0), 0, "{stats}");
    let written = everything_written(&dir, &out);
    assert!(!written.contains(PASSWORD), "the proxy password leaked:\n{written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_fails_without_showing_its_password() {
    let dir = TempDir::new("proxy-down");
    let (sim, ca) = tls_sim(&dir).await;
    // A port nobody listens on: bound, then released.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 1)));
    let proxy_url = format!("http://user:{PASSWORD}@{dead}");
    let out = output(run(
        &input,
        &sim.url(),
        &["--proxy", &proxy_url, "--ca-cert", ca.to_str().unwrap(), "--max-attempts", "1"],
    ))
    .await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.stats().actions_created, 0);
    let written = everything_written(&dir, &out);
    assert!(!written.contains(PASSWORD), "the proxy password leaked:\n{written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ca_files_and_proxy_urls_stop_before_anything_is_sent() {
    let dir = TempDir::new("proxy-config");
    let (sim, _) = tls_sim(&dir).await;
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 1)));
    let junk = dir.write("junk.pem", "not a certificate\n");
    let junk_arg = junk.to_str().unwrap().to_string();
    for (args, env, needle) in [
        (
            vec!["--ca-cert", junk_arg.as_str()],
            None,
            format!("--ca-cert {junk_arg}: no PEM certificate"),
        ),
        (vec![], Some(junk_arg.as_str()), format!("SSL_CERT_FILE {junk_arg}: no PEM certificate")),
        (
            vec!["--proxy", "socks9://user:hunter2@127.0.0.1:1"],
            None,
            "--proxy socks9://***@127.0.0.1:1 is not a proxy URL".to_string(),
        ),
    ] {
        let mut cmd = run(&input, &sim.url(), &args);
        if let Some(file) = env {
            cmd.env("SSL_CERT_FILE", file);
        }
        let out = output(cmd).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains(&needle), "{needle}\n{all}");
        assert!(!all.contains("hunter2"), "{all}");
    }
    assert_eq!(sim.stats().requests, 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_trusts_the_simulator_too() {
    let dir = TempDir::new("proxy-ssl-cert-file");
    let (sim, ca) = tls_sim(&dir).await;
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    let mut cmd = run(&input, &sim.url(), &[]);
    cmd.env("SSL_CERT_FILE", &ca);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.stats().actions_created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_from_the_environment_never_captures_a_loopback_simulator() {
    let dir = TempDir::new("proxy-env-loopback");
    let (sim, ca) = tls_sim(&dir).await;
    let proxy = ConnectProxy::start().await;
    let input = dir.write("hosts.csv", ids_csv(&windows_online(&sim, 2)));
    let env_proxy = format!("http://{}", proxy.addr);
    let mut cmd = run(&input, &sim.url(), &["--ca-cert", ca.to_str().unwrap()]);
    cmd.env("HTTPS_PROXY", &env_proxy).env("https_proxy", &env_proxy).env("ALL_PROXY", &env_proxy);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.stats().actions_created, 2);
    assert_eq!(proxy.connects(), 0, "a local simulator is reached directly");

    // --proxy wins over the environment (here a proxy that is not there).
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let input = dir.write("more.csv", ids_csv(&windows_online(&sim, 4)[2..]));
    let proxy_url = format!("http://{}", proxy.addr);
    let mut cmd =
        run(&input, &sim.url(), &["--proxy", &proxy_url, "--ca-cert", ca.to_str().unwrap()]);
    cmd.env("HTTPS_PROXY", format!("http://{dead}"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(sim.stats().actions_created, 4);
    assert!(proxy.connects() >= 1);
}

/// A simulator over TLS whose certificate is for `sim.test`, a name that is
/// not loopback (and never resolves: only the proxy knows where it is).
async fn named_sim(dir: &TempDir) -> (Sim, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["sim.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let cert = dir.write("sim.test.pem", leaf.pem());
    let key = dir.write("sim.test.key", leaf_key.serialize_pem());
    let sim = common::sim(SimConfig {
        tls: Some(SimTls::Files { cert, key }),
        ..common::sim_config(&[])
    })
    .await;
    assert_eq!(sim.ca_pem(), None, "the issuer of given files is not the simulator's");
    (sim, dir.write("named-ca.pem", ca_cert.pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_in_either_case_routes_a_host_that_is_not_loopback() {
    let dir = TempDir::new("proxy-env");
    let (sim, ca) = named_sim(&dir).await;
    let api = format!("https://sim.test:{}", sim.addr().port());
    let machines = windows_online(&sim, 4);
    for (i, variable) in ["HTTPS_PROXY", "https_proxy"].into_iter().enumerate() {
        let proxy = ConnectProxy::start().await;
        let input = dir.write(&format!("hosts-{i}.csv"), ids_csv(&machines[i * 2..i * 2 + 2]));
        let mut cmd = run(&input, &api, &["--ca-cert", ca.to_str().unwrap()]);
        cmd.env(variable, format!("http://user:{PASSWORD}@{}", proxy.addr));
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{variable}: {}", text(&out));
        assert!(proxy.connects() >= 1, "{variable}: no tunnel");
        let seen = proxy.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|(t, _)| t == &format!("sim.test:{}", sim.addr().port())));
        let written = everything_written(&dir, &out);
        assert!(!written.contains(PASSWORD), "{variable}: the proxy password leaked");
    }
    assert_eq!(sim.stats().actions_created, 4);
}
