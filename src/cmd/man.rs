//! `mdebulk man [SUBCOMMAND]`: the roff man page, generated from the clap
//! definitions (with their option groups and examples), printed to standard
//! output for `man -l -` or a `man1` directory.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

/// Writes the man page of mdebulk, or of one subcommand, to standard output.
pub(crate) fn man(args: &ManArgs) -> anyhow::Result<u8> {
    let mut root = Cli::command();
    root.build();
    let page = match &args.subcommand {
        None => root,
        Some(name) => {
            let names: Vec<String> =
                root.get_subcommands().map(|c| c.get_name().to_string()).collect();
            // Built, a subcommand is titled like git's: `mdebulk-run`.
            root.find_subcommand(name)
                .cloned()
                .with_context(|| format!("no subcommand {:?}: one of {}", name, names.join(", ")))?
        }
    };
    let mut buffer = Vec::new();
    clap_mangen::Man::new(page).render(&mut buffer).context("cannot render the man page")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&buffer).and_then(|()| out.flush()).context("cannot write the man page")?;
    Ok(0)
}
