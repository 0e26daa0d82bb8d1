//! `mdebulk`: parse the command line, set up logging, run, exit.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    // clap's own help and errors follow --color, NO_COLOR and TERM=dumb too.
    let color = mdebulk::cli::color_in_args(std::env::args_os());
    let command = mdebulk::cli::Cli::command().color(mdebulk::cli::clap_color(color, &env));
    let parsed =
        command.try_get_matches().and_then(|matches| mdebulk::cli::Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        // Help and version are not errors; a usage error under JSON logs is
        // a JSON line like every other fatal error.
        Err(e) if e.use_stderr() && mdebulk::cli::json_logs_in_args(std::env::args_os()) => {
            let message = e.render().to_string();
            let line = serde_json::json!({
                "error": { "kind": "usage", "message": message.trim_end() },
                "exit_code": mdebulk::cmd::EXIT_USAGE,
            });
            eprintln!("{line}");
            return ExitCode::from(mdebulk::cmd::EXIT_USAGE);
        }
        Err(e) => e.exit(),
    };
    mdebulk::logging::init(cli.log_format, cli.verbosity(), cli.color);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(mdebulk::cmd::EXIT_USAGE);
        }
    };
    runtime.block_on(mdebulk::cmd::main(cli))
}
