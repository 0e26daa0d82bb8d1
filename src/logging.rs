//! Logging set-up: tracing to stderr as text or JSON lines, routed around
//! the progress bar so log lines never tear it; and the colour rule
//! (`--color`, `NO_COLOR`, `TERM=dumb`) that logs, progress and help share.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for cron jobs and log pipelines.
    Json,
}

/// When to write escape codes (colours, and the live progress display that
/// redraws itself with cursor movements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (to anything but empty) or
    /// `TERM` is `dumb`.
    #[default]
    Auto,
    /// Always, even into a pipe or a file.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether escape codes are written to a stream, given whether that
    /// stream is a terminal and the environment (the no-color.org rules:
    /// an explicit choice wins over `NO_COLOR`, which wins over the terminal).
    pub fn enabled(self, is_terminal: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_terminal
                    && env("NO_COLOR").is_none_or(|v| v.is_empty())
                    && env("TERM").is_none_or(|t| t != "dumb")
            }
        }
    }
}

/// Whether stderr gets escape codes, settled once by [`init`]; the
/// progress display asks it before drawing a live bar.
static ANSI: AtomicBool = AtomicBool::new(false);

/// Whether escape codes may be written to stderr (set by [`init`]).
pub fn ansi() -> bool {
    ANSI.load(Ordering::Relaxed)
}

/// The one set of progress bars of the process: logging suspends it while a
/// line is written.
pub fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Writes log lines to stderr with the progress bars cleared meanwhile.
#[derive(Clone, Copy)]
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bars().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for BarAwareStderr {
    type Writer = BarAwareStderr;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the global subscriber. `verbosity`: −1 quiet (warnings and
/// errors), 0 info, 1 debug, 2+ trace. `RUST_LOG` overrides. `color`
/// decides, with the environment, whether stderr gets escape codes.
pub fn init(format: LogFormat, verbosity: i8, color: ColorChoice) {
    let env = |k: &str| std::env::var(k).ok();
    let ansi = color.enabled(std::io::IsTerminal::is_terminal(&std::io::stderr()), &env);
    ANSI.store(ansi, Ordering::Relaxed);
    let level = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("mdebulk={level},warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(BarAwareStderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).with_target(false).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).with_current_span(false).try_init(),
    };
    // Already installed (tests call this more than once): keep the first.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn colour_follows_the_choice_then_no_color_then_the_terminal() {
        let none = env_of(&[]);
        assert!(ColorChoice::Auto.enabled(true, &none));
        assert!(!ColorChoice::Auto.enabled(false, &none));
        assert!(ColorChoice::Always.enabled(false, &env_of(&[("NO_COLOR", "1")])));
        assert!(!ColorChoice::Never.enabled(true, &none));
        assert!(!ColorChoice::Auto.enabled(true, &env_of(&[("NO_COLOR", "1")])));
        assert!(ColorChoice::Auto.enabled(true, &env_of(&[("NO_COLOR", "")])));
        assert!(!ColorChoice::Auto.enabled(true, &env_of(&[("TERM", "dumb")])));
        assert!(ColorChoice::Auto.enabled(true, &env_of(&[("TERM", "xterm-256color")])));
    }
}
