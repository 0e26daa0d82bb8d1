//! The instant a row was requested or finished, as one value: made once
//! (stamped or read), then compared, shifted and written without going
//! through text again.
//!
//! The text is the service's format and has one home, [`crate::api::time`]:
//! [`Timestamp`] writes with `format_utc` and reads with `parse_utc`, so a
//! results file, a journal and a JSONL line hold exactly the text they held
//! when the fields were strings. A row with no such instant holds `None`
//! (an `Option<Timestamp>`), written as the empty string, as before.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::time::{format_utc, parse_utc};

/// What is said of a time's text that does not read: in a results cell
/// (through [`BadTimestamp`]) and in a journal record alike.
const EXPECTED: &str = "expected an ISO-8601 UTC time such as 2024-05-01T08:00:00.0000000Z";

/// An instant in UTC, in whole 100-ns ticks and never before 1970: exactly
/// what its text can say, so writing it and reading it back gives the same
/// value (for the four-digit years the format has), and two timestamps are
/// equal when their text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now, to the tick.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Reads the service's format (what [`parse_utc`] reads); `None` for
    /// anything else, the empty string included.
    pub fn parse(s: &str) -> Option<Timestamp> {
        parse_utc(s).map(Timestamp::from)
    }

    /// The instant, for arithmetic and comparison with clocks.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// The text of an optional timestamp: the empty string for none, which
    /// is how results files and the journal say "no time".
    pub fn text_of(t: Option<Timestamp>) -> String {
        t.map(|t| t.to_string()).unwrap_or_default()
    }
}

impl From<SystemTime> for Timestamp {
    /// Cuts `t` to the tick (the text's precision), and an instant before
    /// 1970 to 1970 itself, as [`format_utc`] writes it.
    fn from(t: SystemTime) -> Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let nanos = d.subsec_nanos() / 100 * 100;
        Timestamp(UNIX_EPOCH + Duration::new(d.as_secs(), nanos))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        t.0
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.fffffffZ`, as [`format_utc`] writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_utc(self.0))
    }
}

/// A timestamp's text that [`parse_utc`] does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{EXPECTED}")]
pub struct BadTimestamp;

impl FromStr for Timestamp {
    type Err = BadTimestamp;

    fn from_str(s: &str) -> Result<Timestamp, BadTimestamp> {
        Timestamp::parse(s).ok_or(BadTimestamp)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_utc(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        deserializer.deserialize_str(TextVisitor)?.ok_or_else(|| serde::de::Error::custom(EXPECTED))
    }
}

/// Reads a timestamp's text: `Some` for a time, `None` for the empty (or
/// blank) string, an error for anything else.
struct TextVisitor;

impl serde::de::Visitor<'_> for TextVisitor {
    type Value = Option<Timestamp>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ISO-8601 UTC time or the empty string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<Timestamp>, E> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        Timestamp::parse(s).map(Some).ok_or_else(|| E::custom(EXPECTED))
    }
}

/// Serde for an `Option<Timestamp>` field (`#[serde(with = ...)]`): the
/// text for a time and the empty string for none, never `null`, so the
/// bytes are those of the string fields this type replaced.
pub mod or_empty {
    use super::{Deserializer, Serializer, TextVisitor, Timestamp};

    /// Writes the time's text, or `""` for none.
    pub fn serialize<S: Serializer>(
        t: &Option<Timestamp>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serde::Serialize::serialize(t, serializer),
            None => serializer.serialize_str(""),
        }
    }

    /// Reads a time's text, or none from `""`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_matches_format_utc() {
        let s = "2023-08-08T01:34:32.1341831Z";
        let t: Timestamp = s.parse().unwrap();
        assert_eq!(t.to_string(), s);
        assert_eq!(t.system_time(), parse_utc(s).unwrap());
        let now = SystemTime::now();
        assert_eq!(Timestamp::from(now).to_string(), format_utc(now));
        assert_eq!(Timestamp::parse(&Timestamp::from(now).to_string()), Some(now.into()));
        assert_eq!("yesterday".parse::<Timestamp>(), Err(BadTimestamp));
        assert_eq!(Timestamp::parse(""), None);
        assert_eq!(Timestamp::text_of(None), "");
    }

    #[test]
    fn serde_writes_the_text_and_the_empty_string_for_none() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Row {
            #[serde(with = "or_empty")]
            at: Option<Timestamp>,
            bare: Timestamp,
        }
        let t = Timestamp::parse("2024-05-01T08:00:00.5Z").unwrap();
        let row = Row { at: None, bare: t };
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(text, r#"{"at":"","bare":"2024-05-01T08:00:00.5000000Z"}"#);
        assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), row);
        let back: Row = serde_json::from_str(
            r#"{"at":"2024-05-01T08:00:00Z","bare":"2024-05-01T08:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(
            back,
            Row { at: Some(Timestamp::parse("2024-05-01T08:00:00Z").unwrap()), bare: t }
        );
        assert!(
            serde_json::from_str::<Row>(r#"{"at":"soon","bare":"2024-05-01T08:00:00Z"}"#).is_err()
        );
        assert!(serde_json::from_str::<Row>(r#"{"at":"","bare":""}"#).is_err());
    }
}
