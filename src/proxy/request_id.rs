//! Request ids: kept from the client when sane, else generated from a per-process random seed
//! and a counter (unique within a process, unguessable across restarts, no allocation).
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    })
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A client-sent id is kept if it is 1..=200 visible ASCII characters.
pub fn acceptable(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 200 && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Writes a new 32-hex-digit id into `out` (cleared first).
pub fn generate(out: &mut Vec<u8>) {
    out.clear();
    let n = COUNTER.fetch_add(1, Relaxed);
    let s = seed();
    let mut id = [0u8; 32];
    hex16(&mut id[..16], mix(s ^ n));
    hex16(&mut id[16..], mix(n.wrapping_add(s.rotate_left(17))));
    out.extend_from_slice(&id);
}

/// `{:016x}` by hand into `dst` (16 bytes): `write!` went through core::fmt for every
/// request, and a table look-up per digit still cost ~250 instructions per id; this spreads
/// the nibbles one per byte and turns eight into digits at once.
fn hex16(dst: &mut [u8], v: u64) {
    dst[..8].copy_from_slice(&hex8((v >> 32) as u32));
    dst[8..16].copy_from_slice(&hex8(v as u32));
}

/// `{:08x}` of `v`.
fn hex8(v: u32) -> [u8; 8] {
    const LOW: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Nibble k (most significant first) into byte k of the big-endian bytes.
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & LOW;
    // Per byte n: '0' + n, and 39 more ('a' - '0' - 10) when n > 9; no byte carries over.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u64::from(b'0') * ONES + 39 * letters).to_be_bytes()
}

#[cfg(test)]
fn push_hex16(out: &mut Vec<u8>, v: u64) {
    let mut d = [0u8; 16];
    hex16(&mut d, v);
    out.extend_from_slice(&d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_hex() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        generate(&mut a);
        generate(&mut b);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        let mut x = 0x1234_5678_9abc_def1_u64;
        let some = (0..1000).map(|_| {
            x = mix(x);
            x >> (x % 64)
        });
        for v in [
            0u64,
            0xabc,
            0x0123_4567_89ab_cdef,
            u64::MAX,
            0xa0a0_9f9f_0909_fafa,
        ]
        .into_iter()
        .chain(some)
        {
            let mut h = Vec::new();
            push_hex16(&mut h, v);
            assert_eq!(h, format!("{v:016x}").into_bytes());
        }
        assert!(acceptable(b"abc-123"));
        assert!(!acceptable(b"a b"));
        assert!(!acceptable(b""));
    }
}
