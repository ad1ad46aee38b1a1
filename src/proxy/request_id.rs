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
/// request, and a push per digit checked the vector's capacity 32 times.
fn hex16(dst: &mut [u8], v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in dst.iter_mut().take(16).enumerate() {
        *d = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
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
        for v in [0u64, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            let mut h = Vec::new();
            push_hex16(&mut h, v);
            assert_eq!(h, format!("{v:016x}").into_bytes());
        }
        assert!(acceptable(b"abc-123"));
        assert!(!acceptable(b"a b"));
        assert!(!acceptable(b""));
    }
}
