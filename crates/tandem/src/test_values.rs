//! Deterministic test inputs shared by the unit tests that compare two computations of the same
//! thing (an op against its tensor version, a gemm against a loop).

/// `n` values in `[-1, 1]` in a scrambled order without structure (no zeros in a row, no
/// repeats close together); `salt` gives another sequence.
pub(crate) fn spread(n: usize, salt: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 2001) as f64 / 1000.0 - 1.0)
        .collect()
}
