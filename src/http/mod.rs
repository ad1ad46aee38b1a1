//! HTTP/1.x wire rules: request and response heads, body framing, the chunked codec, error
//! answers and the rewriting of heads between client and backend. Pure code, no sockets.
pub mod admit;
pub mod canonical;
pub mod chunked;
pub mod edits;
pub(crate) mod error;
pub mod framing;
pub mod head;
pub(crate) mod host;
pub mod kind;
pub mod reply;
pub mod response;
pub mod rewrite;
pub(crate) mod token;
pub(crate) mod trailers;
pub(crate) mod via;

/// ASCII case-insensitive comparison of a header name against a lowercase literal.
#[inline]
pub fn name_is(name: &[u8], lower: &str) -> bool {
    let lower = lower.as_bytes();
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    // Eight (or four) bytes at a time, the last word overlapping the one before: a byte at
    // a time cost ~5 instructions a byte, for names compared on every head.
    if n >= 8 {
        let w = |b: &[u8], at: usize| b[at..].first_chunk::<8>().map(|c| u64::from_le_bytes(*c));
        let lowered = |b: &[u8], at: usize| w(b, at).map(lowercase8);
        let mut at = 0;
        while at + 8 < n {
            if lowered(name, at) != w(lower, at) {
                return false;
            }
            at += 8;
        }
        lowered(name, n - 8) == w(lower, n - 8)
    } else if n >= 4 {
        let w = |b: &[u8], at: usize| b[at..].first_chunk::<4>().map(|c| u32::from_le_bytes(*c));
        let lowered = |b: &[u8], at: usize| w(b, at).map(lowercase4);
        lowered(name, 0) == w(lower, 0) && lowered(name, n - 4) == w(lower, n - 4)
    } else {
        name.iter()
            .zip(lower)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    }
}

/// `to_ascii_lowercase` of the eight bytes of `x` at once: `A`..=`Z` get 0x20 added, every
/// other byte (non-ASCII ones included) stays. No byte carries into the next: each sum is
/// below 0x100.
#[inline]
fn lowercase8(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let b = x & LOW7;
    // High bit of each byte: at least b'A' (0x41), and above b'Z' (0x5a).
    let from_a = b + 0x3f3f_3f3f_3f3f_3f3f;
    let past_z = b + 0x2525_2525_2525_2525;
    let upper = from_a & !past_z & !x & HIGH;
    x | (upper >> 2)
}

/// [`lowercase8`] for four bytes.
#[inline]
fn lowercase4(x: u32) -> u32 {
    let b = x & 0x7f7f_7f7f;
    let upper = (b + 0x3f3f_3f3f) & !(b + 0x2525_2525) & !x & 0x8080_8080;
    x | (upper >> 2)
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
/// on a path run for every request. Into a head (`Vec`) or HTTP/2 field values (`BytesMut`).
#[inline]
pub fn push_u64<B: bytes::BufMut>(out: &mut B, mut n: u64) {
    // One and two digits (small lengths, Server-Timing's whole milliseconds) without the
    // loop and the copy of its buffer.
    if n < 10 {
        out.put_u8(b'0' + n as u8);
        return;
    }
    if n < 100 {
        out.put_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        return;
    }
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
    out.put_slice(&tmp[i..]);
}

/// Server-Timing's value (SPEC §4), `upstream;dur=` and the milliseconds to three places, from
/// whole microseconds: `{:.3}` float formatting cost more than the rest of the head.
#[inline]
pub fn push_server_timing<B: bytes::BufMut>(out: &mut B, upstream_ms: f64) {
    let us = (upstream_ms * 1000.0).round().max(0.0) as u64;
    out.put_slice(b"upstream;dur=");
    push_u64(out, us / 1000);
    let frac = us % 1000;
    out.put_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// A tiny deterministic generator (xorshift) for the property tests of the wire rules, without
/// a dependency.
#[cfg(test)]
pub(crate) mod test_rng {
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
            from[self.below(from.len())]
        }
        /// Mostly the first choices, now and then the odd ones after them.
        pub(crate) fn bytes(&mut self, alphabet: &[u8], odd: &[u8], len: usize) -> Vec<u8> {
            (0..len)
                .map(|_| {
                    if self.below(40) == 0 {
                        odd[self.below(odd.len())]
                    } else {
                        alphabet[self.below(alphabet.len())]
                    }
                })
                .collect()
        }
    }
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
    fn name_is_agrees_with_a_byte_at_a_time_for_every_byte_everywhere() {
        let slow = |name: &[u8], lower: &str| {
            name.len() == lower.len()
                && name
                    .iter()
                    .zip(lower.as_bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
        };
        let names = [
            "te",
            "via",
            "host",
            "vary",
            "accept",
            "upgrade",
            "x-shard",
            "trailer",
            "x-api-key",
            "connection",
            "keep-alive",
            "x-request-id",
            "content-length",
            "x-forwarded-for",
            "idempotency-key",
            "proxy-connection",
            "transfer-encoding",
            "proxy-authenticate",
        ];
        for lower in names {
            let upper = lower.to_ascii_uppercase();
            assert!(super::name_is(lower.as_bytes(), lower));
            assert!(super::name_is(upper.as_bytes(), lower), "{upper}");
            for at in 0..lower.len() {
                for b in 0..=255u8 {
                    let mut v = upper.clone().into_bytes();
                    v[at] = b;
                    assert_eq!(
                        super::name_is(&v, lower),
                        slow(&v, lower),
                        "{lower} {at} {b}"
                    );
                }
            }
            assert!(!super::name_is(&upper.as_bytes()[1..], lower));
        }
    }

    #[test]
    fn push_u64_writes_decimal() {
        for n in [0u64, 7, 9, 10, 64, 99, 100, 101, 12345, u64::MAX] {
            let mut v = b"x".to_vec();
            super::push_u64(&mut v, n);
            assert_eq!(v, format!("x{n}").into_bytes());
        }
    }
}
