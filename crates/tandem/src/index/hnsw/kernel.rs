//! The inner products of the graph walk. A walk evaluates millions of them and only needs them
//! close (the hits it returns are scored again with [`crate::eval::dot`]), so each is summed in
//! independent lanes, and the neighbours of a node are scored four at a time: four rows read at
//! once overlap their cache misses, which is what a search over rows larger than the cache
//! waits on.

/// Lanes of independent partial sums: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// `a·b` summed in [`LANES`] independent lanes, compiled for the widest vectors the CPU has
/// (picked at run time).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `q·r` for four rows at once, each summed as [`dot`] sums it (same lanes, same order, so
/// the same value to the bit).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn dot4(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let (q_chunks, q_rest) = q.as_chunks::<LANES>();
    let chunks = rows.map(|r| r.as_chunks::<LANES>().0);
    for (c, x) in q_chunks.iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&chunks) {
            let y = &row[c];
            for l in 0..LANES {
                acc[l] = x[l].mul_add(y[l], acc[l]);
            }
        }
    }
    let tail_start = q_chunks.len() * LANES;
    let mut out = [0f32; 4];
    for ((o, acc), row) in out.iter_mut().zip(&acc).zip(rows) {
        let tail: f32 = q_rest
            .iter()
            .zip(&row[tail_start..])
            .map(|(x, y)| x * y)
            .sum();
        *o = acc.iter().sum::<f32>() + tail;
    }
    out
}

/// The rows a graph is built over: `dim`-wide, row-major.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    /// `[n * dim]`.
    pub data: &'a [f32],
    /// Row width.
    pub dim: usize,
}

impl<'a> Rows<'a> {
    /// Row `i`.
    pub fn row(&self, i: u32) -> &'a [f32] {
        let i = i as usize;
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// `q·row(id)` for every id, appended to `out`, four at a time.
pub fn dots(q: &[f32], rows: Rows<'_>, ids: &[u32], out: &mut Vec<f32>) {
    let (fours, rest) = ids.as_chunks::<4>();
    for four in fours {
        out.extend_from_slice(&dot4(q, four.map(|id| rows.row(id))));
    }
    out.extend(rest.iter().map(|&id| dot(q, rows.row(id))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_at_a_time_equals_one_at_a_time_to_the_bit() {
        for dim in [1, 15, 16, 17, 64, 100, 512] {
            let row = |seed: usize| -> Vec<f32> {
                (0..dim)
                    .map(|i| (((i * 37 + seed * 101) % 97) as f32 - 48.0) / 31.0)
                    .collect()
            };
            let q = row(0);
            let data: Vec<f32> = (1..8).flat_map(row).collect();
            let rows = Rows { data: &data, dim };
            let ids: Vec<u32> = (0..7).rev().collect();
            let mut got = Vec::new();
            dots(&q, rows, &ids, &mut got);
            for (&id, g) in ids.iter().zip(&got) {
                let r = rows.row(id);
                assert_eq!(g.to_bits(), dot(&q, r).to_bits(), "dim {dim}");
                let exact: f64 = q.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum();
                assert!((*g as f64 - exact).abs() < 1e-4 * dim as f64, "dim {dim}");
            }
        }
    }
}
