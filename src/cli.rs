//! The command line: clap definitions (the raw flags) and their conversion
//! into validated configuration. Library code never sees these types.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::api::action::{ActionKind, IsolationType, ScanType, is_sha1};
use crate::api::cloud::Cloud;
use crate::input::columns::ColumnAssignment;
use crate::input::{ColumnChoices, InputFormat, InputSpec, RowDefaults, TextEncoding};
use crate::logging::{ColorChoice, LogFormat};
use crate::pace::{parse_duration, parse_limits};
use crate::results::Status;
use crate::run::devices::DevicesConfig;
use crate::run::status::StatusConfig;
use crate::run::undo::{UndoConfig, default_undo_path};
use crate::run::{Existing, ResultsTarget, RetryPolicy, RunConfig, WaitOptions};

pub mod tenants;

/// Run Microsoft Defender for Endpoint machine actions in bulk, from a
/// spreadsheet, paced exactly at the API quota.
#[derive(Debug, Parser)]
#[command(name = "mdebulk", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on stderr: text, or json for cron jobs and log pipelines (then the summary and fatal errors are JSON too).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,
    /// More detail in the logs (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Logging")]
    pub verbose: u8,
    /// Only warnings and errors in the logs.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = "Logging")]
    pub quiet: bool,
    /// Colours and the live progress display: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN", help_heading = "Logging")]
    pub color: ColorChoice,
    /// The end-of-command summary: text, or json (one object: counts per status, elapsed, 429s, results, exit code, error). Default: json under --log-format json, else text.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", help_heading = "Output")]
    pub summary: Option<SummaryFormat>,
}

/// How the end-of-command summary (and a fatal error) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// Lines for a person.
    Text,
    /// One JSON object, for scripts and log pipelines.
    Json,
}

impl Cli {
    /// Log verbosity: −1 quiet, 0 normal, 1+ more.
    pub fn verbosity(&self) -> i8 {
        if self.quiet { -1 } else { self.verbose.min(3) as i8 }
    }

    /// Whether the summary and fatal errors are JSON: `--summary json`, or
    /// JSON logs without a `--summary` choice.
    pub fn json_summary(&self) -> bool {
        match self.summary {
            Some(f) => f == SummaryFormat::Json,
            None => self.log_format == LogFormat::Json,
        }
    }
}

/// Whether a command line asks for JSON logs (`--log-format json`), read
/// before clap parses it so that a usage error can be reported as JSON.
pub fn json_logs_in_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    last_value(args, "--log-format").as_deref() == Some("json")
}

/// The value of the last `--flag VALUE` or `--flag=VALUE` before any `--`.
fn last_value(args: impl IntoIterator<Item = std::ffi::OsString>, flag: &str) -> Option<String> {
    let mut found = None;
    let mut next_is_value = false;
    let prefix = format!("{flag}=");
    for arg in args {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--" {
            break;
        }
        if next_is_value {
            next_is_value = false;
            found = Some(arg);
        } else if arg == flag {
            next_is_value = true;
        } else if let Some(v) = arg.strip_prefix(&prefix) {
            found = Some(v.to_string());
        }
    }
    found
}

/// The `--color` choice of a command line before clap parses it, so that
/// clap's own help and errors follow it too (the last one given wins; an
/// unknown value is left to clap to reject).
pub fn color_in_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ColorChoice {
    match last_value(args, "--color").as_deref() {
        Some("always") => ColorChoice::Always,
        Some("never") => ColorChoice::Never,
        _ => ColorChoice::Auto,
    }
}

/// clap's colour setting for a `--color` choice and the environment.
pub fn clap_color(choice: ColorChoice, env: &dyn Fn(&str) -> Option<String>) -> clap::ColorChoice {
    match choice {
        ColorChoice::Always => clap::ColorChoice::Always,
        ColorChoice::Never => clap::ColorChoice::Never,
        ColorChoice::Auto if !ColorChoice::Auto.enabled(true, env) => clap::ColorChoice::Never,
        ColorChoice::Auto => clap::ColorChoice::Auto,
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send an action to every device of a CSV/TSV/JSONL file and write one result row per input row.
    Run(Box<RunArgs>),
    /// Run a local simulator of the MDE API (for tests, rehearsals and demos).
    Simulate(Box<crate::sim::SimulateArgs>),
    /// Follow up the actions of an earlier results file: record their current (or, with --wait, final) status in it.
    Status(Box<StatusArgs>),
    /// Undo what an earlier run did: release isolations, lift restrictions, cancel actions still pending.
    Undo(Box<UndoArgs>),
    /// Carry out exactly a plan written by `run --dry-run`, once its digest is confirmed and every row still hits the machine the plan names.
    Apply(Box<ApplyArgs>),
    /// List the tenant's devices with their containment now (isolated, restricted), from each one's latest completed actions; the output is a valid run input.
    Devices(Box<DevicesArgs>),
    /// Check the login: which method, tenant, identity, audience, expiry and permissions a token has.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Print a shell completion script to standard output (README, "Shell completions and man page").
    Completions(CompletionsArgs),
    /// Print the roff man page of mdebulk, or of one subcommand, to standard output.
    Man(ManArgs),
}

/// `mdebulk completions`.
#[derive(Debug, Args)]
#[command(after_long_help = COMPLETIONS_AFTER_HELP)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const COMPLETIONS_AFTER_HELP: &str = "\
Examples:
  mdebulk completions bash > ~/.local/share/bash-completion/completions/mdebulk
  mdebulk completions zsh > ~/.zfunc/_mdebulk     # with fpath+=~/.zfunc before compinit
  mdebulk completions fish > ~/.config/fish/completions/mdebulk.fish
  mdebulk completions powershell >> $PROFILE";

/// `mdebulk man`.
#[derive(Debug, Args)]
#[command(after_long_help = MAN_AFTER_HELP)]
pub struct ManArgs {
    /// A subcommand (run, apply, status, undo, devices, simulate, auth, completions, man); default: mdebulk itself.
    pub subcommand: Option<String>,
}

const MAN_AFTER_HELP: &str = "\
Examples:
  mdebulk man | man -l -
  mdebulk man > ~/.local/share/man/man1/mdebulk.1
  mdebulk man run > ~/.local/share/man/man1/mdebulk-run.1";

/// `mdebulk auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Get a token by the chosen method and show what it allows; with a file or --action, which permission is missing.
    Check(Box<AuthCheckArgs>),
}

/// `mdebulk auth check`.
#[derive(Debug, Args)]
#[command(after_long_help = AUTH_CHECK_AFTER_HELP)]
pub struct AuthCheckArgs {
    /// An input file whose actions the token must allow (.csv, .tsv, .jsonl).
    pub input: Option<PathBuf>,
    /// An action the token must allow (and the action of rows without one).
    #[arg(long, help_heading = "Action")]
    pub action: Option<String>,
    /// API location and credentials.
    #[command(flatten)]
    pub api: ApiArgs,
}

const AUTH_CHECK_AFTER_HELP: &str = "\
Credentials come from the environment, as for run (README, \"Logging in\").
Nothing but the token request is sent. Exit codes: 0 the token allows every
action asked about; 2 no token could be had, or a permission is missing.";

/// `mdebulk run`.
#[derive(Debug, Args)]
#[command(after_long_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// Input file (.csv, .tsv, .jsonl, .txt list of devices, .xlsx/.xlsm/.xls/.ods workbook), or - for standard input. Not with --tag, --has-file or --query.
    #[arg(required_unless_present_any = ["tag", "has_file", "query", "query_file"])]
    pub input: Option<String>,
    /// Act on the machines carrying this tag (GET machines/findbytag; without regard to case) instead of an input file. Needs -o FILE.
    #[arg(long, value_name = "TAG", conflicts_with_all = ["input", "has_file", "query", "query_file"], help_heading = "Input")]
    pub tag: Option<String>,
    /// With --tag: every tag starting with TAG (useStartsWithFilter).
    #[arg(long, requires = "tag", help_heading = "Input")]
    pub tag_prefix: bool,
    /// Act on the machines that have seen the file with this SHA-1 (GET files/{sha1}/machines) instead of an input file; the default --sha1 of stop-and-quarantine. Needs -o FILE.
    #[arg(long, value_name = "SHA1", conflicts_with_all = ["input", "query", "query_file"], help_heading = "Input")]
    pub has_file: Option<String>,
    /// Act on the devices of an Advanced Hunting query's result (Microsoft Graph's runHuntingQuery; permission ThreatHunting.Read.All): its DeviceId column, and for stop-and-quarantine without --sha1 its SHA1 column. Repeated devices collapse. Needs -o FILE.
    #[arg(long, value_name = "KQL", conflicts_with_all = ["input", "query_file"], help_heading = "Input")]
    pub query: Option<String>,
    /// --query, read from FILE (UTF-8; - for standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input"], help_heading = "Input")]
    pub query_file: Option<PathBuf>,
    /// Microsoft Graph base URL for --query, overriding --cloud (https://graph.microsoft.com; gcc-high https://graph.microsoft.us; dod https://dod-graph.microsoft.us).
    #[arg(long, env = "MDE_GRAPH_URL", value_name = "URL", help_heading = "Auth & endpoint")]
    pub graph_url: Option<String>,
    /// Results file (.csv, .jsonl or .xlsx; - for standard output). Default: the input's name with .results.csv, beside it (.results.xlsx for a workbook; .plan.csv / .plan.xlsx with --dry-run).
    #[arg(short, long, help_heading = "Output")]
    pub output: Option<String>,
    /// Input format, when the file name has no telling extension (stdin). lines: one device id, name, IP or Entra id per line.
    #[arg(long, value_name = "csv|tsv|jsonl|lines|workbook", help_heading = "Input")]
    pub input_format: Option<InputFormat>,
    /// Text encoding of the input. Default: from its byte order mark, else UTF-8 when valid, else Windows-1252 (with a warning).
    #[arg(
        long,
        value_name = "utf-8|utf-16le|utf-16be|windows-1252|latin1",
        help_heading = "Input"
    )]
    pub encoding: Option<TextEncoding>,
    /// Use the column HEADER for ROLE (machine_id, device_name, device, aad_device_id, ip, action, comment, isolation_type, sha1, scan_type), over the header aliases; repeatable. Example: --column machine_id="Device Id".
    #[arg(long = "column", value_name = "ROLE=HEADER", help_heading = "Input")]
    pub columns: Vec<ColumnAssignment>,
    /// Give the column HEADER no role (it is still carried to the results); repeatable.
    #[arg(long = "ignore-column", value_name = "HEADER", help_heading = "Input")]
    pub ignore_columns: Vec<String>,
    /// The sheet of a workbook input to read, by name or by position from 1. Default: the first.
    #[arg(long, value_name = "NAME|INDEX", help_heading = "Input")]
    pub sheet: Option<String>,
    /// Action for rows without an action column: isolate, unisolate (release), stop-and-quarantine, offboard, scan, ...
    #[arg(long, help_heading = "Action")]
    pub action: Option<String>,
    /// Comment recorded with each action (required by the API) for rows without a comment column.
    #[arg(long, help_heading = "Action")]
    pub comment: Option<String>,
    /// Isolation type for isolate rows without one: full, selective or unmanaged-device.
    #[arg(long, help_heading = "Action")]
    pub isolation_type: Option<String>,
    /// Sha1 of the file for stop-and-quarantine rows without one.
    #[arg(long, help_heading = "Action")]
    pub sha1: Option<String>,
    /// Scan type for scan rows without one: quick or full.
    #[arg(long, help_heading = "Action")]
    pub scan_type: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1000), help_heading = "Pacing")]
    pub concurrency: u16,
    /// API location, credentials, pacing and retries.
    #[command(flatten)]
    pub api: ApiArgs,
    /// `--wait` and its knobs.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Run against a simulator started in-process on a loopback port (no tenant needed; plain HTTP, no proxy).
    #[arg(long, conflicts_with_all = ["api_url", "login_url", "graph_url", "ca_certs", "proxy"], help_heading = "Auth & endpoint")]
    pub simulate: bool,
    /// Confirm irreversible actions (offboard) without asking.
    #[arg(long, short = 'y', help_heading = "Safety")]
    pub yes: bool,
    /// Record malformed rows as `invalid` and send the rest, instead of refusing the file.
    #[arg(long, help_heading = "Input")]
    pub skip_invalid: bool,
    /// Replace an existing results file and start over.
    #[arg(long, conflicts_with = "resume", help_heading = "Safety")]
    pub force: bool,
    /// Continue an interrupted run on the same results file: never resend a row already sent.
    #[arg(long, help_heading = "Safety")]
    pub resume: bool,
    /// Replay only rows of a results file with these statuses (e.g. error,rejected).
    #[arg(long, value_delimiter = ',', value_name = "STATUS,...", help_heading = "Input")]
    pub only: Option<Vec<Status>>,
    /// Validate, resolve device names, check that machine ids exist, pending actions and OS support, write `planned` rows to the plan (NAME.plan.csv) with the estimated duration and its digest for `mdebulk apply`; send no action.
    #[arg(long, help_heading = "Safety")]
    pub dry_run: bool,
    /// When a device name (or aadDeviceId, IP) matches several machines, as re-imaged devices do: `latest` takes the most recently seen instead of recording the row `ambiguous`.
    #[arg(long, value_enum, value_name = "latest", help_heading = "Input")]
    pub pick: Option<Pick>,
    /// Refuse more rows than this that isolate, restrict or offboard, unless --allow-large.
    #[arg(long, value_name = "N", default_value_t = crate::run::DEFAULT_MAX_DEVICES, help_heading = "Safety")]
    pub max_devices: u64,
    /// Refuse more such rows than this percentage of the tenant's active devices (one paged GET machines listing), unless --allow-large.
    #[arg(long, value_name = "P", value_parser = parse_percent, help_heading = "Safety")]
    pub max_percent: Option<f64>,
    /// Go on above --max-devices or --max-percent (on a terminal, after typing the count back).
    #[arg(long, help_heading = "Safety")]
    pub allow_large: bool,
    /// Rows whose device is already in the asked state (isolated, released, restricted, unrestricted), by its latest completed actions, become already_done and are not sent (one paged GET machineactions listing).
    #[arg(long, help_heading = "Safety")]
    pub skip_satisfied: bool,
    /// The protected-devices policy: devices to never isolate, restrict, offboard or stop-and-quarantine on (TOML: machine_ids, names, tags, groups, os_platforms, device_values, actions). A run with protected rows is refused before any action call.
    #[arg(long, value_name = "FILE", env = "MDEBULK_PROTECT", help_heading = "Safety")]
    pub protect: Option<PathBuf>,
    /// With --protect: record protected rows as `protected` and send the rest, instead of refusing the run.
    #[arg(long, help_heading = "Safety")]
    pub skip_protected: bool,
    /// With --dry-run: who makes the plan, recorded beside it and covered by its digest (default: the OS user).
    #[arg(long, value_name = "NAME", requires = "dry_run", help_heading = "Safety")]
    pub planner: Option<String>,
    /// Stop gracefully after this long (resumable, exit 75).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, help_heading = "Pacing")]
    pub max_runtime: Option<Duration>,
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,
    /// After the actions are sent, add this device tag (at most 200 characters) to every device the run acted on (AddOrRemoveTagForMultipleMachines, 500 a call; needs Machine.ReadWrite.All) and record it in the tag_result column; undo removes it. Needs -o FILE.
    #[arg(long, value_name = "TAG", help_heading = "Output")]
    pub tag_result: Option<String>,
    /// `--notify`.
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// `--tenants` and `--tenant`.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

/// A run over many tenants: the profiles file and the one tenant to keep.
#[derive(Debug, Clone, Args)]
pub struct TenancyArgs {
    /// Act in many tenants: the tenant profiles (TOML, a [tenant.NAME] table each: tenant_id, auth, client_id and where the secret is (client_secret_env, client_secret_file, certificate_path, token_command), optional cloud, api_url, login_url, limits). Each row names its tenant (profile name or tenant id) in a tenant column; each tenant is paced at its own quota, all side by side. Needs -o FILE. For status and undo: the profiles of the run's tenants.
    #[arg(long, value_name = "FILE", help_heading = "Tenants")]
    pub tenants: Option<PathBuf>,
    /// With --tenants: act in this tenant only (profile name or tenant id); in a run, rows without a tenant cell act in it.
    #[arg(long, value_name = "NAME", requires = "tenants", help_heading = "Tenants")]
    pub tenant: Option<String>,
}

/// `--notify`: the end-of-command webhook (`run`, `apply`, `status`, `undo`).
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// POST one summary message ({"text": ...}, as Slack and Teams incoming webhooks take) to this webhook URL when the command ends; retried a few times, never changes the exit code. The URL is a secret: prefer the environment variable.
    #[arg(
        long,
        value_name = "URL",
        env = "MDEBULK_NOTIFY_URL",
        hide_env_values = true,
        help_heading = "Output"
    )]
    pub notify: Option<String>,
}

/// `mdebulk apply`.
#[derive(Debug, Args)]
#[command(after_long_help = APPLY_AFTER_HELP)]
pub struct ApplyArgs {
    /// The plan written by `run --dry-run` (NAME.plan.csv), with its record beside it (NAME.plan.csv.params.json).
    pub plan: PathBuf,
    /// The plan's digest, all 64 hex digits, as the dry run printed it: the plan is refused if it (or its record) changed since.
    #[arg(long, value_name = "SHA256", help_heading = "Safety")]
    pub digest: String,
    /// Who approves the plan, recorded in each action's comment and the journal (default: the OS user).
    #[arg(long, value_name = "NAME", help_heading = "Safety")]
    pub approver: Option<String>,
    /// Results file (.csv or .jsonl). Default: the plan's input name with .results.csv, beside the plan.
    #[arg(short, long, help_heading = "Output")]
    pub output: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1000), help_heading = "Pacing")]
    pub concurrency: u16,
    /// API location, credentials, pacing and retries.
    #[command(flatten)]
    pub api: ApiArgs,
    /// `--wait` and its knobs.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Confirm irreversible actions (offboard) without asking.
    #[arg(long, short = 'y', help_heading = "Safety")]
    pub yes: bool,
    /// Replace an existing results file and start over.
    #[arg(long, conflicts_with = "resume", help_heading = "Safety")]
    pub force: bool,
    /// Continue an interrupted apply on the same results file: never resend a row already sent.
    #[arg(long, help_heading = "Safety")]
    pub resume: bool,
    /// Refuse more rows than this that isolate, restrict or offboard, unless --allow-large.
    #[arg(long, value_name = "N", default_value_t = crate::run::DEFAULT_MAX_DEVICES, help_heading = "Safety")]
    pub max_devices: u64,
    /// Refuse more such rows than this percentage of the tenant's active devices, unless --allow-large.
    #[arg(long, value_name = "P", value_parser = parse_percent, help_heading = "Safety")]
    pub max_percent: Option<f64>,
    /// Go on above --max-devices or --max-percent (on a terminal, after typing the count back).
    #[arg(long, help_heading = "Safety")]
    pub allow_large: bool,
    /// The protected-devices policy, checked again at apply time (as for run).
    #[arg(long, value_name = "FILE", env = "MDEBULK_PROTECT", help_heading = "Safety")]
    pub protect: Option<PathBuf>,
    /// With --protect: record protected rows as `protected` and send the rest, instead of refusing.
    #[arg(long, help_heading = "Safety")]
    pub skip_protected: bool,
    /// Stop gracefully after this long (resumable, exit 75).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, help_heading = "Pacing")]
    pub max_runtime: Option<Duration>,
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,
    /// After the actions are sent, add this device tag to every device the apply acted on (as for run).
    #[arg(long, value_name = "TAG", help_heading = "Output")]
    pub tag_result: Option<String>,
    /// `--notify`.
    #[command(flatten)]
    pub notify: NotifyArgs,
}

const APPLY_AFTER_HELP: &str = "\
One person plans, another approves and applies:
  mdebulk run hosts.csv --action isolate --comment IR-7 --dry-run --planner alice
  mdebulk apply hosts.plan.csv --digest 3f9a...e1 --approver bob
Only the plan's `planned` rows are sent, with the plan's parameters; the
digest, planner and approver lead each action's comment. Exit codes as for
run; 2 when the digest differs or a row would now hit another machine.";

/// The API flags every command that calls the API shares: where it is,
/// how to pace and retry calls. Credentials come from the environment.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Quota per API as N/DURATION, repeatable; `none` disables pacing.
    #[arg(long = "limit", value_name = "N/DURATION", default_values_t = ["100/60s".to_string(), "1500/3600s".to_string()], help_heading = "Pacing")]
    pub limits: Vec<String>,
    /// Safety margin added to each quota window (default: 1% of it, at most 250ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, help_heading = "Pacing")]
    pub pace_margin: Option<Duration>,
    /// Attempts per request for transient errors (5xx, timeouts, connection errors).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "Retries")]
    pub max_attempts: u32,
    /// First backoff step after a transient error (doubles each attempt, with jitter, up to 60s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration_arg, help_heading = "Retries")]
    pub backoff: Duration,
    /// Time limit for one request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg, help_heading = "Retries")]
    pub request_timeout: Duration,
    /// Cloud whose API and login hosts to use.
    #[arg(long, default_value = "global", help_heading = "Auth & endpoint")]
    pub cloud: Cloud,
    /// API base URL, overriding --cloud.
    #[arg(long, env = "MDE_API_URL", help_heading = "Auth & endpoint")]
    pub api_url: Option<String>,
    /// Login (token) base URL, overriding --cloud.
    #[arg(long, env = "MDE_LOGIN_URL", help_heading = "Auth & endpoint")]
    pub login_url: Option<String>,
    /// Refused: a secret on the command line is visible to every user (ps). Use AZURE_CLIENT_SECRET.
    #[arg(long, hide = true)]
    pub client_secret: Option<String>,
    /// Also trust the CA certificates in this PEM file (a TLS-inspecting proxy's CA), on top of the system's; repeatable. SSL_CERT_FILE is read too.
    #[arg(long = "ca-cert", value_name = "FILE", help_heading = "Auth & endpoint")]
    pub ca_certs: Vec<PathBuf>,
    /// Send login and API requests through this proxy (http://HOST:PORT), loopback included, instead of HTTPS_PROXY/HTTP_PROXY/NO_PROXY. A password in it is visible to every user (ps): prefer HTTPS_PROXY for one that needs it.
    #[arg(long, value_name = "URL", help_heading = "Auth & endpoint")]
    pub proxy: Option<String>,
    /// How to log in.
    #[command(flatten)]
    pub login: LoginArgs,
}

/// How to log in: the method and the few settings that are not secrets.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// How to log in; default: chosen from the environment (README, "Logging in").
    #[arg(
        long,
        value_enum,
        env = "MDE_AUTH",
        value_name = "METHOD",
        help_heading = "Auth & endpoint"
    )]
    pub auth: Option<AuthMethod>,
    /// Managed identity: a user-assigned identity's client id (default: AZURE_CLIENT_ID, else the system-assigned identity).
    #[arg(long, value_name = "CLIENT_ID", help_heading = "Auth & endpoint")]
    pub managed_identity_client_id: Option<String>,
    /// Managed identity: a user-assigned identity by its object (principal) id.
    #[arg(long, value_name = "OBJECT_ID", conflicts_with_all = ["managed_identity_client_id", "managed_identity_resource_id"], help_heading = "Auth & endpoint")]
    pub managed_identity_object_id: Option<String>,
    /// Managed identity: a user-assigned identity by its Azure resource id.
    #[arg(
        long,
        value_name = "RESOURCE_ID",
        conflicts_with = "managed_identity_client_id",
        help_heading = "Auth & endpoint"
    )]
    pub managed_identity_resource_id: Option<String>,
    /// Managed identity: the IMDS base URL instead of http://169.254.169.254.
    #[arg(long, env = "MDEBULK_IMDS_URL", value_name = "URL", help_heading = "Auth & endpoint")]
    pub imds_url: Option<String>,
    /// Longest MDE_TOKEN_COMMAND or az may run before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration_arg, help_heading = "Auth & endpoint")]
    pub token_command_timeout: Duration,
}

/// `--auth`: the ways of logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMethod {
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET.
    Secret,
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH (PEM or PFX).
    Certificate,
    /// The host's managed identity (IMDS, App Service).
    ManagedIdentity,
    /// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE.
    WorkloadIdentity,
    /// The Azure CLI's signed-in user (az account get-access-token).
    AzureCli,
    /// MDE_TOKEN_COMMAND: a command printing a token.
    TokenCommand,
    /// MDE_TOKEN: a ready bearer token, never refreshed.
    Token,
}

/// `--pick`: how to choose among several machines matching one device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pick {
    /// The most recently seen machine (`lastSeen`).
    Latest,
}

/// The API settings of [`ApiArgs`], validated.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Quotas per API.
    pub limits: Vec<crate::pace::Limit>,
    /// `--pace-margin`.
    pub pace_margin: Option<Duration>,
    /// Retry knobs.
    pub policy: RetryPolicy,
    /// `--request-timeout`.
    pub request_timeout: Duration,
}

impl ApiArgs {
    /// Validates the flags (a secret on the command line is refused).
    pub fn settings(&self) -> anyhow::Result<ApiSettings> {
        if self.client_secret.is_some() {
            bail!(
                "--client-secret is refused: command-line arguments are visible to every user of the machine (ps); set AZURE_CLIENT_SECRET in the environment instead"
            );
        }
        let limits = parse_limits(&self.limits)?;
        Ok(ApiSettings {
            limits,
            pace_margin: self.pace_margin,
            policy: RetryPolicy {
                max_attempts: self.max_attempts,
                backoff_base: self.backoff,
                ..RetryPolicy::default()
            },
            request_timeout: self.request_timeout,
        })
    }
}

/// `--wait` and its knobs (`run` and `status`).
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait for the actions to finish and record their final status (succeeded, failed, timed_out, cancelled).
    #[arg(long, help_heading = "Waiting")]
    pub wait: bool,
    /// With --wait: time between two polls of the action list.
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "wait", value_parser = parse_duration_arg, help_heading = "Waiting")]
    pub poll_interval: Duration,
    /// With --wait: give up waiting after this long; rows still open stay pending/in_progress.
    #[arg(long, value_name = "DURATION", default_value = "30m", requires = "wait", value_parser = parse_duration_arg, help_heading = "Waiting")]
    pub wait_timeout: Duration,
}

impl WaitArgs {
    /// The wait options, when `--wait` was given.
    pub fn options(&self) -> anyhow::Result<Option<WaitOptions>> {
        if !self.wait {
            return Ok(None);
        }
        // A zero interval parses (`0` is a duration) but would poll in a
        // busy loop; refused here, where `--wait` is known to be on.
        if self.poll_interval.is_zero() {
            bail!("--poll-interval must be longer than zero");
        }
        Ok(Some(WaitOptions { poll_interval: self.poll_interval, timeout: self.wait_timeout }))
    }
}

/// `mdebulk status`.
#[derive(Debug, Args)]
#[command(after_long_help = STATUS_AFTER_HELP)]
pub struct StatusArgs {
    /// Results file of an earlier run (.csv, .jsonl or .xlsx); updated in place, in its own format.
    pub results: PathBuf,
    /// `--wait` and its knobs.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// API location, credentials, pacing and retries.
    #[command(flatten)]
    pub api: ApiArgs,
    /// `--notify`.
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// `--tenants` and `--tenant`: the results of a run over many tenants.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

const STATUS_AFTER_HELP: &str = "\
Rows with an action id whose status is still open (submitted, already_pending,
pending, in_progress) are looked up with a few list calls, however many rows
there are; the file gets their status and action_status. Without --wait, one
look; with --wait, until every action is final or --wait-timeout passes.

Credentials come from the environment, as for run. Exit codes: 0 every row ok;
1 some rows failed; 2 usage, file or auth error; 130 interrupted.

Examples:
  mdebulk status hosts.results.csv
  mdebulk status hosts.results.csv --wait --wait-timeout 1h
  mdebulk status hosts.results.csv --summary json";

/// `mdebulk devices`.
#[derive(Debug, Args)]
#[command(after_long_help = DEVICES_AFTER_HELP)]
pub struct DevicesArgs {
    /// Only devices isolated now.
    #[arg(long)]
    pub isolated: bool,
    /// Only devices whose code execution is restricted now.
    #[arg(long)]
    pub restricted: bool,
    /// Only devices carrying this tag (without regard to case).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Report file (.csv; - for standard output, the default).
    #[arg(short, long)]
    pub output: Option<String>,
    /// API location, credentials, pacing and retries.
    #[command(flatten)]
    pub api: ApiArgs,
    /// `--tenants` and `--tenant`: every tenant's devices in one report.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

const DEVICES_AFTER_HELP: &str = "\
A device is isolated when its latest completed (Succeeded) isolate or
unisolate action is an isolate, restricted likewise for restrict and
unrestrict; the report names that action's id, time, requestor and comment.
It costs one paged GET machines listing and one paged GET machineactions
listing (10,000 entries a call), whatever the number of devices. Its
machine_id column makes it a run input:
  mdebulk devices --isolated -o isolated.csv
  mdebulk run isolated.csv --action unisolate --comment \"IR-42 release\"
--summary json prints the counts as one JSON object (on stderr when the
report goes to standard output).
Exit codes: 0 written; 2 usage, file or auth error.";

/// `mdebulk undo`.
#[derive(Debug, Args)]
#[command(after_long_help = UNDO_AFTER_HELP)]
pub struct UndoArgs {
    /// Results file of the run to undo (.csv, .jsonl or .xlsx).
    pub results: PathBuf,
    /// The undo's own results file. Default: the results file's name with .undo.csv, beside it (.undo.jsonl, .undo.xlsx for those).
    #[arg(short, long, help_heading = "Output")]
    pub output: Option<PathBuf>,
    /// Confirm without asking: undo changes devices.
    #[arg(long, short = 'y', help_heading = "Safety")]
    pub yes: bool,
    /// Replace an existing undo results file.
    #[arg(long, help_heading = "Safety")]
    pub force: bool,
    /// Comment recorded with each release and cancel (default: one naming the results file).
    #[arg(long, help_heading = "Action")]
    pub comment: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000), help_heading = "Pacing")]
    pub concurrency: u16,
    /// API location, credentials, pacing and retries.
    #[command(flatten)]
    pub api: ApiArgs,
    /// `--notify`.
    #[command(flatten)]
    pub notify: NotifyArgs,
    /// `--tenants` and `--tenant`: the results of a run over many tenants.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

const UNDO_AFTER_HELP: &str = "\
Only the run's own actions are touched (rows submitted, pending, in_progress or
succeeded; not already_pending, which was someone else's action): an isolate
is released, a restriction lifted, an action still pending cancelled. A
finished offboard or stop-and-quarantine is refused with the reason: neither
can be reversed through the API.

Credentials come from the environment, as for run. Exit codes: 0 every row
undone or nothing to undo; 1 some rows could not be undone; 2 usage, file or
auth error (nothing sent); 130 interrupted (run it again: what is undone is
skipped).

Examples:
  mdebulk undo hosts.results.csv
  mdebulk undo hosts.results.csv --yes --comment \"IR-42 all clear\"
  mdebulk status hosts.results.undo.csv --wait";

/// The value parser of every `DURATION` flag: [`parse_duration`]'s
/// spellings (`500ms`, `60s`, `30m`, `1h30m`, `0`). Its reason becomes the
/// tail of clap's own `invalid value '…' for '--flag <DURATION>': …` error,
/// so a bad value is a usage error (exit 2) before any configuration is built.
pub fn parse_duration_arg(v: &str) -> Result<Duration, String> {
    parse_duration(v)
}

const RUN_AFTER_HELP: &str = "\
Credentials come from the environment (or --auth): AZURE_TENANT_ID and
AZURE_CLIENT_ID with AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or
AZURE_FEDERATED_TOKEN_FILE; MDE_TOKEN_COMMAND; MDE_TOKEN; managed identity
and the Azure CLI with --auth. `mdebulk auth check` shows what a token allows.
Proxies: HTTPS_PROXY, HTTP_PROXY and NO_PROXY (never for loopback), or --proxy;
a TLS-inspecting proxy's CA: --ca-cert FILE or SSL_CERT_FILE.

Exit codes: 0 every row ok; 1 some rows failed, or --tag-result could not
tag some devices; 2 usage, input or auth error, or rows on protected devices
(nothing sent); 75 stopped by --max-runtime (resumable); 130 interrupted
(resumable). --notify never changes the exit code.

Examples:
  mdebulk run hosts.csv --action isolate --comment \"IR-42 contain\" --dry-run
  mdebulk run hosts.csv --action isolate --comment \"IR-42 contain\" --wait
  mdebulk run hosts.csv --action isolate --comment \"IR-42 contain\" --resume
  mdebulk run hosts.csv --action isolate --comment \"IR-42 contain\" --protect protect.toml
  mdebulk run hosts.csv --action isolate --comment \"IR-42 contain\" --tag-result \"IR-42 isolated\"
  mdebulk run devices.txt --action scan --scan-type quick --comment \"IR-42\"
  mdebulk run hosts.xlsx --sheet Servers --action collect-investigation-package --comment IR-42
  mdebulk run --query 'DeviceInfo | where DeviceManualTags has \"IR-42\" | distinct DeviceId' --action isolate --comment IR-42 -o ir42.csv
  mdebulk run hosts.csv --action isolate --comment rehearsal --simulate";

/// Where the API is, for a run.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A real (or separately started) API.
    Remote(Box<crate::api::client::ClientConfig>),
    /// Start the simulator in-process and use it.
    Simulated {
        /// Per-request time limit.
        request_timeout: Duration,
    },
    /// Many tenants (`--tenants`), each with its own API client.
    Tenants(Vec<TenantEndpoint>),
    /// Many tenants, rehearsed: a simulator started in-process serves one
    /// tenant per profile, in profile order.
    SimulatedTenants {
        /// Per-request time limit.
        request_timeout: Duration,
        /// The profiles' names and quotas, in order.
        tenants: Vec<(String, Vec<crate::pace::Limit>)>,
    },
}

/// The clients of a command that follows up a run (`status`, `undo`):
/// one, or one per tenant of a run over many (`--tenants`).
#[derive(Debug, Clone)]
pub enum Clients {
    /// The credentials of the environment.
    One(Box<crate::api::client::ClientConfig>),
    /// One client per tenant, and the rows' tenant names.
    Tenants(crate::input::TenantNames, Vec<TenantEndpoint>),
}

impl Clients {
    /// The clients of `api` and `tenancy`.
    fn of(
        api: &ApiArgs,
        tenancy: &TenancyArgs,
        env: &dyn Fn(&str) -> Option<String>,
        request_timeout: Duration,
    ) -> anyhow::Result<Clients> {
        Ok(match follow_up_tenants(api, tenancy, env)? {
            Some((names, endpoints)) => Clients::Tenants(names, endpoints),
            None => Clients::One(Box::new(client_config(api, env, request_timeout)?)),
        })
    }

    /// The settings the `--notify` webhook borrows (TLS, proxy): the first client's.
    pub fn first(&self) -> Option<&crate::api::client::ClientConfig> {
        match self {
            Clients::One(c) => Some(c),
            Clients::Tenants(_, t) => t.first().map(|t| &t.client),
        }
    }
}

/// One tenant of a run over many: its profile name, its id, its client
/// (credentials, API and login hosts) and its quota.
#[derive(Debug, Clone)]
pub struct TenantEndpoint {
    /// The profile name rows use.
    pub name: String,
    /// The tenant id of the profile.
    pub tenant_id: String,
    /// Its client's settings.
    pub client: crate::api::client::ClientConfig,
    /// Its quota per API.
    pub limits: Vec<crate::pace::Limit>,
}

/// Turns `run` flags and the environment into a validated configuration.
pub fn run_config(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(RunConfig, Endpoint)> {
    let api = args.api.settings()?;
    let action = args.action.as_deref().map(str::parse::<ActionKind>).transpose()?;
    let isolation_type = args
        .isolation_type
        .as_deref()
        .map(str::parse::<IsolationType>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--isolation-type: {e}"))?;
    let scan_type = args
        .scan_type
        .as_deref()
        .map(str::parse::<ScanType>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--scan-type: {e}"))?;
    if let Some(sha1) = &args.sha1
        && !is_sha1(sha1)
    {
        bail!("--sha1 {sha1:?}: a Sha1 is exactly 40 hex digits");
    }
    if args.comment.as_deref().is_some_and(|c| c.trim().is_empty()) {
        bail!("--comment must not be empty: the API requires a comment on every action");
    }
    let request_timeout = api.request_timeout;

    let targets = run_targets(args, action)?;
    // Without an input file the run writes its targets file and reads that.
    let input_path = args.input.as_deref().filter(|i| *i != "-").map(PathBuf::from);
    if targets.is_some() && matches!(args.output.as_deref(), None | Some("-")) {
        bail!(
            "--tag, --has-file and --query need a results file (-o FILE): the devices found are kept beside it (FILE with .targets.csv), so --resume, status and undo act on the same rows"
        );
    }
    let format = args
        .input_format
        .or_else(|| input_path.as_deref().and_then(crate::input::InputFormat::from_extension));
    let workbook = format == Some(InputFormat::Workbook);
    let results = match args.output.as_deref() {
        Some("-") => ResultsTarget::Stdout,
        Some(p) => ResultsTarget::File(PathBuf::from(p)),
        None => match &input_path {
            Some(p) if args.dry_run => ResultsTarget::File(default_plan_path(p, workbook)),
            Some(p) => ResultsTarget::File(default_results_path(p, workbook)),
            None => bail!(
                "reading standard input: name the results file with -o FILE (or -o - for standard output)"
            ),
        },
    };
    if let ResultsTarget::File(out) = &results {
        refuse_workbook_results(out)?;
    }
    if args.sheet.is_some() && format != Some(InputFormat::Workbook) {
        bail!(
            "--sheet chooses a sheet of a workbook (.xlsx, .xlsm, .xls, .ods); this input is not one"
        );
    }
    if let (ResultsTarget::File(out), Some(inp)) = (&results, &input_path)
        && out == inp
    {
        bail!("the results file would overwrite the input {}: choose another -o", inp.display());
    }
    if args.resume && results == ResultsTarget::Stdout {
        bail!("--resume needs a results file (-o FILE), not standard output");
    }
    if let Some(tag) = &args.tag_result {
        crate::run::check_tag(tag).map_err(anyhow::Error::msg)?;
        if results == ResultsTarget::Stdout {
            bail!(
                "--tag-result needs a results file (-o FILE), not standard output: each row records whether its device was tagged, and --resume finishes the tagging"
            );
        }
        if args.tag.as_deref().is_some_and(|t| t.to_lowercase() == tag.to_lowercase()) {
            bail!(
                "--tag-result {tag:?} is the tag the run finds its devices by (--tag): undo would take off the tag they were found by; choose another tag"
            );
        }
    }
    let wait = args.wait.options()?;
    if wait.is_some() && results == ResultsTarget::Stdout {
        bail!(
            "--wait needs a results file (-o FILE), not standard output: rows are updated once their actions finish"
        );
    }
    let existing = match (args.force, args.resume) {
        (true, _) => Existing::Force,
        (_, true) => Existing::Resume,
        _ => Existing::Refuse,
    };
    let config = RunConfig {
        targets,
        input: InputSpec {
            path: input_path,
            format: args.input_format,
            encoding: args.encoding,
            columns: ColumnChoices {
                assigned: args.columns.clone(),
                ignored: args.ignore_columns.clone(),
            },
            sheet: args.sheet.clone(),
        },
        results,
        defaults: RowDefaults {
            action,
            comment: args.comment.clone(),
            isolation_type,
            sha1: args.sha1.as_ref().or(args.has_file.as_ref()).map(|s| s.to_ascii_lowercase()),
            scan_type,
            tenants: None,
        },
        limits: api.limits.clone(),
        pace_margin: api.pace_margin,
        concurrency: usize::from(args.concurrency),
        policy: api.policy.clone(),
        skip_invalid: args.skip_invalid,
        existing,
        only: args.only.clone(),
        dry_run: args.dry_run,
        yes: args.yes,
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        progress: !args.no_progress,
        max_runtime: args.max_runtime,
        pick_latest: args.pick == Some(Pick::Latest),
        skip_satisfied: args.skip_satisfied,
        max_devices: args.max_devices,
        max_percent: args.max_percent,
        allow_large: args.allow_large,
        tag_result: args.tag_result.clone(),
        wait,
        in_flight_grace: request_timeout.min(Duration::from_secs(5)),
        command_line: std::env::args().collect(),
        api: String::new(),
        tenant: String::new(),
        protect: protect_policy(args.protect.as_deref())?,
        skip_protected: args.skip_protected,
        // Only a plan records its planner.
        planner: match args.dry_run {
            true => person("--planner", args.planner.as_deref(), env)?,
            false => String::new(),
        },
        approval: None,
        login_failure_stops: false,
    };
    if let Some(path) = &args.tenancy.tenants {
        return tenants_run_config(args, config, path, &api, env);
    }
    let endpoint = if args.simulate {
        Endpoint::Simulated { request_timeout }
    } else {
        let mut client = client_config(&args.api, env, request_timeout)?;
        if matches!(config.targets, Some(crate::run::Targets::Query { .. })) {
            client.graph = Some(graph_config(args, &client.credentials, env)?);
        }
        Endpoint::Remote(Box::new(client))
    };
    let (api, tenant) = match &endpoint {
        // A simulator started in-process lives and dies with its run.
        Endpoint::Simulated { .. } | Endpoint::SimulatedTenants { .. } => {
            (SIMULATED.to_string(), SIMULATED.to_string())
        }
        Endpoint::Tenants(_) => (String::new(), String::new()),
        Endpoint::Remote(c) => {
            let tenant = match c.credentials.tenant() {
                "" => env("AZURE_TENANT_ID").unwrap_or_default(),
                t => t.to_string(),
            };
            (c.api_base.clone(), tenant.trim().to_string())
        }
    };
    let config = RunConfig { api, tenant, ..config };
    Ok((config, endpoint))
}

/// The configuration of a run over many tenants (`--tenants FILE`): the
/// profiles read and checked, each made a client of its own, and the rows'
/// tenant names (restricted by `--tenant`).
fn tenants_run_config(
    args: &RunArgs,
    mut config: RunConfig,
    path: &std::path::Path,
    api: &ApiSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(RunConfig, Endpoint)> {
    if config.results == ResultsTarget::Stdout {
        bail!(
            "--tenants needs a results file (-o FILE), not standard output: each tenant's share of the run keeps its journal beside it (FILE.tenants), so --resume, status and undo work per tenant"
        );
    }
    if config.targets.is_none() && config.input.path.is_none() {
        bail!(
            "--tenants reads its input from a file, not standard input: each tenant's share of the run reads it again (save the rows to a file first)"
        );
    }
    let (names, profiles) = tenant_profiles(&args.tenancy, path)?;
    config.defaults.tenants = Some(names);
    if profiles.len() > crate::sim::MAX_TENANTS && args.simulate {
        bail!(
            "--simulate serves at most {} tenants; {} has {}",
            crate::sim::MAX_TENANTS,
            path.display(),
            profiles.len()
        );
    }
    if args.simulate {
        config.api = SIMULATED.to_string();
        config.tenant = SIMULATED.to_string();
        let tenants = profiles.iter().map(|p| (p.name.clone(), p.limits_or(&api.limits))).collect();
        let endpoint = Endpoint::SimulatedTenants { request_timeout: api.request_timeout, tenants };
        return Ok((config, endpoint));
    }
    let query = matches!(config.targets, Some(crate::run::Targets::Query { .. }));
    let mut endpoints = tenant_endpoints(&args.api, &profiles, env, api)?;
    if query {
        for (t, p) in endpoints.iter_mut().zip(&profiles) {
            let mut graph = graph_config(args, &t.client.credentials, env)
                .map_err(|e| anyhow::anyhow!("tenant {}: {e}", p.name))?;
            if let Some(cloud) = p.cloud
                && args.graph_url.is_none()
            {
                graph.base = cloud.graph_base().to_string();
                graph.scope = cloud.graph_scope().to_string();
            }
            t.client.graph = Some(graph);
        }
    }
    // Each share records its own API and tenant.
    config.api = String::new();
    config.tenant = String::new();
    Ok((config, Endpoint::Tenants(endpoints)))
}

/// The profiles of `--tenants FILE` and the rows' tenant names, both
/// restricted to `--tenant` when it is given.
fn tenant_profiles(
    tenancy: &TenancyArgs,
    path: &std::path::Path,
) -> anyhow::Result<(crate::input::TenantNames, Vec<tenants::Profile>)> {
    let profiles = tenants::read(path)?;
    let names = crate::input::TenantNames::new(
        profiles.iter().map(|p| (p.name.clone(), p.tenant_id.clone())),
    );
    let Some(only) = &tenancy.tenant else { return Ok((names, profiles)) };
    let names = names.restricted_to(only).ok_or_else(|| {
        anyhow::anyhow!(
            "--tenant {}: no profile of that name or tenant id in {}",
            crate::text::quote(only),
            path.display()
        )
    })?;
    let kept = names.fallback().unwrap_or_default().to_string();
    Ok((names, profiles.into_iter().filter(|p| p.name == kept).collect()))
}

/// One client per profile, with its quota (the profile's, else the run's).
fn tenant_endpoints(
    api_args: &ApiArgs,
    profiles: &[tenants::Profile],
    env: &dyn Fn(&str) -> Option<String>,
    api: &ApiSettings,
) -> anyhow::Result<Vec<TenantEndpoint>> {
    let roots = extra_roots(api_args, env)?;
    profiles
        .iter()
        .map(|p| {
            Ok(TenantEndpoint {
                name: p.name.clone(),
                tenant_id: p.tenant_id.clone(),
                client: tenant_client(api_args, p, env, api.request_timeout, &roots)?,
                limits: p.limits_or(&api.limits),
            })
        })
        .collect()
}

/// `status --tenants` and `undo --tenants`: the rows' tenant names and one
/// client per tenant; `None` without `--tenants`.
pub fn follow_up_tenants(
    api_args: &ApiArgs,
    tenancy: &TenancyArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(crate::input::TenantNames, Vec<TenantEndpoint>)>> {
    let Some(path) = &tenancy.tenants else { return Ok(None) };
    let api = api_args.settings()?;
    let (names, profiles) = tenant_profiles(tenancy, path)?;
    Ok(Some((names, tenant_endpoints(api_args, &profiles, env, &api)?)))
}

/// The environment variables a tenant's credentials may read from the
/// process environment: the host's managed identity, which is the host's
/// whatever the tenant. Every other setting comes from the profile, so a
/// secret of the environment (`AZURE_CLIENT_SECRET`) never reaches a tenant
/// it was not meant for.
const HOST_IDENTITY_VARS: [&str; 8] = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "MDEBULK_ARC_KEY_DIR",
    "ProgramData",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
];

/// The client of one tenant's profile: its credentials (secrets fetched
/// now from where the profile says, so a missing one stops the command
/// before anything is sent), its API and login hosts (the profile's URL,
/// else its cloud, else the run's), the run's TLS and proxy settings.
fn tenant_client(
    args: &ApiArgs,
    p: &tenants::Profile,
    env: &dyn Fn(&str) -> Option<String>,
    request_timeout: Duration,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> anyhow::Result<crate::api::client::ClientConfig> {
    let name = &p.name;
    let from_env = |setting: &str, var: &Option<String>| -> anyhow::Result<Option<String>> {
        let Some(var) = var else { return Ok(None) };
        match env(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
            Some(v) => Ok(Some(v)),
            None => bail!("tenant {name}: {setting} names {var}, which is not set (or empty)"),
        }
    };
    let secret = match (&p.client_secret_env, &p.client_secret_file) {
        (Some(_), _) => from_env("client_secret_env", &p.client_secret_env)?,
        (None, Some(file)) => Some(read_secret_file(name, file)?),
        (None, None) => None,
    };
    let password = from_env("certificate_password_env", &p.certificate_password_env)?;
    let token = from_env("token_env", &p.token_env)?;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let settings: Vec<(&str, Option<String>)> = vec![
        ("AZURE_TENANT_ID", Some(p.tenant_id.clone())),
        ("AZURE_CLIENT_ID", p.client_id.clone()),
        ("AZURE_CLIENT_SECRET", secret),
        ("AZURE_CLIENT_CERTIFICATE_PATH", path(&p.certificate_path)),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", password),
        ("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", p.send_certificate_chain.then(|| "true".into())),
        ("AZURE_FEDERATED_TOKEN_FILE", path(&p.federated_token_file)),
        ("MDE_TOKEN_COMMAND", p.token_command.clone()),
        ("MDE_TOKEN", token),
    ];
    let profile_env = |key: &str| -> Option<String> {
        if HOST_IDENTITY_VARS.contains(&key) {
            return env(key);
        }
        settings.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.clone())
    };
    let method = <AuthMethod as clap::ValueEnum>::from_str(&p.auth, true)
        .map_err(|e| anyhow::anyhow!("tenant {name}: auth: {e}"))?;
    let login = LoginArgs {
        auth: Some(method),
        managed_identity_client_id: p.managed_identity_client_id.clone(),
        managed_identity_object_id: p.managed_identity_object_id.clone(),
        managed_identity_resource_id: p.managed_identity_resource_id.clone(),
        ..args.login.clone()
    };
    let credentials =
        credentials(&login, &profile_env).map_err(|e| anyhow::anyhow!("tenant {name}: {e}"))?;
    let cloud = p.cloud.unwrap_or(args.cloud);
    let api_base = p
        .api_url
        .clone()
        .or_else(|| p.cloud.is_none().then(|| args.api_url.clone()).flatten())
        .unwrap_or_else(|| cloud.api_base().to_string());
    let login_base = p
        .login_url
        .clone()
        .or_else(|| p.cloud.is_none().then(|| args.login_url.clone()).flatten())
        .or_else(|| env("AZURE_AUTHORITY_HOST").filter(|h| !h.trim().is_empty()))
        .unwrap_or_else(|| cloud.login_base().to_string());
    Ok(crate::api::client::ClientConfig {
        api_base: api_base.trim().to_string(),
        login_base: login_base.trim().to_string(),
        scope: cloud.scope().to_string(),
        credentials,
        request_timeout,
        connect_timeout: Duration::from_secs(10),
        extra_roots: roots.to_vec(),
        proxy: args.proxy.clone().map(crate::api::auth::Secret::new),
        graph: None,
    })
}

/// The client secret in `file` (its first line, trimmed): the file is
/// named in errors, never its content.
fn read_secret_file(tenant: &str, file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow::anyhow!("tenant {tenant}: client_secret_file {}: {e}", file.display())
    })?;
    match text.lines().next().map(str::trim).filter(|s| !s.is_empty()) {
        Some(secret) => Ok(secret.to_string()),
        None => bail!("tenant {tenant}: client_secret_file {} is empty", file.display()),
    }
}

/// Turns `apply` flags, the plan's record and the environment into the
/// configuration of an ordinary run of the plan: its `planned` rows, with
/// the parameters the plan was made with. Refuses a digest that is not the
/// plan's, a plan or record changed since, and an API or tenant other than
/// the plan's.
pub fn apply_config(
    args: &ApplyArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(RunConfig, Endpoint)> {
    use crate::run::approval;
    let given = args.digest.trim().to_ascii_lowercase();
    if given.len() != 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "--digest {}: the plan's digest is 64 hex digits, as the dry run printed it (the short form in comments only names it)",
            crate::text::quote(&args.digest)
        );
    }
    let record = approval::read_record(&args.plan)?;
    let bytes = std::fs::read(&args.plan)
        .with_context(|| format!("reading the plan {}", args.plan.display()))?;
    let now = approval::digest(&record.params, &record.planner, &record.columns, &bytes);
    if now != record.digest {
        bail!(
            "{}: the plan or its record changed since the dry run made it (its digest is now {now}, the record says {}); nothing was sent. Make the plan again and have it approved",
            args.plan.display(),
            record.digest
        );
    }
    if given != record.digest {
        bail!(
            "{}: --digest {given} is not this plan's digest ({}); nothing was sent. Check that this is the plan that was approved",
            args.plan.display(),
            record.digest
        );
    }
    if record.params.api == SIMULATED {
        bail!(
            "{}: planned against `run --simulate`, whose in-process simulator stopped with it; plan against `mdebulk simulate` (README, \"Rehearsing\")",
            args.plan.display()
        );
    }
    let p = &record.params;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let run_args = RunArgs {
        input: Some(args.plan.display().to_string()),
        tag: None,
        tag_prefix: false,
        has_file: None,
        query: None,
        query_file: None,
        graph_url: None,
        output: args.output.clone(),
        input_format: None,
        encoding: None,
        columns: record
            .columns
            .assigned
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}", approval::record_path(&args.plan).display()))?,
        ignore_columns: record.columns.ignored.clone(),
        sheet: None,
        action: opt(&p.action),
        comment: opt(&p.comment),
        isolation_type: opt(&p.isolation_type),
        sha1: opt(&p.sha1),
        scan_type: opt(&p.scan_type),
        concurrency: args.concurrency,
        api: args.api.clone(),
        wait: args.wait.clone(),
        simulate: false,
        yes: args.yes,
        skip_invalid: false,
        force: args.force,
        resume: args.resume,
        only: Some(vec![Status::Planned]),
        dry_run: false,
        pick: None,
        max_devices: args.max_devices,
        max_percent: args.max_percent,
        allow_large: args.allow_large,
        skip_satisfied: false,
        protect: args.protect.clone(),
        skip_protected: args.skip_protected,
        planner: None,
        max_runtime: args.max_runtime,
        no_progress: args.no_progress,
        tag_result: args.tag_result.clone(),
        notify: args.notify.clone(),
        tenancy: TenancyArgs { tenants: None, tenant: None },
    };
    let (mut config, endpoint) = run_config(&run_args, env)?;
    if let ResultsTarget::Stdout = config.results {
        bail!("apply writes a results file (-o FILE), not standard output: it keeps a journal");
    }
    let here = crate::run::identity::RunParams::new(
        &config.defaults,
        &config.api,
        &config.tenant,
        String::new(),
    );
    let mut differ = Vec::new();
    if here.api != p.api {
        differ.push(format!("the API (--api-url): the plan {:?}, now {:?}", p.api, here.api));
    }
    if !here.tenant.is_empty() && !p.tenant.is_empty() && here.tenant != p.tenant {
        differ.push(format!(
            "the tenant (AZURE_TENANT_ID): the plan {:?}, now {:?}",
            p.tenant, here.tenant
        ));
    }
    if !differ.is_empty() {
        bail!(
            "{}: this invocation's parameters differ from the plan's; nothing was sent: {}",
            args.plan.display(),
            differ.join("; ")
        );
    }
    config.approval = Some(approval::Approval {
        digest: record.digest,
        planner: record.planner,
        approver: person("--approver", args.approver.as_deref(), env)?,
    });
    Ok((config, endpoint))
}

/// `--protect FILE` (or `MDEBULK_PROTECT`), read and checked now: a policy
/// that cannot be used stops the run before anything else.
pub fn protect_policy(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<crate::run::protect::Policy>>> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else { return Ok(None) };
    Ok(Some(std::sync::Arc::new(crate::run::protect::Policy::load(path)?)))
}

/// A planner's or approver's name as given (`flag`), or the OS user
/// (`USER`, `USERNAME`); checked to be short, printable text, because it
/// goes into every action's comment.
pub fn person(
    flag: &str,
    given: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let name = match given {
        Some(n) => n.trim().to_string(),
        None => env("USER")
            .or_else(|| env("USERNAME"))
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    let max = crate::run::approval::MAX_PERSON_CHARS;
    if name.is_empty() {
        bail!("{flag} must not be empty");
    }
    if name.chars().count() > max || name.chars().any(|c| c.is_control() || c == '[' || c == ']') {
        bail!(
            "{flag} {}: a name of at most {max} characters, without control characters or brackets (it goes into each action's comment)",
            crate::text::quote(&name)
        );
    }
    Ok(name)
}

/// `--max-percent`: a number above 0 and at most 100.
fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?}: a percentage above 0 and at most 100")),
    }
}

/// Where Microsoft Graph is for `--query`: `--graph-url` / `MDE_GRAPH_URL`,
/// else the cloud's host; its token scope; and with a ready token
/// (`MDE_TOKEN`), the ready Graph token `MDE_GRAPH_TOKEN`, without which a
/// query cannot be asked (a token has one audience).
fn graph_config(
    args: &RunArgs,
    credentials: &crate::api::auth::Credentials,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<crate::api::client::GraphConfig> {
    let cloud = args.api.cloud;
    let ready_token = match credentials {
        crate::api::auth::Credentials::Bearer(_) => {
            let token =
                env("MDE_GRAPH_TOKEN").map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
            let Some(token) = token else {
                bail!(
                    "--query with a ready token (MDE_TOKEN) needs MDE_GRAPH_TOKEN too: a token serves one audience, and Advanced Hunting is Microsoft Graph's ({}); or log in another way (README, \"Logging in\"), which gets both tokens",
                    cloud.graph_base()
                );
            };
            Some(crate::api::auth::Secret::new(token))
        }
        _ => None,
    };
    Ok(crate::api::client::GraphConfig {
        base: args
            .graph_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(cloud.graph_base())
            .to_string(),
        scope: cloud.graph_scope().to_string(),
        ready_token,
    })
}

/// The longest `--query` (or `--query-file`) read: a hunting query is text
/// a person writes; anything longer is a wrong file.
const MAX_QUERY_BYTES: usize = 1 << 20;

/// The KQL of `--query` or `--query-file` (`-`: standard input), checked:
/// UTF-8 (a byte order mark is dropped), not empty, at most
/// [`MAX_QUERY_BYTES`].
fn query_text(args: &RunArgs) -> anyhow::Result<Option<String>> {
    let (text, source) = match (&args.query, &args.query_file) {
        (Some(q), _) => (q.clone().into_bytes(), "--query".to_string()),
        (None, Some(path)) => {
            let shown = format!("--query-file {}", path.display());
            let bytes = if path.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(std::io::stdin().lock(), MAX_QUERY_BYTES as u64 + 1),
                    &mut buf,
                )
                .map_err(|e| anyhow::anyhow!("{shown}: cannot read standard input: {e}"))?;
                buf
            } else {
                std::fs::read(path).map_err(|e| anyhow::anyhow!("{shown}: cannot read it: {e}"))?
            };
            (bytes, shown)
        }
        (None, None) => return Ok(None),
    };
    if text.len() > MAX_QUERY_BYTES {
        bail!("{source}: longer than {} bytes; a hunting query is far shorter", MAX_QUERY_BYTES);
    }
    let body = text.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(&text);
    let kql = match std::str::from_utf8(body) {
        Ok(t) => t.to_string(),
        Err(e) => bail!(
            "{source}: not UTF-8 text (byte {} is invalid); save the query as UTF-8",
            e.valid_up_to() + 1
        ),
    };
    if kql.trim().is_empty() {
        bail!("{source}: the query is empty");
    }
    Ok(Some(kql))
}

/// The run's targets when it has no input file: `--tag` (with
/// `--tag-prefix`), `--has-file` or `--query`/`--query-file`, checked.
/// `action` decides whether a query's rows carry their own file: a
/// stop-and-quarantine without `--sha1` takes each row's `SHA1`.
fn run_targets(
    args: &RunArgs,
    action: Option<ActionKind>,
) -> anyhow::Result<Option<crate::run::Targets>> {
    use crate::run::Targets;
    if let Some(kql) = query_text(args)? {
        let sha1_column = action == Some(ActionKind::StopAndQuarantineFile) && args.sha1.is_none();
        return Ok(Some(Targets::Query { kql, sha1_column }));
    }
    if let Some(tag) = &args.tag {
        if tag.trim().is_empty() {
            bail!("--tag must not be empty");
        }
        return Ok(Some(Targets::Tag { tag: tag.clone(), prefix: args.tag_prefix }));
    }
    if let Some(sha1) = &args.has_file {
        if !is_sha1(sha1) {
            bail!("--has-file {sha1:?}: a Sha1 is exactly 40 hex digits");
        }
        return Ok(Some(Targets::File { sha1: sha1.to_ascii_lowercase() }));
    }
    Ok(None)
}

/// Refuses a results path named like a workbook: results are written (and
/// rewritten in place by `status` and `--wait`) as CSV or JSONL only, and
/// CSV bytes under a workbook's name would not open in Excel.
fn refuse_workbook_results(path: &std::path::Path) -> anyhow::Result<()> {
    if InputFormat::from_extension(path) == Some(InputFormat::Workbook)
        && crate::output::ResultFormat::for_path(path) != crate::output::ResultFormat::Xlsx
    {
        bail!(
            "{}: results workbooks are written as .xlsx only; name the file .xlsx, or .csv or .jsonl",
            path.display()
        );
    }
    Ok(())
}

/// Refuses a workbook for `devices -o`: that listing is written as CSV.
fn refuse_devices_workbook(path: &std::path::Path) -> anyhow::Result<()> {
    if InputFormat::from_extension(path) == Some(InputFormat::Workbook) {
        bail!(
            "{}: the device listing is written as CSV, not as a workbook; name it .csv (Excel opens it in columns)",
            path.display()
        );
    }
    Ok(())
}

/// Refuses a results file written by `run --simulate`: its actions lived in
/// a simulator that stopped with that run, so no API holds them any more.
/// The run's journal beside the file names the API it ran against.
fn refuse_simulated_run(results: &std::path::Path, command: &str) -> anyhow::Result<()> {
    if crate::run::journal::recorded_api(results).as_deref() == Some(SIMULATED) {
        bail!(
            "{}: written by `run --simulate`, whose in-process simulator stopped when that run ended, so no API holds its actions any more for `{command}`; to rehearse run, status and undo, start `mdebulk simulate` separately and pass its --api-url and --login-url (and credentials) to each command (README, \"Rehearsing\")",
            results.display()
        );
    }
    Ok(())
}

/// What a run's journal records as its API when it ran against the
/// in-process simulator.
const SIMULATED: &str = "simulated";

/// `isolate.csv` → `isolate.results.csv`, beside the input; a workbook
/// input (`isolate.xlsx`, `.xls`, `.ods`, ...) → `isolate.results.xlsx`.
pub fn default_results_path(input: &std::path::Path, workbook: bool) -> PathBuf {
    input.with_file_name(format!("{}.results.{}", input_stem(input), results_extension(workbook)))
}

/// `isolate.csv` → `isolate.plan.csv`, beside the input (`.plan.xlsx` for a
/// workbook input): where a dry run writes its plan by default, so the
/// results file of the real run that follows is not taken.
pub fn default_plan_path(input: &std::path::Path, workbook: bool) -> PathBuf {
    input.with_file_name(format!("{}.plan.{}", input_stem(input), results_extension(workbook)))
}

/// The extension of a results file by default: a workbook's results are a
/// workbook, so they open where the input did.
fn results_extension(workbook: bool) -> &'static str {
    if workbook { "xlsx" } else { "csv" }
}

/// The input's name without its extension, nor the `.results` or `.plan`
/// of a file this tool wrote (`hosts.results.csv` replays as `hosts`).
fn input_stem(input: &std::path::Path) -> String {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    [".results", ".plan"]
        .iter()
        .find_map(|suffix| stem.strip_suffix(suffix))
        .unwrap_or(&stem)
        .to_string()
}

/// Turns `status` flags and the environment into a validated configuration.
pub fn status_config(
    args: &StatusArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(StatusConfig, Clients)> {
    refuse_workbook_results(&args.results)?;
    refuse_simulated_run(&args.results, "status")?;
    let api = args.api.settings()?;
    let config = StatusConfig {
        results: args.results.clone(),
        wait: args.wait.options()?,
        limits: api.limits,
        pace_margin: api.pace_margin,
        policy: api.policy,
    };
    Ok((config, Clients::of(&args.api, &args.tenancy, env, api.request_timeout)?))
}

/// Turns `devices` flags and the environment into a validated configuration.
pub fn devices_config(
    args: &DevicesArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(DevicesConfig, Clients)> {
    let api = args.api.settings()?;
    let output = match args.output.as_deref() {
        None | Some("-") => None,
        Some(p) => {
            let p = PathBuf::from(p);
            refuse_devices_workbook(&p)?;
            Some(p)
        }
    };
    if args.tag.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!("--tag must not be empty");
    }
    let config = DevicesConfig {
        output,
        isolated: args.isolated,
        restricted: args.restricted,
        tag: args.tag.clone(),
        limits: api.limits,
        pace_margin: api.pace_margin,
        policy: api.policy,
    };
    Ok((config, Clients::of(&args.api, &args.tenancy, env, api.request_timeout)?))
}

/// Turns `undo` flags and the environment into a validated configuration.
pub fn undo_config(
    args: &UndoArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(UndoConfig, Clients)> {
    refuse_simulated_run(&args.results, "undo")?;
    let api = args.api.settings()?;
    if args.comment.as_deref().is_some_and(|c| c.trim().is_empty()) {
        bail!("--comment must not be empty: the API requires a comment on every action");
    }
    let output = args.output.clone().unwrap_or_else(|| default_undo_path(&args.results));
    if output == args.results {
        bail!("the undo results would overwrite {}: choose another -o", args.results.display());
    }
    refuse_workbook_results(&output)?;
    if output.exists() && !args.force {
        bail!("{} already exists: add --force to replace it", output.display());
    }
    let config = UndoConfig {
        results: args.results.clone(),
        output,
        yes: args.yes,
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        comment: args.comment.clone(),
        limits: api.limits,
        pace_margin: api.pace_margin,
        policy: api.policy,
        concurrency: usize::from(args.concurrency),
    };
    Ok((config, Clients::of(&args.api, &args.tenancy, env, api.request_timeout)?))
}

/// `auth check` flags and environment: the client settings, and the
/// actions the token must allow (`--action`, and those of the input file).
pub fn auth_check_config(
    args: &AuthCheckArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(crate::api::client::ClientConfig, Vec<ActionKind>)> {
    let api = args.api.settings()?;
    let action = args.action.as_deref().map(str::parse::<ActionKind>).transpose()?;
    let mut wanted: Vec<ActionKind> = action.into_iter().collect();
    if let Some(path) = &args.input {
        let spec = InputSpec { path: Some(path.clone()), ..InputSpec::default() };
        let input = crate::input::Input::open(&spec)?;
        // Only the actions matter here: a placeholder comment keeps rows
        // without one valid.
        let defaults =
            RowDefaults { action, comment: Some("auth check".into()), ..RowDefaults::default() };
        let survey = crate::run::plan::survey(&input, &defaults, None)?;
        wanted.extend(survey.per_action.keys().copied());
    }
    wanted.sort();
    wanted.dedup();
    Ok((client_config(&args.api, env, api.request_timeout)?, wanted))
}

/// The IMDS base URL: `--imds-url` / `MDEBULK_IMDS_URL`, else
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST`, else the address of every Azure VM.
fn imds_base(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> String {
    flag.map(str::to_string)
        .or_else(|| env("AZURE_POD_IDENTITY_AUTHORITY_HOST"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| crate::api::auth::IMDS_DEFAULT_BASE.to_string())
}

/// The credentials `--auth` names, or, without it, the first the
/// environment provides, in this order: a client secret, a certificate, a
/// federated token file, a token command, a ready token, and a managed
/// identity when the host announces one (`IDENTITY_ENDPOINT`,
/// `MSI_ENDPOINT`, or an IMDS address set with `--imds-url` /
/// `AZURE_POD_IDENTITY_AUTHORITY_HOST`). Plain IMDS and the Azure CLI are
/// used only when asked for: probing 169.254.169.254 off Azure waits for a
/// timeout, and the CLI's user is a person whose permissions a scheduled
/// job should not borrow unnoticed.
pub fn credentials(
    login: &LoginArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<crate::api::auth::Credentials> {
    use crate::api::auth::{
        AzureCli, CertificateCredential, Credentials, IdentityEndpoint, ManagedIdentity, Secret,
        TokenCommand, UserAssigned, WorkloadIdentity,
    };
    let get = |k: &str| env(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let missing = |method: &str, names: &[&str]| -> anyhow::Error {
        let absent: Vec<&str> = names.iter().copied().filter(|n| get(n).is_none()).collect();
        anyhow::anyhow!("--auth {method} needs {} in the environment", absent.join(", "))
    };
    let app = || (get("AZURE_TENANT_ID"), get("AZURE_CLIENT_ID"));
    let secret = || match (app(), get("AZURE_CLIENT_SECRET")) {
        ((Some(tenant_id), Some(client_id)), Some(s)) => {
            Some(Credentials::ClientSecret { tenant_id, client_id, client_secret: Secret::new(s) })
        }
        _ => None,
    };
    let certificate = || -> Option<anyhow::Result<Credentials>> {
        let ((Some(tenant), Some(client)), Some(path)) =
            (app(), get("AZURE_CLIENT_CERTIFICATE_PATH"))
        else {
            return None;
        };
        let password = env("AZURE_CLIENT_CERTIFICATE_PASSWORD").map(Secret::new);
        let chain = get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        Some(
            CertificateCredential::from_file(
                &tenant,
                &client,
                std::path::Path::new(&path),
                password.as_ref(),
                chain,
            )
            .map(Credentials::Certificate)
            .map_err(anyhow::Error::from),
        )
    };
    let workload = || match (app(), get("AZURE_FEDERATED_TOKEN_FILE")) {
        ((Some(tenant_id), Some(client_id)), Some(file)) => {
            Some(Credentials::WorkloadIdentity(WorkloadIdentity {
                tenant_id,
                client_id,
                token_file: PathBuf::from(file),
            }))
        }
        _ => None,
    };
    let command = || {
        get("MDE_TOKEN_COMMAND").map(|command| {
            Credentials::TokenCommand(TokenCommand {
                command,
                timeout: login.token_command_timeout,
            })
        })
    };
    let token = || get("MDE_TOKEN").map(|t| Credentials::Bearer(Secret::new(t)));
    let flag = |v: &Option<String>| {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
    };
    let user_assigned = || {
        flag(&login.managed_identity_object_id)
            .map(UserAssigned::ObjectId)
            .or_else(|| flag(&login.managed_identity_resource_id).map(UserAssigned::ResourceId))
            .or_else(|| {
                flag(&login.managed_identity_client_id)
                    .or_else(|| get("AZURE_CLIENT_ID"))
                    .map(UserAssigned::ClientId)
            })
    };
    // The host's announced endpoint, if any.
    let announced = || {
        if let (Some(endpoint), Some(header)) = (get("IDENTITY_ENDPOINT"), get("IDENTITY_HEADER")) {
            return Some(IdentityEndpoint::AppService { endpoint, header: Secret::new(header) });
        }
        if let (Some(endpoint), Some(secret)) = (get("MSI_ENDPOINT"), get("MSI_SECRET")) {
            return Some(IdentityEndpoint::Msi2017 { endpoint, secret: Secret::new(secret) });
        }
        // Azure Arc's agent announces itself with both variables (and no
        // IDENTITY_HEADER, which App Service sets).
        if let (Some(endpoint), Some(_)) = (get("IDENTITY_ENDPOINT"), get("IMDS_ENDPOINT")) {
            let key_dir = get("MDEBULK_ARC_KEY_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::api::auth::arc_key_dir(get("ProgramData").as_deref()));
            return Some(IdentityEndpoint::Arc { endpoint, key_dir });
        }
        if login.imds_url.is_some() || get("AZURE_POD_IDENTITY_AUTHORITY_HOST").is_some() {
            return Some(IdentityEndpoint::Imds {
                base: imds_base(login.imds_url.as_deref(), env),
            });
        }
        None
    };
    let managed = |endpoint: IdentityEndpoint| {
        Credentials::ManagedIdentity(ManagedIdentity { endpoint, identity: user_assigned() })
    };
    let azure_cli = || {
        Credentials::AzureCli(AzureCli {
            tenant_id: get("AZURE_TENANT_ID"),
            timeout: login.token_command_timeout,
        })
    };
    let chosen = match login.auth {
        Some(AuthMethod::Secret) => secret().ok_or_else(|| {
            missing("secret", &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"])
        })?,
        Some(AuthMethod::Certificate) => certificate().ok_or_else(|| {
            missing(
                "certificate",
                &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_CERTIFICATE_PATH"],
            )
        })??,
        Some(AuthMethod::WorkloadIdentity) => workload().ok_or_else(|| {
            missing(
                "workload-identity",
                &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"],
            )
        })?,
        Some(AuthMethod::TokenCommand) => {
            command().ok_or_else(|| missing("token-command", &["MDE_TOKEN_COMMAND"]))?
        }
        Some(AuthMethod::Token) => token().ok_or_else(|| missing("token", &["MDE_TOKEN"]))?,
        Some(AuthMethod::ManagedIdentity) => managed(announced().unwrap_or_else(|| {
            IdentityEndpoint::Imds { base: imds_base(login.imds_url.as_deref(), env) }
        })),
        Some(AuthMethod::AzureCli) => azure_cli(),
        None => {
            if let Some(c) = secret() {
                c
            } else if let Some(c) = certificate() {
                c?
            } else if let Some(c) = workload().or_else(command).or_else(token) {
                c
            } else if let Some(endpoint) = announced() {
                managed(endpoint)
            } else {
                let (t, c) = app();
                let mut need = Vec::new();
                if t.is_none() {
                    need.push("AZURE_TENANT_ID");
                }
                if c.is_none() {
                    need.push("AZURE_CLIENT_ID");
                }
                need.push("AZURE_CLIENT_SECRET");
                bail!(
                    "no credentials: set {} (an app registration with the WindowsDefenderATP permissions for the action), or AZURE_CLIENT_CERTIFICATE_PATH instead of the secret, AZURE_FEDERATED_TOKEN_FILE, MDE_TOKEN_COMMAND or MDE_TOKEN; or choose --auth managed-identity or --auth azure-cli; or rehearse against a simulator (`mdebulk run --simulate`, or `mdebulk simulate` and --api-url/--login-url)",
                    need.join(", ")
                );
            }
        }
    };
    Ok(chosen)
}

/// API location and credentials from flags and environment.
fn client_config(
    args: &ApiArgs,
    env: &dyn Fn(&str) -> Option<String>,
    request_timeout: Duration,
) -> anyhow::Result<crate::api::client::ClientConfig> {
    let credentials = credentials(&args.login, env)?;
    // An explicit --login-url wins; then the Azure SDKs' AZURE_AUTHORITY_HOST;
    // then the cloud's own host.
    let login_base = args
        .login_url
        .clone()
        .or_else(|| env("AZURE_AUTHORITY_HOST").filter(|h| !h.trim().is_empty()))
        .unwrap_or_else(|| args.cloud.login_base().to_string());
    Ok(crate::api::client::ClientConfig {
        api_base: args.api_url.clone().unwrap_or_else(|| args.cloud.api_base().to_string()),
        login_base: login_base.trim().to_string(),
        scope: args.cloud.scope().to_string(),
        credentials,
        request_timeout,
        connect_timeout: Duration::from_secs(10),
        extra_roots: extra_roots(args, env)?,
        proxy: args.proxy.clone().map(crate::api::auth::Secret::new),
        graph: None,
    })
}

/// The CA certificates of every `--ca-cert` file and of `SSL_CERT_FILE`,
/// read now so that a bad file stops the command before anything is sent.
fn extra_roots(
    args: &ApiArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use crate::api::trust::{Unusable, load_ca_file};
    let mut roots = Vec::new();
    for path in &args.ca_certs {
        roots.extend(load_ca_file("--ca-cert", path, Unusable::Refuse)?);
    }
    // Often the system bundle itself, which may hold a root webpki cannot
    // read: the platform's loader skips those, and so does this.
    if let Some(path) = env("SSL_CERT_FILE").filter(|p| !p.trim().is_empty()) {
        let path = std::path::Path::new(&path);
        roots.extend(load_ca_file("SSL_CERT_FILE", path, Unusable::Skip)?);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> RunArgs {
        let mut full = vec!["mdebulk", "run"];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(r) => *r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_secret_on_the_command_line_is_refused_without_echoing_it() {
        let args = parse(&["in.csv", "--client-secret", "hunter2-very-secret"]);
        let err = run_config(&args, &|_| None).unwrap_err().to_string();
        assert!(err.contains("AZURE_CLIENT_SECRET"));
        assert!(!err.contains("hunter2"));
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("client-secret"));
    }

    #[test]
    fn a_query_target_reads_its_kql_checks_it_and_finds_graph_by_cloud() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.csv");
        let out = out.to_str().unwrap();
        let secret = |k: &str| match k {
            "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" => Some("x".to_string()),
            "AZURE_CLIENT_SECRET" => Some("s".to_string()),
            _ => None,
        };
        let q = "DeviceInfo | distinct DeviceId";
        let base = ["--query", q, "--comment", "IR", "-o", out];
        let (config, endpoint) =
            run_config(&parse(&[&base[..], &["--action", "isolate"]].concat()), &secret).unwrap();
        assert_eq!(
            config.targets,
            Some(crate::run::Targets::Query { kql: q.into(), sha1_column: false })
        );
        let Endpoint::Remote(c) = &endpoint else { unreachable!() };
        let graph = c.graph.as_ref().unwrap();
        assert_eq!(graph.base, "https://graph.microsoft.com");
        assert_eq!(graph.scope, "https://graph.microsoft.com/.default");
        // Stop-and-quarantine takes each row's SHA1 unless --sha1 names one.
        let sq = [&base[..], &["--action", "stop-and-quarantine"]].concat();
        let (config, _) = run_config(&parse(&sq), &secret).unwrap();
        assert!(matches!(
            config.targets,
            Some(crate::run::Targets::Query { sha1_column: true, .. })
        ));
        let one = [&sq[..], &["--sha1", "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"]].concat();
        let (config, _) = run_config(&parse(&one), &secret).unwrap();
        assert!(matches!(
            config.targets,
            Some(crate::run::Targets::Query { sha1_column: false, .. })
        ));
        // Graph by cloud, or as given.
        let gov = [&base[..], &["--action", "isolate", "--cloud", "gcc-high"]].concat();
        let (_, endpoint) = run_config(&parse(&gov), &secret).unwrap();
        let Endpoint::Remote(c) = &endpoint else { unreachable!() };
        assert_eq!(c.graph.as_ref().unwrap().scope, "https://graph.microsoft.us/.default");
        let local =
            [&base[..], &["--action", "isolate", "--graph-url", "http://127.0.0.1:9"]].concat();
        let (_, endpoint) = run_config(&parse(&local), &secret).unwrap();
        let Endpoint::Remote(c) = &endpoint else { unreachable!() };
        assert_eq!(c.graph.as_ref().unwrap().base, "http://127.0.0.1:9");

        // A ready token serves one audience: MDE_GRAPH_TOKEN is needed too.
        let args = parse(&[&base[..], &["--action", "isolate"]].concat());
        let token = |k: &str| (k == "MDE_TOKEN").then(|| "mde-tok".to_string());
        let err = run_config(&args, &token).unwrap_err().to_string();
        assert!(err.contains("MDE_GRAPH_TOKEN") && !err.contains("mde-tok"), "{err}");
        let both = |k: &str| match k {
            "MDE_TOKEN" => Some("mde-tok".to_string()),
            "MDE_GRAPH_TOKEN" => Some("graph-tok".to_string()),
            _ => None,
        };
        let (_, endpoint) = run_config(&args, &both).unwrap();
        let Endpoint::Remote(c) = &endpoint else { unreachable!() };
        assert_eq!(c.graph.as_ref().unwrap().ready_token.as_ref().unwrap().expose(), "graph-tok");
        assert!(!format!("{endpoint:?}").contains("graph-tok"), "never printed");

        // Refusals: no results file, an empty query, a file that is not there or not UTF-8.
        let refused = |extra: &[&str]| {
            let mut full = vec!["--action", "isolate", "--comment", "IR"];
            full.extend_from_slice(extra);
            run_config(&parse(&full), &secret).unwrap_err().to_string()
        };
        assert!(refused(&["--query", q]).contains("need a results file"));
        assert!(refused(&["--query", "  \n", "-o", out]).contains("--query: the query is empty"));
        let missing = dir.path().join("nope.kql");
        let e = refused(&["--query-file", missing.to_str().unwrap(), "-o", out]);
        assert!(e.contains("nope.kql") && e.contains("cannot read it"), "{e}");
        let latin = dir.path().join("latin.kql");
        std::fs::write(&latin, b"DeviceInfo | where DeviceName has 'caf\xe9'").unwrap();
        let e = refused(&["--query-file", latin.to_str().unwrap(), "-o", out]);
        assert!(e.contains("not UTF-8") && e.contains("byte 39"), "{e}");
        // Flags that exclude each other.
        for other in [
            &["in.csv"][..],
            &["--tag", "T"],
            &["--has-file", "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"],
        ] {
            let mut full = vec!["mdebulk", "run", "--query", q];
            full.extend_from_slice(other);
            assert!(Cli::try_parse_from(full).is_err(), "{other:?}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let args = parse(&["in.csv"]);
        let err = run_config(&args, &|_| None).unwrap_err().to_string();
        assert!(err.contains("AZURE_TENANT_ID"), "{err}");
        let env = |k: &str| match k {
            "AZURE_TENANT_ID" => Some("t".to_string()),
            "AZURE_CLIENT_ID" => Some("c".to_string()),
            "AZURE_CLIENT_SECRET" => Some("s3cr3t".to_string()),
            _ => None,
        };
        let (config, endpoint) = run_config(&args, &env).unwrap();
        assert_eq!(config.results, ResultsTarget::File(PathBuf::from("in.results.csv")));
        assert!(!format!("{endpoint:?}").contains("s3cr3t"));
    }

    #[test]
    fn ca_files_and_the_proxy_reach_the_client_config_and_the_password_stays_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let cert = fixture("selfsigned-cert.pem");
        let args = parse(&["in.csv", "--ca-cert", &cert, "--proxy", "http://u:pr0xy-pw@p:3128"]);
        let env = |k: &str| match k {
            "SSL_CERT_FILE" => Some(fixture("selfsigned-cert.pem")),
            other => creds(other),
        };
        let (_, endpoint) = run_config(&args, &env).unwrap();
        let Endpoint::Remote(client) = &endpoint else { panic!("{endpoint:?}") };
        assert_eq!(client.extra_roots.len(), 2, "--ca-cert and SSL_CERT_FILE");
        assert!(client.proxy.is_some());
        assert!(!format!("{endpoint:?}").contains("pr0xy-pw"));

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let args = parse(&["in.csv", "--ca-cert", junk.to_str().unwrap()]);
        let err = format!("{:#}", run_config(&args, &creds).unwrap_err());
        assert!(err.contains(&format!("--ca-cert {}", junk.display())), "{err}");

        for flag in [["--ca-cert", cert.as_str()], ["--proxy", "http://p:1"]] {
            let mut full = vec!["mdebulk", "run", "in.csv", "--simulate"];
            full.extend_from_slice(&flag);
            let e = Cli::try_parse_from(full).err().unwrap();
            assert_eq!(e.exit_code(), 2, "{flag:?}");
        }
    }

    fn creds(k: &str) -> Option<String> {
        match k {
            "AZURE_TENANT_ID" => Some("t".to_string()),
            "AZURE_CLIENT_ID" => Some("c".to_string()),
            "AZURE_CLIENT_SECRET" => Some("s3cr3t".to_string()),
            _ => None,
        }
    }

    #[test]
    fn wait_flags_fill_the_wait_options() {
        let (config, _) = run_config(&parse(&["in.csv"]), &creds).unwrap();
        assert_eq!(config.wait, None);
        let (config, _) = run_config(&parse(&["in.csv", "--wait"]), &creds).unwrap();
        assert_eq!(
            config.wait,
            Some(WaitOptions {
                poll_interval: Duration::from_secs(30),
                timeout: Duration::from_secs(30 * 60)
            })
        );
        let args = parse(&["in.csv", "--wait", "--poll-interval", "2s", "--wait-timeout", "1m"]);
        let (config, _) = run_config(&args, &creds).unwrap();
        assert_eq!(config.wait.unwrap().poll_interval, Duration::from_secs(2));
        assert_eq!(config.wait.unwrap().timeout, Duration::from_secs(60));
        let err = run_config(&parse(&["in.csv", "--wait", "--poll-interval", "0s"]), &creds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--poll-interval"), "{err}");
        let err =
            run_config(&parse(&["in.csv", "--wait", "-o", "-"]), &creds).unwrap_err().to_string();
        assert!(err.contains("--wait needs a results file"), "{err}");
        assert!(
            Cli::try_parse_from(["mdebulk", "run", "in.csv", "--poll-interval", "1s"]).is_err()
        );
    }

    #[test]
    fn duration_flags_are_parsed_by_clap() {
        let Command::Run(args) = Cli::try_parse_from([
            "mdebulk",
            "run",
            "in.csv",
            "--max-runtime",
            "1h30m",
            "--pace-margin",
            "0",
            "--backoff",
            "2.5s",
            "--request-timeout",
            "500ms",
        ])
        .unwrap()
        .command
        else {
            unreachable!()
        };
        assert_eq!(args.max_runtime, Some(Duration::from_secs(5400)));
        let api = args.api.settings().unwrap();
        assert_eq!(api.pace_margin, Some(Duration::ZERO));
        assert_eq!(api.policy.backoff_base, Duration::from_millis(2500));
        assert_eq!(api.request_timeout, Duration::from_millis(500));
        let Command::Run(args) = Cli::try_parse_from(["mdebulk", "run", "in.csv"]).unwrap().command
        else {
            unreachable!()
        };
        assert_eq!((args.max_runtime, args.api.pace_margin), (None, None));
        assert_eq!(args.api.backoff, Duration::from_secs(1));
        assert_eq!(args.api.request_timeout, Duration::from_secs(30));

        for flag in [
            "--max-runtime",
            "--pace-margin",
            "--backoff",
            "--request-timeout",
            "--poll-interval",
            "--wait-timeout",
        ] {
            let err = Cli::try_parse_from(["mdebulk", "run", "in.csv", "--wait", flag, "5x"])
                .unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert_eq!(err.exit_code(), 2, "{flag}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("error: invalid value '5x' for '{flag} <DURATION>': ")),
                "{text}"
            );
            assert!(text.contains("no unit"), "{text}");
        }
    }

    #[test]
    fn status_and_undo_share_the_api_flags() {
        let cli = Cli::try_parse_from([
            "mdebulk",
            "status",
            "r.csv",
            "--wait",
            "--limit",
            "none",
            "--max-attempts",
            "3",
        ])
        .unwrap();
        let Command::Status(args) = cli.command else { unreachable!() };
        let (config, client) = status_config(&args, &creds).unwrap();
        assert!(config.limits.is_empty());
        assert_eq!(config.policy.max_attempts, 3);
        assert!(config.wait.is_some());
        assert!(!format!("{client:?}").contains("s3cr3t"));

        let cli = Cli::try_parse_from(["mdebulk", "status", "r.csv", "--client-secret", "hunter2"])
            .unwrap();
        let Command::Status(args) = cli.command else { unreachable!() };
        let err = status_config(&args, &creds).unwrap_err().to_string();
        assert!(err.contains("AZURE_CLIENT_SECRET") && !err.contains("hunter2"), "{err}");

        let tmp = tempfile::Builder::new().prefix("mdebulk-cli-undo-").tempdir().unwrap();
        let dir = tmp.path();
        let results = dir.join("r.results.csv");
        let cli =
            Cli::try_parse_from(["mdebulk", "undo", results.to_str().unwrap(), "--yes"]).unwrap();
        let Command::Undo(args) = cli.command else { unreachable!() };
        let (config, _) = undo_config(&args, &creds).unwrap();
        assert_eq!(config.output, dir.join("r.results.undo.csv"));
        assert!(config.yes);
        std::fs::write(&config.output, "x").unwrap();
        let err = undo_config(&args, &creds).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let cli = Cli::try_parse_from([
            "mdebulk",
            "undo",
            results.to_str().unwrap(),
            "-o",
            results.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Undo(args) = cli.command else { unreachable!() };
        assert!(undo_config(&args, &creds).unwrap_err().to_string().contains("overwrite"));
    }

    #[test]
    fn pick_latest_is_off_unless_asked_for() {
        let env = |k: &str| match k {
            "MDE_TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let (config, _) = run_config(&parse(&["in.csv"]), &env).unwrap();
        assert!(!config.pick_latest);
        let (config, _) = run_config(&parse(&["in.csv", "--pick", "latest"]), &env).unwrap();
        assert!(config.pick_latest);
        assert!(Cli::try_parse_from(["mdebulk", "run", "in.csv", "--pick", "first"]).is_err());
    }

    fn login(args: &[&str]) -> LoginArgs {
        parse(&[&["in.csv"], args].concat()).api.login
    }

    fn method_of(args: &[&str], vars: &[(&str, &str)]) -> Result<&'static str, String> {
        let env = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        credentials(&login(args), &env).map(|c| c.method()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_environment_chooses_in_the_documented_order() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("federated");
        std::fs::write(&token_file, "t").unwrap();
        let token_file = token_file.to_str().unwrap();
        let app = [("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")];
        let all = [
            app[0],
            app[1],
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file),
            ("MDE_TOKEN_COMMAND", "echo x"),
            ("MDE_TOKEN", "x"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ];
        // Each method wins over every one after it.
        let order = ["secret", "workload-identity", "token-command", "token", "managed-identity"];
        for (skip, want) in order.iter().enumerate() {
            let vars: Vec<(&str, &str)> = all
                .iter()
                .copied()
                .filter(|(k, _)| {
                    let dropped = [
                        "AZURE_CLIENT_SECRET",
                        "AZURE_FEDERATED_TOKEN_FILE",
                        "MDE_TOKEN_COMMAND",
                        "MDE_TOKEN",
                    ];
                    !dropped[..skip.min(dropped.len())].contains(k)
                })
                .collect();
            assert_eq!(method_of(&[], &vars).unwrap(), *want, "{vars:?}");
        }
        // Plain IMDS and the Azure CLI only when asked for.
        let err = method_of(&[], &app).unwrap_err();
        assert!(
            err.contains("AZURE_CLIENT_SECRET") && err.contains("--auth managed-identity"),
            "{err}"
        );
        assert_eq!(method_of(&["--auth", "managed-identity"], &[]).unwrap(), "managed-identity");
        assert_eq!(method_of(&["--auth", "azure-cli"], &[]).unwrap(), "azure-cli");
        assert_eq!(
            method_of(&["--imds-url", "http://127.0.0.1:9"], &[]).unwrap(),
            "managed-identity"
        );
        // An explicit method needs its variables.
        let err = method_of(&["--auth", "certificate"], &app).unwrap_err();
        assert!(
            err.contains("AZURE_CLIENT_CERTIFICATE_PATH") && !err.contains("AZURE_TENANT_ID"),
            "{err}"
        );
        assert_eq!(method_of(&["--auth", "token"], &all).unwrap(), "token");
        // A certificate file that cannot be read is an error, not a skip.
        let err = method_of(
            &[],
            &[app[0], app[1], ("AZURE_CLIENT_CERTIFICATE_PATH", "/nonexistent/c.pem")],
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }

    /// The guard: without an override the IMDS address is the link-local
    /// one, and every override replaces it, so tests (which always set one)
    /// never reach 169.254.169.254.
    #[test]
    fn imds_is_169_254_169_254_unless_overridden() {
        assert_eq!(imds_base(None, &|_| None), "http://169.254.169.254");
        let pod = |k: &str| {
            (k == "AZURE_POD_IDENTITY_AUTHORITY_HOST").then(|| "http://127.0.0.1:7".to_string())
        };
        assert_eq!(imds_base(None, &pod), "http://127.0.0.1:7");
        assert_eq!(imds_base(Some("http://127.0.0.1:8"), &pod), "http://127.0.0.1:8");
        let login = login(&["--auth", "managed-identity", "--imds-url", "http://127.0.0.1:8"]);
        let c = credentials(&login, &|_| None).unwrap();
        let crate::api::auth::Credentials::ManagedIdentity(m) = c else { panic!("{c:?}") };
        let crate::api::auth::IdentityEndpoint::Imds { base } = m.endpoint else { panic!() };
        assert_eq!(base, "http://127.0.0.1:8");
    }

    #[test]
    fn the_authority_host_follows_the_environment_unless_a_login_url_is_given() {
        let env = |k: &str| match k {
            "MDE_TOKEN" => Some("t".to_string()),
            "AZURE_AUTHORITY_HOST" => Some("https://login.microsoftonline.us/".to_string()),
            _ => None,
        };
        let args = parse(&["in.csv"]);
        let c = client_config(&args.api, &env, Duration::from_secs(5)).unwrap();
        assert_eq!(c.login_base, "https://login.microsoftonline.us/");
        let args = parse(&["in.csv", "--login-url", "http://127.0.0.1:1"]);
        let c = client_config(&args.api, &env, Duration::from_secs(5)).unwrap();
        assert_eq!(c.login_base, "http://127.0.0.1:1");
    }

    #[test]
    fn planners_and_approvers_default_to_the_os_user_and_are_short_printable_names() {
        let env = |k: &str| (k == "USERNAME").then(|| "CONTOSO\\alice".to_string());
        assert_eq!(person("--planner", None, &env).unwrap(), "CONTOSO\\alice");
        assert_eq!(person("--planner", Some(" bob "), &env).unwrap(), "bob");
        assert_eq!(person("--approver", None, &|_| None).unwrap(), "unknown");
        for bad in ["", "a]b", "x\u{1b}[31m", &"n".repeat(65)] {
            let e = person("--approver", Some(bad), &env).unwrap_err().to_string();
            assert!(e.starts_with("--approver"), "{e}");
        }
    }

    #[test]
    fn default_results_paths() {
        let p = std::path::Path::new;
        assert_eq!(
            default_results_path(p("a/isolate.csv"), false),
            PathBuf::from("a/isolate.results.csv")
        );
        assert_eq!(
            default_results_path(p("last.results.csv"), false),
            PathBuf::from("last.results.csv")
        );
        assert_eq!(
            default_plan_path(p("a/isolate.xlsx"), true),
            PathBuf::from("a/isolate.plan.xlsx")
        );
        assert_eq!(
            default_results_path(p("a/hosts.ods"), true),
            PathBuf::from("a/hosts.results.xlsx")
        );
        assert_eq!(
            default_results_path(p("a/hosts.results.xlsx"), true),
            PathBuf::from("a/hosts.results.xlsx")
        );
        assert_eq!(
            default_results_path(p("a/isolate.plan.csv"), false),
            PathBuf::from("a/isolate.results.csv"),
            "a plan run for real writes the results beside it"
        );
    }
}
