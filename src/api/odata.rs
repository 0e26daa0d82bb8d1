//! OData query text, written by the client and read by the simulator: the
//! `$filter` building blocks (string literals, `any_of`), the query options
//! of a list call ([`ListQuery`]), and the one percent-encoding both sides
//! use, so the simulator decodes exactly what the client encodes.
//!
//! Parsing and evaluating a `$filter` is the simulator's job
//! (`crate::sim::odata`); this module only writes and unescapes text.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The bytes escaped in a query value or a path segment: everything but the
/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`). Stricter than a
/// URL needs (a quote becomes `%27`, a space `%20`), because the service's
/// front end and proxies on the way agree on nothing looser.
pub(crate) const COMPONENT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded with [`COMPONENT`] (UTF-8 bytes as `%XX`, upper-case
/// hex).
pub(crate) fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Decodes `%XX` escapes of a path segment, keeping invalid escapes
/// verbatim (`%zz` stays `%zz`) and invalid UTF-8 as U+FFFD: the simulator
/// must answer whatever a client sends, not fail on it.
pub(crate) fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// [`decode`] for a query or `application/x-www-form-urlencoded` value,
/// where a literal `+` means a space (an escaped `%2B` stays a plus).
pub(crate) fn decode_form(s: &str) -> String {
    let spaced: Cow<'_, str> =
        if s.contains('+') { Cow::Owned(s.replace('+', " ")) } else { Cow::Borrowed(s) };
    decode(&spaced)
}

/// An OData string literal: the value in single quotes, quotes doubled
/// (`it's` → `'it''s'`).
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An OData condition true when `field` equals any of `values`:
/// `field eq 'a' or field eq 'b'`.
pub fn any_of<S: AsRef<str>>(field: &str, values: impl IntoIterator<Item = S>) -> String {
    values
        .into_iter()
        .map(|v| format!("{field} eq {}", odata_string(v.as_ref())))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// OData query options of a list call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// `$filter`, e.g. `machineId eq '<id>' and type eq 'Isolate'`.
    pub filter: Option<String>,
    /// `$top`: page size (the API allows up to 10000).
    pub top: Option<u32>,
    /// `$skip`: entities to skip, for paging.
    pub skip: Option<u32>,
}

impl ListQuery {
    /// A query with only a `$filter`.
    pub fn filter(filter: impl Into<String>) -> ListQuery {
        ListQuery { filter: Some(filter.into()), ..ListQuery::default() }
    }

    /// The query string, or `None` when no option is set. The `$` of the
    /// option names stays literal; values are percent-encoded with
    /// [`COMPONENT`] (space as `%20`, quote as `%27`).
    pub(crate) fn to_query_string(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(f) = &self.filter {
            parts.push(format!("$filter={}", encode(f)));
        }
        if let Some(t) = self.top {
            parts.push(format!("$top={t}"));
        }
        if let Some(s) = self.skip {
            parts.push(format!("$skip={s}"));
        }
        if parts.is_empty() { None } else { Some(parts.join("&")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_encoding() {
        assert_eq!(ListQuery::default().to_query_string(), None);
        let q = ListQuery {
            filter: Some("machineId eq '1e5b' and type eq 'Isolate'".to_string()),
            top: Some(2),
            skip: Some(10),
        };
        assert_eq!(
            q.to_query_string().unwrap(),
            "$filter=machineId%20eq%20%271e5b%27%20and%20type%20eq%20%27Isolate%27&$top=2&$skip=10"
        );
        assert_eq!(
            ListQuery::filter("startswith(computerDnsName,'ws-') & x=ü").to_query_string().unwrap(),
            "$filter=startswith%28computerDnsName%2C%27ws-%27%29%20%26%20x%3D%C3%BC"
        );
        assert_eq!(
            ListQuery { top: Some(10000), ..ListQuery::default() }.to_query_string().unwrap(),
            "$top=10000"
        );
    }

    #[test]
    fn literals_and_any_of() {
        assert_eq!(odata_string("it's"), "'it''s'");
        assert_eq!(any_of("id", ["a", "b'c"]), "id eq 'a' or id eq 'b''c'");
        assert_eq!(any_of("id", Vec::<String>::new()), "");
    }

    #[test]
    fn percent_coding_round_trips() {
        let s = "computerDnsName eq 'a b+c''d' and lastSeen gt 2024-05-01T08:00:00+00:00";
        assert_eq!(decode_form(&encode(s)), s);
        assert_eq!(decode_form("a+b%2"), "a b%2");
        assert_eq!(decode("%zz%41"), "%zzA");
        // The unreserved characters pass; everything else is escaped, in
        // upper-case hex.
        assert_eq!(encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(
            encode(" !\"#$%&'()*+,/:;=?@[]^`{|}"),
            "%20%21%22%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D%5E%60%7B%7C%7D"
        );
        assert_eq!(encode("\u{7f}é"), "%7F%C3%A9");
        // A literal plus is a space only in a form value; an escaped one
        // stays a plus.
        assert_eq!(decode("a+b"), "a+b");
        assert_eq!(decode_form("a+b%2B"), "a b+");
        assert_eq!(decode("%%41%4"), "%A%4");
        assert_eq!(decode("%FF"), "\u{fffd}");
    }
}
