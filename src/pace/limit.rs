//! Quota specifications: `N/DURATION` (at most N calls in any span of that
//! length), their parsing from the command line, and the duration syntax
//! shared by every flag that takes one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::api::route::Api;

/// One quota: at most `calls` calls in any span of length `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// How many calls the window admits.
    pub calls: u32,
    /// Length of the window.
    pub window: Duration,
}

impl Limit {
    /// Builds a limit; `calls` must be at least 1 and `window` non-zero.
    pub fn new(calls: u32, window: Duration) -> Result<Limit, LimitError> {
        if calls == 0 {
            return Err(LimitError::new(
                format!("{calls}/{}", format_duration(window)),
                "the call count must be at least 1",
            ));
        }
        if window.is_zero() {
            return Err(LimitError::new(
                format!("{calls}/0s"),
                "the window must be longer than zero",
            ));
        }
        Ok(Limit { calls, window })
    }

    /// The API's documented per-minute quota: 100 calls per 60 s.
    pub const PER_MINUTE: Limit = Limit { calls: 100, window: Duration::from_secs(60) };
    /// The API's documented per-hour quota: 1500 calls per 3600 s.
    pub const PER_HOUR: Limit = Limit { calls: 1500, window: Duration::from_secs(3600) };

    /// Advanced Hunting's quota: 45 calls per 60 s per tenant.
    pub const HUNTING_PER_MINUTE: Limit = Limit { calls: 45, window: Duration::from_secs(60) };

    /// The API's documented quotas, in force on every action and read endpoint.
    pub fn api_defaults() -> Vec<Limit> {
        vec![Limit::PER_MINUTE, Limit::PER_HOUR]
    }

    /// The quotas one API's page documents: 2/min and 120/h for
    /// `GetPackageUri`, 50/h alone for `startInvestigation` (its page gives
    /// no per-minute figure), 45/min for Graph's `runHuntingQuery` (the
    /// Advanced Hunting pages' "at least 45 calls per minute per tenant";
    /// the Graph page states none), [`Limit::api_defaults`] for every other API.
    pub fn documented(api: Api) -> Vec<Limit> {
        match api {
            Api::GetPackageUri => vec![
                Limit { calls: 2, window: Duration::from_secs(60) },
                Limit { calls: 120, window: Duration::from_secs(3600) },
            ],
            Api::StartInvestigation => vec![Limit { calls: 50, window: Duration::from_secs(3600) }],
            Api::HuntingQuery => vec![Limit::HUNTING_PER_MINUTE],
            _ => Limit::api_defaults(),
        }
    }

    /// The quotas `api` is held to when `configured` are the limits in force:
    /// the documented defaults stand for each API's own documented quotas
    /// ([`Limit::documented`]); any other list (chosen on the command line,
    /// or none) applies to every API alike, so a test that sets `5/1s`
    /// means it for every endpoint.
    pub fn for_api(configured: &[Limit], api: Api) -> Vec<Limit> {
        if configured == Limit::api_defaults().as_slice() {
            Limit::documented(api)
        } else {
            configured.to_vec()
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.calls, format_duration(self.window))
    }
}

/// A `--limit` value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid limit {value:?}: {why} (expected N/DURATION such as 100/60s or 1500/1h, or none)")]
pub struct LimitError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl LimitError {
    fn new(value: impl Into<String>, why: impl Into<String>) -> Self {
        LimitError { value: value.into(), why: why.into() }
    }
}

impl FromStr for Limit {
    type Err = LimitError;

    /// Reads `N/DURATION` (`100/60s`, `1500/1h`, `20/1s`); a bare unit counts
    /// as one of it (`100/min`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, w) = s.trim().split_once('/').ok_or_else(|| LimitError::new(s, "no '/'"))?;
        let calls: u32 = n.trim().parse().map_err(|_| {
            LimitError::new(s, format!("{:?} is not a whole number of calls", n.trim()))
        })?;
        let w = w.trim();
        let window = match w {
            "s" | "sec" | "second" => Ok(Duration::from_secs(1)),
            "m" | "min" | "minute" => Ok(Duration::from_secs(60)),
            "h" | "hour" => Ok(Duration::from_secs(3600)),
            _ => parse_duration(w),
        }
        .map_err(|e| LimitError::new(s, e))?;
        Limit::new(calls, window).map_err(|e| LimitError::new(s, e.why))
    }
}

/// Parses repeated `--limit` values: `none` alone means no pacing at all (an
/// empty list); otherwise every value must be `N/DURATION`.
pub fn parse_limits(values: &[String]) -> Result<Vec<Limit>, LimitError> {
    if values.iter().any(|v| v.trim().eq_ignore_ascii_case("none")) {
        if values.len() > 1 {
            return Err(LimitError::new(
                values.join(" "),
                "'none' cannot be combined with other limits",
            ));
        }
        return Ok(Vec::new());
    }
    values.iter().map(|v| v.parse()).collect()
}

/// Parses a duration: a number (decimals allowed) followed by `ms`, `s`, `m`
/// or `h`; several parts may follow each other (`1h30m`). A bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len = rest[num_len..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{t:?} is not a duration such as 500ms, 60s, 30m or 1h"))?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" | "sec" | "secs" => value,
            "m" | "min" | "mins" => value * 60.0,
            "h" | "hr" | "hour" | "hours" => value * 3600.0,
            "d" | "day" | "days" => value * 86_400.0,
            _ => {
                return Err(format!("{t:?} has no unit or an unknown one (use ms, s, m or h)"));
            }
        };
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("{t:?} is out of range"));
        }
        total += Duration::from_secs_f64(secs);
        rest = &rest[num_len + unit_len..];
    }
    Ok(total)
}

/// Formats a duration in the shortest exact unit: `60s`, `1h`, `250ms`, `1.5s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats a window as a .NET TimeSpan `hh:mm:ss`, as the service does in
/// its 429 message (`00:01:00`, `01:00:00`).
pub fn format_timespan(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!("100/60s".parse::<Limit>().unwrap(), Limit::PER_MINUTE);
        assert_eq!("1500/1h".parse::<Limit>().unwrap(), Limit::PER_HOUR);
        assert_eq!("1500/3600s".parse::<Limit>().unwrap(), Limit::PER_HOUR);
        assert_eq!("100/min".parse::<Limit>().unwrap(), Limit::PER_MINUTE);
        assert_eq!("20/500ms".parse::<Limit>().unwrap().window, Duration::from_millis(500));
        for bad in ["100", "x/60s", "0/60s", "100/0s", "100/60", "100/60q", "-1/60s"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
        assert_eq!(parse_limits(&["none".into()]).unwrap(), vec![]);
        assert!(parse_limits(&["none".into(), "1/1s".into()]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_timespan(Duration::from_secs(60)), "00:01:00");
        assert_eq!(format_timespan(Duration::from_secs(3600)), "01:00:00");
        assert_eq!(Limit::PER_HOUR.to_string(), "1500/1h");
    }
}
