//! The inner products of the graph walk. A walk evaluates millions of them and only needs them
//! close: the nodes it returns are scored again on the gallery's own f32 rows before they are
//! ranked. So the walk reads a bfloat16 copy of the rows ([`WalkRows`]), half the bytes of the
//! f32 rows: a search over a gallery larger than the cache waits on memory, not on
//! arithmetic. Each product is summed in independent lanes, and the neighbours of a node are
//! scored four at a time, so that four rows' cache misses overlap.

use rayon::prelude::*;

/// Lanes of independent partial sums: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;

/// Unit roundoff of bfloat16 (8 significant bits): rounding moves a value `x` by at most
/// `|x|·2⁻⁸`.
const BF16_ROUNDOFF: f32 = 1.0 / 256.0;

/// The f32 a bfloat16 holds: its bits are the top half of the f32's.
#[inline(always)]
fn widen(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `q·r` summed in [`LANES`] independent lanes, compiled for the widest vectors the CPU has
/// (picked at run time).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn dot(q: &[f32], r: &[u16]) -> f32 {
    let mut acc = [0f32; LANES];
    let (q_chunks, q_rest) = q.as_chunks::<LANES>();
    let (r_chunks, r_rest) = r.as_chunks::<LANES>();
    for (x, y) in q_chunks.iter().zip(r_chunks) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(widen(y[l]), acc[l]);
        }
    }
    let tail: f32 = q_rest.iter().zip(r_rest).map(|(x, &y)| x * widen(y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `q·r` for four rows at once, each summed as [`dot`] sums it (same lanes, same order, so
/// the same value to the bit).
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn dot4(q: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let (q_chunks, q_rest) = q.as_chunks::<LANES>();
    let chunks = rows.map(|r| r.as_chunks::<LANES>().0);
    for (c, x) in q_chunks.iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&chunks) {
            let y = &row[c];
            for l in 0..LANES {
                acc[l] = x[l].mul_add(widen(y[l]), acc[l]);
            }
        }
    }
    let tail_start = q_chunks.len() * LANES;
    let mut out = [0f32; 4];
    for ((o, acc), row) in out.iter_mut().zip(&acc).zip(rows) {
        let tail: f32 = q_rest
            .iter()
            .zip(&row[tail_start..])
            .map(|(x, &y)| x * widen(y))
            .sum();
        *o = acc.iter().sum::<f32>() + tail;
    }
    out
}

/// The gallery's rows as the index holds them: `dim`-wide, row-major f32.
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

    /// Rows held.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// The rows the walk scores: each gallery value rounded to the nearest bfloat16.
pub struct WalkRows {
    bits: Vec<u16>,
    dim: usize,
    /// The largest Euclidean norm of a gallery row.
    max_norm: f32,
}

impl WalkRows {
    /// The bfloat16 copy of `rows`, converted on every core.
    pub fn new(rows: Rows<'_>) -> Self {
        let bits = rows
            .data
            .par_iter()
            .map(|&x| half::bf16::from_f32(x).to_bits())
            .collect();
        let max_norm = rows
            .data
            .par_chunks(rows.dim.max(1))
            .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
            .reduce(|| 0.0, f32::max);
        WalkRows {
            bits,
            dim: rows.dim,
            max_norm,
        }
    }

    /// Row `i`.
    pub fn row(&self, i: u32) -> &[u16] {
        let i = i as usize;
        &self.bits[i * self.dim..(i + 1) * self.dim]
    }

    /// How far [`dot`] of `query` with any row may lie from the f32 product: each row value
    /// moved by at most `|r_i|·2⁻⁸`, so the product by at most `2⁻⁸·|q|·|r|` (Cauchy–Schwarz),
    /// with a little more for the f32 sums.
    pub fn error_bound(&self, query: &[f32]) -> f32 {
        let norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        (BF16_ROUNDOFF * 1.01 + 1e-6) * norm * self.max_norm
    }
}

/// `q·row(id)` for every id, appended to `out`, four at a time.
pub fn dots(q: &[f32], rows: &WalkRows, ids: &[u32], out: &mut Vec<f32>) {
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
            let walk = WalkRows::new(Rows { data: &data, dim });
            let ids: Vec<u32> = (0..7).rev().collect();
            let mut got = Vec::new();
            dots(&q, &walk, &ids, &mut got);
            for (&id, g) in ids.iter().zip(&got) {
                let r = walk.row(id);
                assert_eq!(g.to_bits(), dot(&q, r).to_bits(), "dim {dim}");
                let exact: f64 = q
                    .iter()
                    .zip(r)
                    .map(|(a, &b)| *a as f64 * widen(b) as f64)
                    .sum();
                assert!((*g as f64 - exact).abs() < 1e-4 * dim as f64, "dim {dim}");
            }
        }
    }

    #[test]
    fn bfloat16_rows_round_to_nearest_and_products_stay_within_the_bound() {
        let dim = 512;
        let data: Vec<f32> = crate::data::LatentRows::default().draw(200, 3);
        let rows = Rows { data: &data, dim };
        let walk = WalkRows::new(rows);
        for (&x, &b) in data.iter().zip(&walk.bits) {
            // Rounded, not truncated: within half a unit of the 8th significant bit.
            assert!(
                (widen(b) - x).abs() <= x.abs() * BF16_ROUNDOFF,
                "{x} -> {}",
                widen(b)
            );
        }
        // A query of norm 3, so that the bound's scaling is exercised too.
        let q: Vec<f32> = rows.row(0).iter().map(|x| 3.0 * x).collect();
        let bound = walk.error_bound(&q);
        assert!((0.011..0.013).contains(&bound), "bound {bound}");
        let mut worst = 0f32;
        for i in 0..200 {
            let exact = crate::eval::dot(&q, rows.row(i));
            let walked = dot(&q, walk.row(i));
            worst = worst.max((walked - exact).abs());
        }
        assert!(worst <= bound, "{worst} > {bound}");
        // Rounding errors cancel: the typical error is far below the worst case.
        assert!(worst < bound / 10.0, "{worst} against the bound {bound}");
    }
}
