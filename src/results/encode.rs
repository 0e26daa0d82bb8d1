//! A result row as JSON, written by hand: the journal writes one for every
//! row, and `serde_json` checks every byte of every string for escapes one
//! at a time, which made encoding most of the runner's cost of durability.
//! The bytes are exactly what `serde_json` writes for [`ResultRow`] (a test
//! in the journal holds the two equal, and recovery reads them with serde).

use super::row::ResultRow;
use super::time::Timestamp;

/// Appends the row's fields, `"line":…` to `"tag_result":"…"`, in the
/// order `serde_json` writes them, without the enclosing braces.
pub fn row_fields(out: &mut Vec<u8>, row: &ResultRow) {
    out.extend_from_slice(b"\"line\":");
    push_u64(out, row.line);
    push_str_fields(out, &[("machine_id", &row.machine_id), ("action", &row.action)]);
    out.extend_from_slice(b",\"status\":");
    match row.status {
        Some(status) => push_str(out, status.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    push_str_fields(out, &[("action_id", &row.action_id), ("action_status", &row.action_status)]);
    out.extend_from_slice(b",\"http_status\":");
    match row.http_status {
        Some(code) => push_u64(out, u64::from(code)),
        None => out.extend_from_slice(b"null"),
    }
    push_str_fields(out, &[("error_code", &row.error_code), ("error_message", &row.error_message)]);
    out.extend_from_slice(b",\"attempts\":");
    push_u64(out, u64::from(row.attempts));
    // A time's text never needs escaping; none is the empty string, as
    // `time::or_empty` writes it for serde.
    let (requested, finished) =
        (Timestamp::text_of(row.requested_at), Timestamp::text_of(row.finished_at));
    push_str_fields(out, &[("requested_at", &requested), ("finished_at", &finished)]);
    push_str_fields(out, &[("tag_result", &row.tag_result)]);
}

/// Appends `,"key":"value"` for each field (keys are plain identifiers).
pub fn push_str_fields(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    for (key, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, value);
    }
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `s` as a JSON string: as is between quotes when nothing in it
/// needs escaping (ids, names, times: nearly always), else as `serde_json`
/// escapes it.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Invariant: writing a string into a Vec cannot fail.
        serde_json::to_writer(&mut *out, s).expect("a string serialises");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}
