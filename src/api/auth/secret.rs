//! Secrets that never print, and scrubbing them out of text a server or a
//! program quotes back: the client secret, tokens, certificate passwords.

use std::fmt;

/// A value that must never be printed: a client secret or a bearer token.
///
/// `Debug` and `Display` print `[redacted]`; [`Secret::expose`] hands out the
/// text only where it must go on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text, for the one place it belongs: a request header or form.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (a blank environment variable).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

/// Replaces each non-empty secret in `text` with `[redacted]`, in every
/// encoding it travels in, since a server echoing a request quotes it as
/// sent, not as we hold it:
///
/// - raw, and URL or form encoded: `%7E` or `%7e` for `~`, `+` or `%20` for
///   a space, in any mix of escaped and literal characters;
/// - JSON-escaped: `\"`, `\\`, `\/`, `\u0022` and the other escapes;
/// - base64, standard and URL-safe, at any offset (as inside
///   `Basic base64(client_id:secret)`): the whole base64 run around it goes.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let bytes = text.as_bytes();
    let mut redact: Vec<(usize, usize)> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        find_all(bytes, secret.as_bytes(), false, &mut redact);
        for core in base64_cores(secret.as_bytes()) {
            find_all(bytes, &core, true, &mut redact);
        }
    }
    if redact.is_empty() {
        return text.to_string();
    }
    redact.sort_unstable();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (start, end) in redact {
        if end <= at {
            continue;
        }
        if start >= at {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(b"[redacted]");
        }
        at = end;
    }
    out.extend_from_slice(&bytes[at..]);
    // Matches begin and end on character boundaries (a secret is whole
    // characters, escapes are ASCII), so this is UTF-8; lossy just in case.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Adds to `found` every span of `text` that spells `needle` in any of the
/// encodings [`scrub`] knows; `base64` also widens each span to the whole
/// run of base64 characters around it.
fn find_all(text: &[u8], needle: &[u8], base64: bool, found: &mut Vec<(usize, usize)>) {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    let mut i = 0;
    while i < text.len() {
        match spelled_at(text, i, needle) {
            Some(end) => {
                let (mut start, mut end) = (i, end);
                if base64 {
                    while start > 0 && is_b64(text[start - 1]) {
                        start -= 1;
                    }
                    while end < text.len() && (is_b64(text[end]) || text[end] == b'=') {
                        end += 1;
                    }
                }
                found.push((start, end));
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
}

/// Where `needle`, spelt from `text[at..]` one byte at a time literally or
/// escaped (URL, form or JSON), ends.
fn spelled_at(text: &[u8], at: usize, needle: &[u8]) -> Option<usize> {
    let Some((&want, rest)) = needle.split_first() else {
        return Some(at);
    };
    let hex = |from: usize, len: usize| -> Option<u32> {
        let digits = text.get(from..from + len)?;
        let digits = std::str::from_utf8(digits).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    };
    let first = *text.get(at)?;
    // Every way this byte may be spelt here, as the length it takes.
    let mut ways: [Option<usize>; 3] = [None; 3];
    if first == want {
        ways[0] = Some(1);
    }
    match first {
        b'+' if want == b' ' => ways[1] = Some(1),
        b'%' if hex(at + 1, 2) == Some(u32::from(want)) => ways[1] = Some(3),
        b'\\' => {
            let escaped = match text.get(at + 1) {
                Some(b'u') if want.is_ascii() && hex(at + 2, 4) == Some(u32::from(want)) => Some(6),
                Some(b'n') if want == b'\n' => Some(2),
                Some(b't') if want == b'\t' => Some(2),
                Some(b'r') if want == b'\r' => Some(2),
                Some(b'b') if want == 0x08 => Some(2),
                Some(b'f') if want == 0x0c => Some(2),
                Some(&c) if c == want && matches!(c, b'"' | b'\\' | b'/') => Some(2),
                _ => None,
            };
            ways[2] = escaped;
        }
        _ => {}
    }
    ways.into_iter().flatten().find_map(|len| spelled_at(text, at + len, rest))
}

/// The parts of the base64 encodings (standard and URL-safe) of `secret`
/// that do not depend on what surrounds it: for each of the three offsets
/// it can start at inside a longer encoded text, the characters made of
/// the secret's bits alone. Shorter than four characters, a part would
/// match ordinary words, so none is made for tiny secrets.
fn base64_cores(secret: &[u8]) -> Vec<Vec<u8>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut cores = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        // Character i holds bits 6i..6i+6; keep those inside the secret's
        // bits 8 * offset .. 8 * (offset + len).
        let first = (8 * offset).div_ceil(6);
        let last = 8 * (offset + secret.len()) / 6;
        if last < first + 4 {
            continue;
        }
        let core: Vec<u8> = (first..last)
            .map(|i| {
                let bit = 6 * i;
                let (byte, shift) = (bit / 8, bit % 8);
                let hi = u16::from(padded[byte]) << 8;
                let lo = u16::from(padded.get(byte + 1).copied().unwrap_or(0));
                STD[usize::from(((hi | lo) >> (10 - shift)) & 0x3f)]
            })
            .collect();
        let url_safe: Vec<u8> = core
            .iter()
            .map(|&c| match c {
                b'+' => b'-',
                b'/' => b'_',
                c => c,
            })
            .collect();
        if url_safe != core {
            cores.push(url_safe);
        }
        cores.push(core);
    }
    cores
}

/// A reqwest error and its sources, joined with `: ` (reqwest's own
/// `Display` stops at the outermost layer, which rarely says what failed).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
