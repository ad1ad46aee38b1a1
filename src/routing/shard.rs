//! Sharding by key (SPEC §3): reading the key from a request, the four hash functions, and the
//! fixed failover order of pods that every replica computes identically. Pure code.
use md5::{Digest, Md5};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `u32_be(md5(key)[0..4]) % pods`, the existing TypeScript helper's choice.
    Md5,
    /// `(guild_id >> 22) % pods`: Discord's own sharding formula.
    Discord,
    /// Lamport & Veach's jump consistent hash of `u64_be(md5(key)[0..8])`.
    Jump,
    /// Highest random weight over `splitmix64(u64_be(md5(key)[0..8]) ^ splitmix64(ordinal))`.
    Rendezvous,
}

impl HashKind {
    pub fn parse(s: &str) -> Option<HashKind> {
        Some(match s {
            "md5" => HashKind::Md5,
            "discord" => HashKind::Discord,
            "jump" => HashKind::Jump,
            "rendezvous" => HashKind::Rendezvous,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashKind::Md5 => "md5",
            HashKind::Discord => "discord",
            HashKind::Jump => "jump",
            HashKind::Rendezvous => "rendezvous",
        }
    }
}

/// Where the key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A header, by lowercase name.
    Header(String),
    Query(String),
    /// A 0-based path segment.
    Path(usize),
}

impl KeySource {
    pub fn parse(s: &str) -> Result<KeySource, String> {
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected header:NAME, query:NAME or path:INDEX"))?;
        let arg = arg.trim();
        match kind.trim() {
            "header" if valid_token(arg) => Ok(KeySource::Header(arg.to_ascii_lowercase())),
            "query" if !arg.is_empty() && !arg.contains(['&', '=', ' ']) => {
                Ok(KeySource::Query(arg.to_string()))
            }
            "path" => arg
                .parse()
                .map(KeySource::Path)
                .map_err(|_| format!("{s:?}: path index must be a number")),
            _ => Err(format!(
                "{s:?}: expected header:NAME, query:NAME or path:INDEX"
            )),
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Header(h) => write!(f, "header:{h}"),
            KeySource::Query(q) => write!(f, "query:{q}"),
            KeySource::Path(i) => write!(f, "path:{i}"),
        }
    }
}

fn valid_token(s: &str) -> bool {
    crate::http::token::is_token(s.as_bytes())
}

/// Longest key accepted; a longer one is malformed.
pub const MAX_KEY: usize = 256;

/// Reads the key; None when it is missing or empty.
pub fn read_key<'r>(
    src: &KeySource,
    path: &'r [u8],
    query: Option<&'r [u8]>,
    header: &dyn Fn(&str) -> Option<&'r [u8]>,
) -> Option<std::borrow::Cow<'r, [u8]>> {
    let raw: &[u8] = match src {
        KeySource::Header(name) => crate::http::trim_ows(header(name)?),
        KeySource::Path(i) => path
            .strip_prefix(b"/")
            .unwrap_or(path)
            .split(|b| *b == b'/')
            .nth(*i)?,
        KeySource::Query(name) => query?.split(|b| *b == b'&').find_map(|kv| {
            let (k, v) = match kv.iter().position(|b| *b == b'=') {
                Some(i) => (&kv[..i], &kv[i + 1..]),
                None => (kv, &b""[..]),
            };
            (k == name.as_bytes()).then_some(v)
        })?,
    };
    if raw.is_empty() || raw.len() > MAX_KEY {
        return None;
    }
    if raw.contains(&b'%') || raw.contains(&b'+') && matches!(src, KeySource::Query(_)) {
        return percent_decode(raw, matches!(src, KeySource::Query(_)))
            .map(std::borrow::Cow::Owned);
    }
    Some(std::borrow::Cow::Borrowed(raw))
}

fn percent_decode(s: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let h = s.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn md5(key: &[u8]) -> [u8; 16] {
    Md5::digest(key).into()
}

fn u64_be(d: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lamport & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b.wrapping_add(1) as f64)
            * ((1u64 << 31) as f64 / ((key >> 33).wrapping_add(1) as f64))) as i64;
    }
    b.max(0) as u32
}

pub fn rendezvous_weight(key_hash: u64, ordinal: u32) -> u64 {
    splitmix64(key_hash ^ splitmix64(u64::from(ordinal)))
}

/// The hash of a key as the selection needs it: the first pod and, for rendezvous, the
/// key's 64-bit hash to weigh every pod with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub first: u32,
    pub key_hash: u64,
}

/// Hashes a key onto `pods` pods. Err for a key the hash cannot take (discord: not a u64).
pub fn pick(kind: HashKind, key: &[u8], pods: u32) -> Result<Pick, &'static str> {
    let pods = pods.max(1);
    match kind {
        HashKind::Md5 => {
            let d = md5(key);
            let first = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % pods;
            Ok(Pick { first, key_hash: 0 })
        }
        HashKind::Discord => {
            let s = std::str::from_utf8(key).map_err(|_| "key is not a decimal snowflake")?;
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err("key is not a decimal snowflake");
            }
            let id: u64 = s.parse().map_err(|_| "key is not a 64-bit snowflake")?;
            Ok(Pick {
                first: ((id >> 22) % u64::from(pods)) as u32,
                key_hash: 0,
            })
        }
        HashKind::Jump => Ok(Pick {
            first: jump(u64_be(&md5(key)), pods),
            key_hash: 0,
        }),
        HashKind::Rendezvous => {
            let h = u64_be(&md5(key));
            let first = (0..pods)
                .max_by_key(|o| (rendezvous_weight(h, *o), std::cmp::Reverse(*o)))
                .unwrap_or(0);
            Ok(Pick { first, key_hash: h })
        }
    }
}

/// The fixed failover order after `prev`: the next ordinal for md5/discord/jump, the
/// next-highest weight for rendezvous. None when every pod has been offered.
pub fn next_in_order(kind: HashKind, pick: &Pick, prev: u32, step: u32, pods: u32) -> Option<u32> {
    if step + 1 >= pods {
        return None;
    }
    match kind {
        HashKind::Rendezvous => {
            let w = |o: u32| (rendezvous_weight(pick.key_hash, o), std::cmp::Reverse(o));
            let bound = w(prev);
            (0..pods).filter(|o| w(*o) < bound).max_by_key(|o| w(*o))
        }
        _ => Some((prev + 1) % pods),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_typescript_helper() {
        // From scripts/shard-vectors.js (node's crypto), see tests/shard_vectors.json.
        assert_eq!(md5(b"guild"), md5(b"guild"));
        let d = md5(b"");
        assert_eq!(d[..4], [0xd4, 0x1d, 0x8c, 0xd9]);
        assert_eq!(pick(HashKind::Md5, b"", 3).unwrap().first, 0xd41d_8cd9 % 3);
    }

    #[test]
    fn discord_formula_and_bad_keys() {
        let id: u64 = 175_928_847_299_117_063;
        assert_eq!(
            pick(HashKind::Discord, id.to_string().as_bytes(), 10)
                .unwrap()
                .first,
            ((id >> 22) % 10) as u32
        );
        assert!(pick(HashKind::Discord, b"abc", 3).is_err());
        assert!(pick(HashKind::Discord, b"-1", 3).is_err());
        assert!(pick(HashKind::Discord, b"99999999999999999999999", 3).is_err());
    }

    #[test]
    fn jump_matches_reference_values() {
        // From a direct Python transcription of the paper's C++ (an independent implementation).
        let cases = [
            (0, 1, 0),
            (1, 1, 0),
            (0xDEAD_10CC, 2, 1),
            (0xDEAD_10CC, 5, 1),
            (0xDEAD_10CC, 100, 94),
            (1, 1000, 549),
            (u64::MAX, 1000, 313),
            (123_456_789, 7, 0),
        ];
        for (key, n, want) in cases {
            assert_eq!(jump(key, n), want, "jump({key}, {n})");
        }
    }

    #[test]
    fn orders_visit_every_pod_once() {
        for kind in [HashKind::Md5, HashKind::Jump, HashKind::Rendezvous] {
            for key in [&b"1"[..], b"abc", b"123456789012345678"] {
                let p = pick(kind, key, 7).unwrap();
                let mut seen = vec![p.first];
                let mut prev = p.first;
                let mut step = 0;
                while let Some(n) = next_in_order(kind, &p, prev, step, 7) {
                    seen.push(n);
                    prev = n;
                    step += 1;
                }
                seen.sort();
                assert_eq!(seen, (0..7).collect::<Vec<_>>(), "{kind:?}");
            }
        }
    }

    #[test]
    fn keys_are_read_from_header_query_and_path() {
        let h = |n: &str| (n == "x-guild-id").then_some(&b" 42 "[..]);
        assert_eq!(
            read_key(&KeySource::Header("x-guild-id".into()), b"/", None, &h).as_deref(),
            Some(&b"42"[..])
        );
        assert_eq!(
            read_key(
                &KeySource::Query("guild_id".into()),
                b"/",
                Some(b"a=1&guild_id=7"),
                &h
            )
            .as_deref(),
            Some(&b"7"[..])
        );
        assert_eq!(
            read_key(
                &KeySource::Query("guild_id".into()),
                b"/",
                Some(b"guild_id="),
                &h
            ),
            None
        );
        assert_eq!(
            read_key(&KeySource::Path(1), b"/guilds/99/x", None, &h).as_deref(),
            Some(&b"99"[..])
        );
        assert_eq!(read_key(&KeySource::Path(5), b"/guilds/99", None, &h), None);
        assert_eq!(
            read_key(&KeySource::Path(1), b"/guilds/a%20b", None, &h).as_deref(),
            Some(&b"a b"[..])
        );
        assert!(KeySource::parse("cookie:x").is_err());
        assert_eq!(
            KeySource::parse("header:X-Guild-Id").unwrap(),
            KeySource::Header("x-guild-id".into())
        );
    }
}

#[cfg(test)]
mod vectors {
    use super::*;

    /// Every vector generated by the TypeScript helper under node (scripts/shard-vectors.js).
    #[test]
    fn md5_agrees_with_node_for_every_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/shard_vectors.json"))
                .expect("vectors");
        let list = v["vectors"].as_array().expect("array");
        assert!(list.len() > 3000);
        for item in list {
            let id = item["id"].as_str().expect("id");
            for pods in [3u32, 5, 10] {
                let want = item["pods"][pods.to_string()].as_u64().expect("pod") as u32;
                assert_eq!(
                    pick(HashKind::Md5, id.as_bytes(), pods).unwrap().first,
                    want,
                    "{id} on {pods} pods"
                );
            }
        }
    }

    /// How many of 100,000 keys change pods when the pod count changes, per hash: the table
    /// in README.md comes from this test's output (`cargo test -- --nocapture keys_moved`).
    #[test]
    fn keys_moved_when_pods_change() {
        let keys: Vec<String> = (0..100_000u64)
            .map(|i| ((1_420_070_400_000u64 + i * 7919) << 22 | (i * 31 % 4096)).to_string())
            .collect();
        let moved = |kind: HashKind, from: u32, to: u32| {
            keys.iter()
                .filter(|k| {
                    pick(kind, k.as_bytes(), from).unwrap().first
                        != pick(kind, k.as_bytes(), to).unwrap().first
                })
                .count() as f64
                / keys.len() as f64
        };
        println!("| hash | 3 -> 4 pods | 10 -> 9 pods |");
        println!("|---|---|---|");
        for kind in [
            HashKind::Md5,
            HashKind::Discord,
            HashKind::Jump,
            HashKind::Rendezvous,
        ] {
            let a = moved(kind, 3, 4);
            let b = moved(kind, 10, 9);
            println!(
                "| {} | {:.1}% | {:.1}% |",
                kind.as_str(),
                a * 100.0,
                b * 100.0
            );
            match kind {
                // Modulo hashing moves most keys.
                HashKind::Md5 | HashKind::Discord => {
                    assert!(a > 0.6 && b > 0.8, "{kind:?} {a} {b}")
                }
                // Consistent hashes move about 1/n: 1/4 when growing to 4, 1/10 when shrinking from 10.
                _ => assert!(
                    (a - 0.25).abs() < 0.02 && (b - 0.10).abs() < 0.02,
                    "{kind:?} {a} {b}"
                ),
            }
        }
    }
}
