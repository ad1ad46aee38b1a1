//! A small, fast, non-cryptographic hasher for the routing tries. Keys come from the operator's
//! config, not from clients, so hash flooding is not a concern and SipHash is wasted time.
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and the tag from the top seven. A
        // multiply only carries upwards, so keys that differ in their last bytes
        // (`svc000001`, `svc000002`, ...) shared their low bits and piled into a few buckets:
        // at 33,000 such keys a lookup cost 30% more than in a small map. Fold the high half
        // down (murmur3's finaliser) so every bit reaches the bucket index.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    /// Sequentially numbered keys must spread over the low bits (the bucket index).
    #[test]
    fn numbered_keys_spread_over_buckets() {
        let b = super::FxBuild::default();
        let buckets: std::collections::HashSet<u64> = (0..4096)
            .map(|i| b.hash_one(format!("svc{i:06}").into_bytes().into_boxed_slice()) & 4095)
            .collect();
        assert!(
            buckets.len() > 2000,
            "{} of 4096 buckets used",
            buckets.len()
        );
    }
}
