//! HTTP/1.x wire rules: request and response heads, body framing, the chunked codec, error
//! answers and the rewriting of heads between client and backend. Pure code, no sockets.
pub mod admit;
pub mod canonical;
pub mod chunked;
pub mod edits;
pub(crate) mod error;
pub mod framing;
pub mod head;
pub mod kind;
pub(crate) mod host;
pub mod reply;
pub mod response;
pub mod rewrite;
pub(crate) mod token;
pub(crate) mod trailers;
pub(crate) mod via;

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
#[inline]
pub fn list_items(v: &[u8]) -> ListItems<'_> {
    ListItems { rest: Some(v) }
}

/// The iterator of [`list_items`]: a hand-written `split(',').map(trim).filter(non-empty)`,
/// which cost a few hundred instructions for a `Connection: keep-alive` on every head.
pub struct ListItems<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for ListItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let v = self.rest?;
            let item = match v.iter().position(|&b| b == b',') {
                Some(i) => {
                    self.rest = Some(&v[i + 1..]);
                    &v[..i]
                }
                None => {
                    self.rest = None;
                    v
                }
            };
            let item = trim_ows(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

/// Appends `n` in decimal: `write!` goes through `core::fmt`, several times the cost of this
/// on a path run for every request.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_items_split_trim_and_skip_empties() {
        let items = |v: &str| -> Vec<String> {
            super::list_items(v.as_bytes())
                .map(|i| String::from_utf8(i.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(items("keep-alive"), ["keep-alive"]);
        assert_eq!(items(" a ,b,\t,, c\t"), ["a", "b", "c"]);
        assert!(items("").is_empty() && items(" , ,").is_empty());
        assert_eq!(items("a,"), ["a"]);
        assert_eq!(items(",a"), ["a"]);
    }

    #[test]
    fn push_u64_writes_decimal() {
        for n in [0u64, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut v = b"x".to_vec();
            super::push_u64(&mut v, n);
            assert_eq!(v, format!("x{n}").into_bytes());
        }
    }
}
