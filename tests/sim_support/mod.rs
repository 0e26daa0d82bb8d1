//! Helpers shared by the simulator's integration tests: start a simulator on
//! loopback (one tenant, or several with `tenants`), get a token (per
//! tenant), make calls and read replies as JSON.

#![allow(dead_code)]

use std::time::Duration;

use mdebulk::sim::{FleetSpec, Sim, SimConfig};
use serde_json::Value;

/// The v2 scope every test token asks for.
pub const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The client secret test tokens are requested with.
pub const SECRET: &str = "s3cr3t-value";
/// A valid Sha1.
pub const SHA1: &str = "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508";

/// A config for tests: port 0, 100 machines, no quota, quick settle.
pub fn config() -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".into(),
        fleet: FleetSpec::Generate { machines: 100 },
        limits: Vec::new(),
        settle: Duration::from_secs(30),
        ..SimConfig::default()
    }
}

/// Runs each `async fn body(tls: bool)` twice: over plain HTTP and over
/// `--tls` (a client trusting only the simulator's CA).
#[macro_export]
macro_rules! over_http_and_tls {
    ($($body:ident => $http:ident, $tls:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $http() {
            $body(false).await
        }
        #[tokio::test(flavor = "multi_thread")]
        async fn $tls() {
            $body(true).await
        }
    )*};
}

/// A reply: status, selected headers, body as JSON (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub text: String,
    pub json: Value,
}

/// A running simulator with a client and a token.
pub struct Env {
    pub sim: Sim,
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Env {
    /// Starts a simulator with `cfg` and gets a token for app `app` in tenant
    /// `t1`. Over TLS (`cfg.tls`), the client trusts the simulator's CA and
    /// nothing else.
    pub async fn start(cfg: SimConfig) -> Env {
        Env::start_as(cfg, "t1").await
    }

    /// [`Env::start`] with its token for tenant `tenant`.
    async fn start_as(cfg: SimConfig, tenant: &str) -> Env {
        let sim = Sim::start(cfg).await.expect("simulator starts");
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy();
        if let Some(ca) = sim.ca_pem() {
            http =
                http.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap());
        }
        let http = http.build().unwrap();
        let base = sim.url();
        let token = token(&http, &base, tenant, "app").await;
        Env { sim, http, base, token }
    }

    /// [`Env::start`] over plain HTTP, or over TLS with a generated CA.
    pub async fn start_over(tls: bool, cfg: SimConfig) -> Env {
        Env::start(SimConfig { tls: tls.then_some(mdebulk::sim::SimTls::Generate), ..cfg }).await
    }

    /// Starts a simulator serving `n` tenants (`tenant-01` …) with `cfg`,
    /// over plain HTTP or TLS; its token is tenant-01's.
    pub async fn start_tenants(tls: bool, n: usize, cfg: SimConfig) -> Env {
        let cfg = SimConfig {
            tenants: Some(n),
            tls: tls.then_some(mdebulk::sim::SimTls::Generate),
            ..cfg
        };
        Env::start_as(cfg, "tenant-01").await
    }

    /// A token for app `app` in `tenant` (its name or id).
    pub async fn token_for(&self, tenant: &str) -> String {
        token(&self.http, &self.base, tenant, "app").await
    }

    /// The machine ids of one tenant's fleet, in order.
    pub fn tenant_ids(&self, tenant: &str) -> Vec<String> {
        let fleet = self.sim.tenant_fleet(tenant).expect("a tenant of the simulator");
        fleet.into_iter().map(|m| m.id).collect()
    }

    /// `GET` with another token than the environment's.
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    /// `POST` (a JSON body) with another token than the environment's.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> Reply {
        send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body)).await
    }

    /// The ids of the machines `GET /api/machines` lists with `token`.
    pub async fn listed_ids(&self, token: &str) -> Vec<String> {
        let r = self.get_as(token, "/api/machines").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.json["value"].as_array().expect("a list");
        items.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
    }

    /// `POST /_sim/{path}` (no body, no token): a hook.
    pub async fn hook(&self, path: &str) -> Reply {
        send(self.http.post(format!("{}/_sim/{path}", self.base))).await
    }

    /// The machine ids of the fleet, in order.
    pub fn ids(&self) -> Vec<String> {
        self.sim.fleet().into_iter().map(|m| m.id).collect()
    }

    /// Index of the first online Windows machine.
    pub fn windows_online(&self) -> usize {
        self.sim
            .fleet()
            .iter()
            .position(|m| {
                m.os_platform.as_deref().unwrap_or("").starts_with("Windows")
                    && m.health_status.as_deref() == Some("Active")
            })
            .expect("an online Windows machine")
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        send(self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body))
            .await
    }

    /// `POST /api/machines/{id}/{segment}`.
    pub async fn action(&self, id: &str, segment: &str, body: Value) -> Reply {
        self.post(&format!("/api/machines/{id}/{segment}"), body).await
    }

    pub async fn stats(&self) -> mdebulk::sim::Stats {
        let r = send(self.http.get(format!("{}/_sim/stats", self.base))).await;
        assert_eq!(r.status, 200);
        serde_json::from_value(r.json).unwrap()
    }
}

/// Gets a token for `client` in `tenant` from the v2 endpoint.
pub async fn token(http: &reqwest::Client, base: &str, tenant: &str, client: &str) -> String {
    let r = send(http.post(format!("{base}/{tenant}/oauth2/v2.0/token")).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["access_token"].as_str().unwrap().to_string()
}

/// Sends a request and reads the whole reply; panics on a transport error.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    try_send(req).await.expect("transport")
}

/// Sends a request and reads the whole reply, or returns the transport error.
pub async fn try_send(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let res = req.send().await?;
    let status = res.status().as_u16();
    let header =
        |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let retry_after =
        header("retry-after").map(|v| v.parse().expect("Retry-After is whole seconds"));
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let text = res.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, retry_after, content_type, www_authenticate, text, json })
}

/// A fixture of tests/fixtures as JSON.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The keys of a JSON object, in order.
pub fn keys(v: &Value) -> Vec<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// Asserts an error reply in the API's envelope with `status` and `code`.
#[track_caller]
pub fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(keys(&r.json), ["error"], "{}", r.text);
    assert_eq!(keys(&r.json["error"]), keys(&fixture("error-invalidrequestbody.json")["error"]));
    assert_eq!(r.json["error"]["code"], code, "{}", r.text);
    let target = r.json["error"]["target"].as_str().unwrap();
    assert_eq!(target.len(), 36, "target is a GUID: {target}");
    assert!(!r.json["error"]["message"].as_str().unwrap().is_empty());
}

/// Polls an action until its status is final or `limit` passes; returns the last body.
pub async fn wait_final(env: &Env, id: &str, limit: Duration) -> Value {
    let start = std::time::Instant::now();
    loop {
        let r = env.get(&format!("/api/machineactions/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let status = r.json["status"].as_str().unwrap().to_string();
        if !matches!(status.as_str(), "Pending" | "InProgress") || start.elapsed() > limit {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
