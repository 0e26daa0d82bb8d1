//! `mdebulk`: parse the command line, set up logging, run, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mdebulk::cli::Cli::parse();
    mdebulk::logging::init(cli.log_format, cli.verbosity());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(mdebulk::cmd::EXIT_USAGE);
        }
    };
    runtime.block_on(mdebulk::cmd::main(cli))
}
