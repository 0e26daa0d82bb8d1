//! `mdebulk completions SHELL`: the shell completion script, generated from
//! the same clap definitions that parse the command line, so it never lags
//! behind a flag.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// Writes the completion script for the chosen shell to standard output.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<u8> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "mdebulk", &mut out);
    Ok(0)
}
