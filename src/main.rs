//! `mdebulk`: parse the command line, set up logging, run, exit.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    // clap's own help and errors follow --color, NO_COLOR and TERM=dumb too.
    let color = mdebulk::cli::color_in_args(std::env::args_os());
    let command = mdebulk::cli::Cli::command().color(mdebulk::cli::clap_color(color, &env));
    let cli = match mdebulk::cli::Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
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
