//! HTTP/1.x wire rules: request and response heads, body framing, the chunked codec, error
//! answers and the rewriting of heads between client and backend. Pure code, no sockets.
pub mod chunked;
pub mod error;
pub mod framing;
pub mod head;
pub mod response;
pub mod rewrite;

/// ASCII case-insensitive comparison of a header name against a lowercase literal.
#[inline]
pub fn name_is(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower.as_bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

/// Trims optional whitespace (SP / HTAB) at both ends.
#[inline]
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Iterates the comma-separated elements of a list-valued header, trimmed, empties skipped.
pub fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty())
}
