//! `mdebulk simulate --tls` as a process: HTTPS with a generated CA that a
//! client trusting only that CA accepts, links that point back over
//! `https://`, handshakes that fail without taking the server down, given
//! certificate files, and one clear error line for bad ones.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::TempDir;

/// The simulator process, killed on drop.
struct Simulator {
    /// The child process.
    child: Child,
    /// `https://127.0.0.1:PORT`, from the first stdout line.
    url: String,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mdebulk simulate --tls --listen 127.0.0.1:0 ARGS` and reads the
/// URL from its first stdout line.
fn start(args: &[&str]) -> Simulator {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdebulk"))
        .args(["simulate", "--tls", "--listen", "127.0.0.1:0", "--machines", "10"])
        .args(["--limit", "none"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    Simulator { child, url }
}

/// A client that trusts only the CA certificates of `pem` (no system roots).
fn trusting_only(pem: &[u8]) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(pem).unwrap();
    assert!(!roots.is_empty());
    reqwest::Client::builder().tls_certs_only(roots).no_proxy().build().unwrap()
}

/// A token from the simulator's token endpoint, through `http`.
async fn token(http: &reqwest::Client, url: &str) -> String {
    common::access_token_with(http, url, "tenant-1", "app-1", "s3cret").await
}

/// Lists the machines and isolates the `nth`; returns the list reply and the
/// action reply.
async fn isolate(
    http: &reqwest::Client,
    url: &str,
    nth: usize,
) -> (serde_json::Value, serde_json::Value) {
    let token = token(http, url).await;
    let list: serde_json::Value = http
        .get(format!("{url}/api/machines"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["value"][nth]["id"].as_str().unwrap().to_string();
    let reply = http
        .post(format!("{url}/api/machines/{id}/isolate"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Comment": "x", "IsolationType": "Full"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    (list, reply.json().await.unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn serves_https_to_a_client_trusting_only_the_written_ca() {
    let dir = TempDir::new("sim-tls");
    let ca_file = dir.path("ca.pem");
    let sim = start(&["--tls-ca-out", ca_file.to_str().unwrap()]);
    let ca = std::fs::read(&ca_file).unwrap();
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let url = sim.url.clone();

    runtime().block_on(async {
        let trusted = trusting_only(&ca);
        let (list, action) = isolate(&trusted, &url, 0).await;
        for reply in [&list, &action] {
            let context = reply["@odata.context"].as_str().unwrap();
            assert!(context.starts_with(&format!("{url}/api/")), "{context}");
        }
        assert_eq!(action["type"], "Isolate");

        // A client with only the system's roots refuses the certificate.
        let stranger = reqwest::Client::builder().no_proxy().build().unwrap();
        let e = stranger.get(format!("{url}/api/machines")).send().await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");

        // Plain HTTP to the TLS port: the handshake fails, that connection ends.
        let plain_url = url.replacen("https://", "http://", 1);
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        assert!(plain.get(format!("{plain_url}/_sim/stats")).send().await.is_err());

        // Both failures cost the server nothing: it keeps serving.
        let stats: serde_json::Value =
            trusted.get(format!("{url}/_sim/stats")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stats["actions_created"], 1, "{stats}");
        assert_eq!(stats["token_requests"], 1, "{stats}");
        let (_, again) = isolate(&trusted, &url, 1).await;
        assert_eq!(again["type"], "Isolate");
    });
}

#[test]
fn each_start_makes_its_own_ca() {
    let dir = TempDir::new("sim-tls-two");
    let (a, b) = (dir.path("a.pem"), dir.path("b.pem"));
    let first = start(&["--tls-ca-out", a.to_str().unwrap()]);
    let second = start(&["--tls-ca-out", b.to_str().unwrap()]);
    let ca_a = std::fs::read(&a).unwrap();
    assert_ne!(ca_a, std::fs::read(&b).unwrap());
    runtime().block_on(async {
        let http = trusting_only(&ca_a);
        assert!(http.get(format!("{}/_sim/stats", first.url)).send().await.is_ok());
        let e = http.get(format!("{}/_sim/stats", second.url)).send().await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
    });
}

/// A CA and a server certificate for 127.0.0.1 it signs, written to `dir`:
/// returns (CA PEM, chain file, key file).
fn own_certificate(dir: &TempDir) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let chain = dir.write("server.pem", leaf_cert.pem());
    let key = dir.write("server.key", leaf_key.serialize_pem());
    (ca_cert.pem(), chain, key)
}

#[test]
fn serves_given_certificate_files() {
    let dir = TempDir::new("sim-tls-files");
    let (ca, chain, key) = own_certificate(&dir);
    let sim = start(&["--tls-cert", chain.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    runtime().block_on(async {
        let (_, action) = isolate(&trusting_only(ca.as_bytes()), &sim.url, 0).await;
        assert!(action["@odata.context"].as_str().unwrap().starts_with("https://"), "{action}");
    });
}

/// Runs `simulate ARGS`, which must fail before listening: exit code and stderr.
fn fails(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mdebulk"))
        .arg("simulate")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn bad_certificate_files_give_one_line_naming_the_file() {
    let dir = TempDir::new("sim-tls-bad");
    let (_, chain, key) = own_certificate(&dir);
    let junk = dir.write("junk.pem", "not PEM at all\n");
    let missing = dir.path("missing.pem");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for (cert, key, needle) in [
        (s(&missing), s(&key), format!("cannot read TLS certificate file {}", s(&missing))),
        (s(&junk), s(&key), format!("TLS certificate file {} holds no valid PEM", s(&junk))),
        (s(&chain), s(&junk), format!("TLS key file {} holds no valid PEM private key", s(&junk))),
        (
            s(&chain),
            s(&chain),
            format!("TLS key file {} holds no valid PEM private key", s(&chain)),
        ),
    ] {
        let (code, err) = fails(&["--tls", "--tls-cert", &cert, "--tls-key", &key]);
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(&needle), "{err}");
    }
    // A key that is not the certificate's.
    let other = TempDir::new("sim-tls-other");
    let (_, _, other_key) = own_certificate(&other);
    let (code, err) = fails(&["--tls", "--tls-cert", &s(&chain), "--tls-key", &s(&other_key)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot serve TLS with certificate {}", s(&chain))), "{err}");

    // The issuer of given files is not the simulator's to write out.
    let ca_out = dir.path("ca-out.pem");
    let (code, err) = fails(&[
        "--tls",
        "--tls-cert",
        &s(&chain),
        "--tls-key",
        &s(&key),
        "--tls-ca-out",
        &s(&ca_out),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-ca-out"), "{err}");
    assert!(!ca_out.exists());
    // TLS flags without --tls are refused rather than ignored.
    let (code, err) = fails(&["--tls-ca-out", &s(&ca_out)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls"), "{err}");
}
