//! The `mdebulk simulate` subcommand: its flags, their conversion into a
//! [`SimConfig`], and the foreground server that prints its address and runs
//! until SIGINT or SIGTERM.
//!
//! Values with their own syntax (`--limit`, durations, `--window`, the fleet
//! file) are read here rather than by clap, so a bad one gives exactly one
//! error line naming the problem.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::{
    DEFAULT_IDENTITY_HEADER, FederatedCredential, FleetSpec, IdentityConfig, SimConfig, SimError,
};
use super::tls::SimTls;
use super::{Sim, fleet};
use crate::pace::limit::{format_duration, parse_duration, parse_limits};
use crate::pace::window::WindowModel;

/// Run a local simulator of the Defender for Endpoint machine-actions API.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = super::catalog::help_text())]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free port (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: String,

    /// Address of the Microsoft Graph listener (runHuntingQuery); default: a free port on the host of --listen (printed on the second line).
    #[arg(long, value_name = "HOST:PORT")]
    pub graph_listen: Option<String>,

    /// Number of machine records to generate from --seed.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub machines: usize,

    /// Load the machines from a JSON file in the API's Machine shape (an array, or {"value":[...]}) instead of generating them.
    #[arg(long, value_name = "FILE.json", conflicts_with = "machines")]
    pub fleet: Option<PathBuf>,

    /// Quota per app, tenant and API as N/DURATION; repeat for several; `none` disables quotas.
    #[arg(long = "limit", value_name = "N/DURATION", default_values_t = ["100/60s".to_string(), "1500/3600s".to_string()])]
    pub limits: Vec<String>,

    /// How calls are counted: sliding, fixed or bucket.
    #[arg(long, default_value = "sliding", value_name = "MODEL")]
    pub window: String,

    /// Delay added to every request (half before handling, half before the reply), e.g. 50ms.
    #[arg(long, default_value = "0ms", value_name = "DURATION")]
    pub latency: String,

    /// Fraction of API calls answered with an injected 500, 503 or dropped connection.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub error_rate: f64,

    /// Time from acceptance to the final status of an action on an online machine.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub settle: String,

    /// Fraction of actions that end Failed instead of Succeeded.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub fail_rate: f64,

    /// Fraction of generated machines that are offline (their actions end TimeOut).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub offline_rate: f64,

    /// How long an action on an offline machine stays Pending before TimeOut.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub action_timeout: String,

    /// Lifetime of issued access tokens.
    #[arg(long, default_value = "3599s", value_name = "DURATION")]
    pub token_ttl: String,

    /// Accept only this client id at the token endpoint (default: any).
    #[arg(long, env = "MDEBULK_SIM_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,

    /// Accept only this client secret at the token endpoint (default: any).
    #[arg(long, env = "MDEBULK_SIM_CLIENT_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub client_secret: Option<String>,

    /// Accept only this tenant at the token endpoint (default: any).
    #[arg(long, value_name = "TENANT", conflicts_with = "tenants")]
    pub tenant: Option<String>,

    /// Serve N tenants (1 to 99), tenant-01 ... tenant-NN, each with its own --machines fleet, actions and quotas; the client is consented in every one.
    #[arg(long, value_name = "N", conflicts_with = "fleet")]
    pub tenants: Option<usize>,

    /// Refuse token requests with invalid_client once this many tokens were issued (a secret revoked mid-run).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,

    /// Quote the request body back in the token endpoint's errors, as some identity proxies do.
    #[arg(long)]
    pub echo_token_requests: bool,

    /// Permissions granted to tokens, comma-separated (default: the seven action permissions, Machine.Read.All and, on Graph tokens, ThreatHunting.Read.All).
    #[arg(long, value_delimiter = ',', value_name = "ROLE,...")]
    pub roles: Vec<String>,

    /// Fraction of every quota window that another app of the tenant consumes.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub foreign_load: f64,

    /// Fraction of API calls refused with 429 whatever the counts (the service's CPU quota).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub cpu_throttle_rate: f64,

    /// Send this Retry-After, verbatim, with every 429 instead of the real wait (a faulty server: e.g. 18446744073709551615).
    #[arg(long, value_name = "VALUE")]
    pub throttle_retry_after: Option<String>,

    /// Display name of the calling app, reported as `requestor` of its actions.
    #[arg(long, default_value = "mdebulk simulator", value_name = "NAME")]
    pub app_name: String,

    /// Page list replies after this many entities with @odata.nextLink (default: never).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,

    /// Credentials besides the client secret.
    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Seed of every random choice: fleet, failures, faults.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,

    /// Serve HTTPS instead of HTTP, with a CA and a server certificate (127.0.0.1, ::1, localhost) made at start, unless --tls-cert/--tls-key are given.
    #[arg(long)]
    pub tls: bool,

    /// With --tls: write the generated CA certificate (PEM) to FILE before listening; clients trust it with --ca-cert FILE or SSL_CERT_FILE.
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "tls_cert")]
    pub tls_ca_out: Option<PathBuf>,

    /// With --tls: serve this PEM certificate (chain) instead of a generated one; its issuer is whatever CA signed it, so --tls-ca-out is refused.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// With --tls-cert: the PEM private key of that certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The flags of the credentials the login takes besides a client secret.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdentityArgs {
    /// Register the certificate(s) of this PEM file on the app: a client
    /// assertion signed by its key logs in (repeatable).
    #[arg(long = "client-cert", value_name = "FILE.pem")]
    pub client_certs: Vec<PathBuf>,

    /// Register a federated credential: tokens issued by ISSUER (with
    /// --federated-subject, signed by the key of --federated-cert) are traded
    /// for access tokens, as workload identity federation does.
    #[arg(long, value_name = "ISSUER", requires_all = ["federated_subject", "federated_cert"])]
    pub federated_issuer: Option<String>,

    /// The `sub` the federated credential accepts.
    #[arg(long, value_name = "SUBJECT", requires = "federated_issuer")]
    pub federated_subject: Option<String>,

    /// PEM certificate of the key that signs the federated tokens.
    #[arg(long, value_name = "FILE.pem", requires = "federated_issuer")]
    pub federated_cert: Option<PathBuf>,

    /// Client id of a user-assigned managed identity of the simulated host
    /// (repeatable); the system-assigned identity always exists.
    #[arg(long = "managed-identity", value_name = "CLIENT_ID")]
    pub managed_identities: Vec<String>,

    /// The X-IDENTITY-HEADER value the App Service token endpoint demands.
    #[arg(long, default_value = DEFAULT_IDENTITY_HEADER, value_name = "VALUE", hide_default_value = true)]
    pub identity_header: String,

    /// Answer the IMDS path as Azure Arc's agent does (api-version
    /// 2020-06-01): challenge a first request with a key file written in
    /// DIR, and give a token only to a request that sends its content.
    #[arg(long, value_name = "DIR")]
    pub arc_key_dir: Option<PathBuf>,
}

impl IdentityArgs {
    /// Reads the certificate files.
    fn into_config(self) -> Result<IdentityConfig, SimError> {
        let read = |flag: &'static str, path: &Path| -> Result<Vec<Vec<u8>>, SimError> {
            let text = std::fs::read(path).map_err(|e| SimError::Invalid {
                flag,
                why: format!("cannot read {}: {}", path.display(), fleet::io_reason(&e)),
            })?;
            let certs = crate::api::jwt::certificates_from_pem(&text)
                .map_err(|e| SimError::Invalid { flag, why: format!("{}: {e}", path.display()) })?;
            if certs.is_empty() {
                return Err(SimError::Invalid {
                    flag,
                    why: format!("{} holds no PEM certificate", path.display()),
                });
            }
            Ok(certs)
        };
        let mut client_certificates = Vec::new();
        for path in &self.client_certs {
            client_certificates.extend(read("--client-cert", path)?);
        }
        let mut federated = Vec::new();
        if let (Some(issuer), Some(subject), Some(cert)) =
            (self.federated_issuer, self.federated_subject, self.federated_cert)
        {
            let certificate = read("--federated-cert", &cert)?.swap_remove(0);
            federated.push(FederatedCredential { issuer, subject, certificate });
        }
        if self.identity_header.is_empty() {
            return Err(SimError::Invalid { flag: "--identity-header", why: "is empty".into() });
        }
        if let Some(dir) = self.arc_key_dir.as_deref().filter(|d| !d.is_dir()) {
            return Err(SimError::Invalid {
                flag: "--arc-key-dir",
                why: format!("{} is not a directory", dir.display()),
            });
        }
        Ok(IdentityConfig {
            client_certificates,
            federated,
            managed_identities: self.managed_identities,
            identity_header: self.identity_header,
            arc_key_dir: self.arc_key_dir,
        })
    }
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, SimError> {
    parse_duration(value).map_err(|why| SimError::Invalid { flag, why })
}

impl SimulateArgs {
    /// Checks every flag and builds the configuration, loading `--fleet`.
    pub(crate) fn into_config(self) -> Result<SimConfig, SimError> {
        let limits = parse_limits(&self.limits)?;
        let window: WindowModel =
            self.window.parse().map_err(|why| SimError::Invalid { flag: "--window", why })?;
        let fleet = match &self.fleet {
            Some(path) => FleetSpec::Machines(fleet::load(path)?),
            None => FleetSpec::Generate { machines: self.machines },
        };
        let tls = match (self.tls, self.tls_cert, self.tls_key) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some(SimTls::Files { cert, key }),
            (true, _, _) => Some(SimTls::Generate),
        };
        let roles = if self.roles.is_empty() {
            SimConfig::default().roles
        } else {
            self.roles.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect()
        };
        let config = SimConfig {
            listen: self.listen,
            graph_listen: self.graph_listen,
            fleet,
            limits,
            window,
            latency: duration("--latency", &self.latency)?,
            error_rate: self.error_rate,
            settle: duration("--settle", &self.settle)?,
            fail_rate: self.fail_rate,
            offline_rate: self.offline_rate,
            action_timeout: duration("--action-timeout", &self.action_timeout)?,
            token_ttl: duration("--token-ttl", &self.token_ttl)?,
            client_id: self.client_id,
            client_secret: self.client_secret,
            tenant: self.tenant,
            tenants: self.tenants,
            max_tokens: self.max_tokens,
            echo_token_requests: self.echo_token_requests,
            roles,
            foreign_load: self.foreign_load,
            cpu_throttle_rate: self.cpu_throttle_rate,
            throttle_retry_after: self.throttle_retry_after,
            app_name: self.app_name,
            page_size: self.page_size,
            identity: self.identity.into_config()?,
            seed: self.seed,
            tls,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs the simulator in the foreground: writes the generated CA to
/// `--tls-ca-out`, prints `listening on http://HOST:PORT` (`https://` with
/// `--tls`: the API and the login) as the first line on stdout and
/// `graph on http://HOST:PORT` (Microsoft Graph) as the second (flushed), a
/// one-line summary on stderr, and serves until SIGINT or SIGTERM.
pub async fn serve(args: SimulateArgs) -> anyhow::Result<()> {
    let ca_out = args.tls_ca_out.clone();
    let config = args.into_config()?;
    let summary = summary(&config);
    let sim = Sim::start(config).await?;
    // Written before the address is printed, so a client that waits for
    // the first line finds the file complete.
    if let (Some(path), Some(pem)) = (&ca_out, sim.ca_pem()) {
        std::fs::write(path, pem).map_err(|e| {
            anyhow::anyhow!(
                "cannot write --tls-ca-out {}: {}",
                path.display(),
                fleet::io_reason(&e)
            )
        })?;
    }
    {
        let mut out = std::io::stdout().lock();
        // One write for both lines: a reader that takes the first line and
        // closes the pipe must not make a second write fail.
        let lines = format!("listening on {}\ngraph on {}\n", sim.url(), sim.graph_url());
        out.write_all(lines.as_bytes())?;
        out.flush()?;
    }
    eprintln!("{summary}");
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// One line describing what is simulated.
fn summary(c: &SimConfig) -> String {
    let fleet = match &c.fleet {
        FleetSpec::Generate { machines } => match c.tenants {
            Some(n) => format!(
                "{n} tenants (tenant-01 ... {}) of {machines} generated machines each (seed {})",
                super::tenant::tenant_name(n),
                c.seed
            ),
            None => format!("{machines} generated machines (seed {})", c.seed),
        },
        FleetSpec::Machines(m) => format!("{} machines from file", m.len()),
    };
    let limits = if c.limits.is_empty() {
        "no quota".to_string()
    } else {
        let l: Vec<String> = c.limits.iter().map(|l| l.to_string()).collect();
        format!("quota {} per app, tenant and API ({})", l.join(" + "), c.window)
    };
    let tls = match &c.tls {
        None => "",
        Some(SimTls::Generate) => "; TLS with a generated CA",
        Some(SimTls::Files { .. }) => "; TLS with the given certificate",
    };
    format!(
        "simulating {fleet}; {limits}; settle {}, latency {}, error rate {}{tls}",
        format_duration(c.settle),
        format_duration(c.latency),
        c.error_rate
    )
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn config(argv: &[&str]) -> Result<SimConfig, SimError> {
        let mut full = vec!["simulate"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full)
            .map_err(|e| SimError::Invalid { flag: "argv", why: e.to_string() })?
            .args
            .into_config()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = config(&[]).unwrap();
        let d = SimConfig::default();
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.window, d.window);
        assert_eq!(c.token_ttl, Duration::from_secs(3599));
        assert_eq!(c.roles, d.roles);
        assert_eq!(c.fleet, FleetSpec::Generate { machines: 1000 });
        assert_eq!(c.listen, "127.0.0.1:8080");
    }

    #[test]
    fn flags() {
        let c = config(&[
            "--limit",
            "5/1s",
            "--limit",
            "20/1m",
            "--window",
            "bucket",
            "--settle",
            "200ms",
            "--roles",
            "Machine.Isolate,Machine.Read.All",
            "--machines",
            "12",
            "--page-size",
            "3",
        ])
        .unwrap();
        assert_eq!(c.limits.len(), 2);
        assert_eq!(c.window, WindowModel::Bucket);
        assert_eq!(c.settle, Duration::from_millis(200));
        assert_eq!(c.roles, ["Machine.Isolate", "Machine.Read.All"]);
        assert_eq!(c.fleet, FleetSpec::Generate { machines: 12 });
        assert!(config(&["--limit", "none"]).unwrap().limits.is_empty());
    }

    #[test]
    fn tls_flags() {
        assert_eq!(config(&[]).unwrap().tls, None);
        assert_eq!(config(&["--tls"]).unwrap().tls, Some(SimTls::Generate));
        assert_eq!(
            config(&["--tls", "--tls-ca-out", "ca.pem"]).unwrap().tls,
            Some(SimTls::Generate)
        );
        let files = config(&["--tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap().tls;
        assert_eq!(files, Some(SimTls::Files { cert: "c.pem".into(), key: "k.pem".into() }));
        for argv in [
            &["--tls-ca-out", "ca.pem"][..],
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            &["--tls", "--tls-cert", "c.pem"],
            &["--tls", "--tls-key", "k.pem"],
            &["--tls", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca-out", "ca.pem"],
            &["--tenants", "3", "--tenant", "contoso"],
            &["--tenants", "3", "--fleet", "f.json"],
        ] {
            assert!(config(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn one_line_errors() {
        for (argv, needle) in [
            (&["--limit", "100/60"][..], "invalid limit \"100/60\""),
            (&["--window", "leaky"], "invalid --window"),
            (&["--settle", "soon"], "invalid --settle"),
            (&["--error-rate", "1.5"], "invalid --error-rate"),
            (&["--roles", "Machine.Nuke"], "unknown role"),
            (&["--fleet", "/nonexistent/f.json"], "cannot read fleet file /nonexistent/f.json"),
            (&["--tenants", "0"], "invalid --tenants: 0 is not between 1 and 99"),
            (&["--tenants", "100"], "invalid --tenants: 100 is not between 1 and 99"),
        ] {
            let e = config(argv).unwrap_err().to_string();
            assert!(e.contains(needle), "{argv:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
