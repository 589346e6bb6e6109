//! Helpers shared by the unit tests of every module.

/// A small, fast, seeded pseudo-random generator (xorshift64), so that
/// randomised tests are reproducible from their seed.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; zero is mapped to one, because a
    /// zero state would stay zero).
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// The next value.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One of `items`, uniformly enough for tests.
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}
