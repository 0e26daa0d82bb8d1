//! A login nobody here wrote: Microsoft's MSAL for Python, against
//! `mdebulk simulate --tls`, through instance and tenant discovery, with a
//! client secret and with a certificate (PS256 and RS256 assertions), each
//! token then used to isolate a device. MSAL refuses `http://` authorities,
//! so this is also the proof that the simulator's HTTPS and discovery are
//! what Microsoft's libraries expect.
//!
//! The Python interpreter comes from `MDEBULK_TEST_PYTHON` (CI installs MSAL
//! into a virtual environment and sets it), else `python3`. Without MSAL
//! the test fails in CI (`CI` set) and, elsewhere, says how to install it
//! and passes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::TempDir;

/// Stops the simulator when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The interpreter to use, if it has MSAL.
fn python_with_msal() -> Option<String> {
    let python = std::env::var("MDEBULK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import msal, requests, cryptography"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

#[test]
fn msal_logs_in_through_discovery_with_a_secret_and_a_certificate() {
    let Some(python) = python_with_msal() else {
        let how = "python3 -m venv .venv && .venv/bin/pip install msal==1.39.0 && \
                   MDEBULK_TEST_PYTHON=.venv/bin/python cargo test --test third_party_login";
        assert!(std::env::var_os("CI").is_none(), "MSAL for Python is required in CI: {how}");
        eprintln!("skipped: MSAL for Python is not installed ({how})");
        return;
    };
    let dir = TempDir::new("msal");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mdebulk-app".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_pem = dir.write("app-cert.pem", cert.pem());
    let key_pem = dir.write("app-key.pem", key.serialize_pem());
    let ca = dir.path("sim-ca.pem");
    let (tenant, client) = ("contoso.onmicrosoft.com", "11111111-2222-3333-4444-555555555555");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdebulk"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--machines", "20", "--tls"])
        .arg("--tls-ca-out")
        .arg(&ca)
        .arg("--client-cert")
        .arg(&cert_pem)
        .args(["--tenant", tenant, "--client-id", client, "--client-secret", "msal-secret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let sim = Running(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("the listening line").to_string();
    assert!(url.starts_with("https://"), "{url}");

    // Three machines to isolate, read over TLS trusting only the printed CA.
    let ca_pem = std::fs::read(&ca).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca_pem).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(format!("{url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        rt.block_on(async { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() })
    };
    let token = rt.block_on(common::access_token_with(&http, &url, tenant, client, "msal-secret"));
    let machines = get("/api/machines?$filter=osPlatform eq 'Windows11'", Some(&token));
    let ids: Vec<&str> =
        machines["value"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.len() >= 3, "{machines}");

    let out = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/msal/login.py"))
        .env("SIM_URL", &url)
        .env("SIM_CA", &ca)
        .env("SIM_TENANT", tenant)
        .env("SIM_CLIENT_ID", client)
        .env("SIM_CLIENT_SECRET", "msal-secret")
        .env("SIM_CERT_PEM", &cert_pem)
        .env("SIM_KEY_PEM", &key_pem)
        .env("SIM_MACHINES", ids[..3].join(","))
        // Anything not for this loopback goes to a dead loopback proxy and
        // fails there: nothing leaves the machine, not even a DNS query.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        // requests lets these name the trust store in place of the one given.
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let logins: Vec<&str> = lines.iter().filter_map(|l| l["login"].as_str()).collect();
    assert_eq!(logins, ["secret", "certificate-ps256", "certificate-rs256"]);
    for l in &lines {
        assert_eq!(l["status"], 201, "{l}");
        assert!(l["action"].is_string(), "{l}");
    }
    let stats = get("/_sim/stats", None);
    assert_eq!(stats["by_api"]["isolate"]["admitted"], 3, "{stats}");
    assert!(stats["discovery_requests"].as_u64().unwrap() >= 3, "MSAL used discovery: {stats}");
    drop(sim);
}
