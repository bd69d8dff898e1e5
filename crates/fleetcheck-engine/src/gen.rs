//! Seeded generation: [`Gen`] draws every random choice of a case from one seed.

use std::fmt;
use std::ops::RangeInclusive;

use proptest::prelude::Rng as _;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A source of random choices for one test case, driven by a `u64` seed.
///
/// The same seed gives the same sequence of choices. Besides the helpers below, any proptest
/// [`Strategy`] can be drawn from with [`Gen::draw`].
///
/// ```
/// use fleetcheck_engine::Gen;
/// let mut a = Gen::new(7, 10);
/// let mut b = Gen::new(7, 10);
/// assert_eq!(a.range(1..=100u32), b.range(1..=100u32));
/// assert_eq!(a.lowercase(8), b.lowercase(8));
/// ```
pub struct Gen {
    rng: TestRng,
    size: usize,
}

impl fmt::Debug for Gen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gen").field("size", &self.size).finish()
    }
}

/// Integer types [`Gen::range`] can draw.
pub trait GenInt: Copy {
    #[doc(hidden)]
    fn to_u64_offset(self) -> u64;
    #[doc(hidden)]
    fn from_u64_offset(v: u64) -> Self;
}

macro_rules! gen_int_unsigned {
    ($($t:ty),*) => {$(
        impl GenInt for $t {
            fn to_u64_offset(self) -> u64 { self as u64 }
            fn from_u64_offset(v: u64) -> Self { v as $t }
        }
    )*};
}
gen_int_unsigned!(u8, u16, u32, u64, usize);

macro_rules! gen_int_signed {
    ($($t:ty),*) => {$(
        impl GenInt for $t {
            fn to_u64_offset(self) -> u64 { (self as i64 as u64) ^ (1 << 63) }
            fn from_u64_offset(v: u64) -> Self { (v ^ (1 << 63)) as i64 as $t }
        }
    )*};
}
gen_int_signed!(i8, i16, i32, i64);

/// Mixes a seed with an index into an independent seed (SplitMix64's finaliser).
pub fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Gen {
    /// A generator for one case: `seed` decides every choice, `size` bounds sizes.
    pub fn new(seed: u64, size: usize) -> Self {
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix_seed(seed, i as u64).to_le_bytes());
        }
        Self {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            size,
        }
    }

    /// The size parameter of this case (the maximum command-sequence length).
    pub fn size(&self) -> usize {
        self.size
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform integer in `range` (inclusive). Panics if the range is empty.
    pub fn range<T: GenInt>(&mut self, range: RangeInclusive<T>) -> T {
        let (lo, hi) = (range.start().to_u64_offset(), range.end().to_u64_offset());
        assert!(lo <= hi, "Gen::range called with an empty range");
        let span = hi - lo;
        let v = if span == u64::MAX {
            self.next_u64()
        } else {
            // Lemire's multiply-shift: unbiased enough for test generation, and branch-free.
            ((u128::from(self.next_u64()) * u128::from(span + 1)) >> 64) as u64
        };
        T::from_u64_offset(lo + v)
    }

    /// `true` with probability `p`.
    pub fn bool(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// One element of `items`, or `None` if it is empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.range(0..=items.len() - 1)])
        }
    }

    /// Picks an item with probability proportional to its weight (ScalaCheck's `Gen.frequency`).
    /// `None` if all weights are zero.
    pub fn frequency<'a, T>(&mut self, items: &'a [(u32, T)]) -> Option<&'a T> {
        let total: u64 = items.iter().map(|(w, _)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.range(0..=total - 1);
        for (w, item) in items {
            if pick < u64::from(*w) {
                return Some(item);
            }
            pick -= u64::from(*w);
        }
        unreachable!("pick is below the total weight")
    }

    /// `count` distinct integers from `range`, in random order. Panics if the range is too small.
    pub fn distinct(&mut self, count: usize, range: RangeInclusive<u64>) -> Vec<u64> {
        let (lo, hi) = (*range.start(), *range.end());
        let available = hi.saturating_sub(lo).saturating_add(1);
        assert!(
            hi >= lo && count as u64 <= available,
            "Gen::distinct asked for {count} values from a range of {available}"
        );
        // Floyd's algorithm: exactly `count` draws, no rejection loop.
        let mut chosen: Vec<u64> = Vec::with_capacity(count);
        for j in (available - count as u64)..available {
            let t = self.range(0..=j);
            let v = if chosen.contains(&(lo + t)) {
                lo + j
            } else {
                lo + t
            };
            chosen.push(v);
        }
        chosen
    }

    /// A string of `len` random lowercase ASCII letters.
    pub fn lowercase(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b'a' + self.range(0..=25u8)))
            .collect()
    }

    /// A random (version 4) UUID in its usual text form.
    pub fn uuid(&mut self) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }

    /// Draws a value from a proptest strategy, deterministically from this generator's seed.
    pub fn draw<S: Strategy>(&mut self, strategy: &S) -> S::Value {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
        );
        strategy
            .new_tree(&mut runner)
            .expect("strategy could not generate a value")
            .current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices() {
        let mut a = Gen::new(42, 5);
        let mut b = Gen::new(42, 5);
        for _ in 0..100 {
            assert_eq!(a.range(0..=1000u64), b.range(0..=1000u64));
        }
        assert_eq!(a.uuid(), b.uuid());
        assert_ne!(Gen::new(1, 5).next_u64(), Gen::new(2, 5).next_u64());
    }

    #[test]
    fn range_stays_in_bounds_and_covers() {
        let mut g = Gen::new(3, 0);
        let mut seen = [false; 5];
        for _ in 0..500 {
            let v = g.range(-2..=2i32);
            assert!((-2..=2).contains(&v));
            seen[(v + 2) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn distinct_values_are_distinct_and_in_range() {
        let mut g = Gen::new(9, 0);
        for n in 0..=10 {
            let v = g.distinct(n, 2..=11);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), n);
            assert!(v.iter().all(|x| (2..=11).contains(x)));
        }
    }

    #[test]
    fn frequency_respects_zero_weights() {
        let mut g = Gen::new(1, 0);
        for _ in 0..200 {
            assert_eq!(g.frequency(&[(0, 'a'), (3, 'b')]), Some(&'b'));
        }
        assert_eq!(g.frequency::<char>(&[(0, 'a')]), None);
    }

    #[test]
    fn uuid_has_version_four_shape() {
        let u = Gen::new(5, 0).uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn draw_uses_proptest_strategies() {
        let a = Gen::new(11, 0).draw(&(0u32..10, "[a-c]{3}"));
        let b = Gen::new(11, 0).draw(&(0u32..10, "[a-c]{3}"));
        assert_eq!(a, b);
        assert!(a.0 < 10 && a.1.len() == 3);
    }
}
