//! Inner-product scores between the rows of two matrices, computed tile by tile so that
//! ranking can scan each tile while it is still in cache and never holds a whole score matrix.
//!
//! Every score is computed in one fixed order, whatever tile or thread computes it: a chain of
//! fused multiply-adds over the coordinates, first to last. So [`dot`] of a pair equals that
//! pair's entry in any [`tile`] bit for bit, and ranking can take a positive's score from
//! [`dot`] and compare it with tile scores without a rounding mismatch breaking the tie rule.
//! A fused multiply-add is exactly rounded, so the SIMD builds (AVX2+FMA, NEON; chosen at run
//! time) and the portable build give the same bits.
//!
//! Both sides are packed in groups of rows stored coordinate-major ([`Packed`]), so a tile is
//! the classic broadcast-FMA micro-kernel of a matrix product: [`QUERY_GROUP`] queries ×
//! [`GALLERY_GROUP`] gallery rows held in 12 AVX2 registers.

use std::ops::Range;

use multiversion::multiversion;

/// Queries per register tile.
pub const QUERY_GROUP: usize = 6;
/// Gallery rows per register tile (two AVX2 registers of f32).
pub const GALLERY_GROUP: usize = 16;

/// Rows packed in groups of `G`: group `g` holds rows `gG..gG + G` as `[dim][G]`, the last
/// group padded with zero rows.
#[derive(Debug, Clone)]
pub struct Packed<const G: usize> {
    data: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl<const G: usize> Packed<G> {
    /// # Shapes
    /// `rows: [n * dim]`, row-major, `dim > 0`.
    pub fn pack(rows: &[f32], dim: usize) -> Self {
        let mut packed = Packed {
            data: Vec::new(),
            rows: 0,
            dim,
        };
        packed.repack(rows);
        packed
    }

    /// Packs `rows` into this buffer, reusing its allocation.
    ///
    /// # Shapes
    /// `rows: [n * dim]` with this buffer's `dim`.
    pub fn repack(&mut self, rows: &[f32]) {
        let dim = self.dim;
        let n = rows.len() / dim;
        self.data.clear();
        self.data.resize(n.div_ceil(G) * dim * G, 0.0);
        for (j, row) in rows.chunks_exact(dim).enumerate() {
            let group = &mut self.data[(j / G) * dim * G..][..dim * G];
            for (k, &v) in row.iter().enumerate() {
                group[k * G + j % G] = v;
            }
        }
        self.rows = n;
    }

    /// Number of rows (without padding).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(G)
    }

    fn group(&self, g: usize) -> &[f32] {
        &self.data[g * self.dim * G..(g + 1) * self.dim * G]
    }
}

/// The score of `a` with `b`: fused multiply-adds from the first coordinate to the last.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0f32, |acc, (&x, &y)| x.mul_add(y, acc))
}

/// [`dot`] of `a` with four rows at once: four independent chains of fused multiply-adds, each
/// in [`dot`]'s order, so each score is [`dot`]'s to the bit (in a quarter of the latency).
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn dot4(a: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [0f32; 4];
    for (i, &x) in a.iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            *acc = x.mul_add(row[i], *acc);
        }
    }
    acc
}

/// One query group against one gallery group: `acc[r][l]` scores query `r` with row `l`.
#[inline(always)]
fn kernel(queries: &[f32], gallery: &[f32]) -> [[f32; GALLERY_GROUP]; QUERY_GROUP] {
    let mut acc = [[0f32; GALLERY_GROUP]; QUERY_GROUP];
    let (a, _) = queries.as_chunks::<QUERY_GROUP>();
    let (b, _) = gallery.as_chunks::<GALLERY_GROUP>();
    for (a, b) in a.iter().zip(b) {
        for r in 0..QUERY_GROUP {
            for l in 0..GALLERY_GROUP {
                acc[r][l] = a[r].mul_add(b[l], acc[r][l]);
            }
        }
    }
    acc
}

/// Scores of query groups `q` against gallery groups `g`, into the row-major
/// `out[(i - q.start·6) * width + (j - g.start·16)]` with `width = g.len() · 16`; padding rows
/// score 0. Each entry of a real pair equals [`dot`] of that pair.
///
/// # Shapes
/// `out: [q.len() · 6 * g.len() · 16]`; both sides packed with the same `dim`.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub fn tile(
    queries: &Packed<QUERY_GROUP>,
    q: Range<usize>,
    gallery: &Packed<GALLERY_GROUP>,
    g: Range<usize>,
    out: &mut [f32],
) {
    let width = g.len() * GALLERY_GROUP;
    for (qi, qg) in q.enumerate() {
        let a = queries.group(qg);
        for (gi, gg) in g.clone().enumerate() {
            let acc = kernel(a, gallery.group(gg));
            for (r, row) in acc.iter().enumerate() {
                let at = (qi * QUERY_GROUP + r) * width + gi * GALLERY_GROUP;
                out[at..at + GALLERY_GROUP].copy_from_slice(row);
            }
        }
    }
}

/// Bytes of packed gallery per chunk, sized to stay in a core's L2 cache with its scores.
const GALLERY_CHUNK_BYTES: usize = 128 << 10;

/// Gallery groups per chunk for rows of width `dim` (at least one).
pub fn chunk_groups_for(dim: usize) -> usize {
    (GALLERY_CHUNK_BYTES / (dim.max(1) * 4 * GALLERY_GROUP)).max(1)
}

/// One thread's scratch for scoring blocks of queries against a packed gallery, one
/// cache-sized chunk of the gallery at a time — the loop every scan over all pairs shares.
pub struct BlockScorer<'a> {
    gallery: &'a Packed<GALLERY_GROUP>,
    chunk_groups: usize,
    queries: Packed<QUERY_GROUP>,
    scores: Vec<f32>,
}

impl<'a> BlockScorer<'a> {
    /// Scratch for blocks of at most `max_queries` queries and chunks of `chunk_groups`
    /// gallery groups.
    pub fn new(
        gallery: &'a Packed<GALLERY_GROUP>,
        max_queries: usize,
        chunk_groups: usize,
    ) -> Self {
        BlockScorer {
            gallery,
            chunk_groups: chunk_groups.max(1),
            queries: Packed::pack(&[], gallery.dim),
            scores: vec![
                0f32;
                max_queries.div_ceil(QUERY_GROUP)
                    * QUERY_GROUP
                    * chunk_groups.max(1)
                    * GALLERY_GROUP
            ],
        }
    }

    /// Scores `queries` against the whole gallery, calling `visit(first, columns, scores,
    /// width)` once per chunk: query `r`'s scores with gallery rows `first..first + columns`
    /// are `scores[r * width..r * width + columns]`.
    ///
    /// # Shapes
    /// `queries: [n * dim]`, row-major, `n` at most the `max_queries` of [`BlockScorer::new`].
    pub fn score(&mut self, queries: &[f32], visit: impl FnMut(usize, usize, &[f32], usize)) {
        self.score_groups(queries, 0..self.gallery.groups(), visit);
    }

    /// [`BlockScorer::score`] against the gallery groups `groups` only (rows
    /// `groups.start * GALLERY_GROUP..`), so that threads can share one query's gallery.
    ///
    /// # Shapes
    /// As [`BlockScorer::score`]; `groups` within the gallery's [`Packed::groups`].
    pub fn score_groups(
        &mut self,
        queries: &[f32],
        groups: std::ops::Range<usize>,
        mut visit: impl FnMut(usize, usize, &[f32], usize),
    ) {
        self.queries.repack(queries);
        for g0 in groups.clone().step_by(self.chunk_groups) {
            let g1 = (g0 + self.chunk_groups).min(groups.end);
            let width = (g1 - g0) * GALLERY_GROUP;
            let scores = &mut self.scores[..self.queries.groups() * QUERY_GROUP * width];
            tile(
                &self.queries,
                0..self.queries.groups(),
                self.gallery,
                g0..g1,
                scores,
            );
            let first = g0 * GALLERY_GROUP;
            let columns = (g1 * GALLERY_GROUP).min(self.gallery.rows) - first;
            visit(first, columns, scores, width);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn four_rows_at_once_equal_dot_bit_for_bit(
            dim in 0usize..40,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut draw = || -> Vec<f32> { (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect() };
            let a = draw();
            let rows = [draw(), draw(), draw(), draw()];
            let got = dot4(&a, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (g, row) in got.iter().zip(&rows) {
                prop_assert_eq!(g.to_bits(), dot(&a, row).to_bits());
            }
        }

        #[test]
        fn tile_entries_equal_dot_bit_for_bit(
            n_q in 1usize..20,
            n_g in 1usize..50,
            dim in 1usize..21,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<f32> = (0..n_q * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n_g * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let queries = Packed::<QUERY_GROUP>::pack(&a, dim);
            let gallery = Packed::<GALLERY_GROUP>::pack(&b, dim);
            // Group ranges that skip the first group when there are several.
            let q = usize::from(queries.groups() > 1)..queries.groups();
            let g = usize::from(gallery.groups() > 1)..gallery.groups();
            let width = g.len() * GALLERY_GROUP;
            let mut out = vec![f32::NAN; q.len() * QUERY_GROUP * width];
            tile(&queries, q.clone(), &gallery, g.clone(), &mut out);
            for i in q.start * QUERY_GROUP..q.end * QUERY_GROUP {
                for j in g.start * GALLERY_GROUP..g.end * GALLERY_GROUP {
                    let got = out[(i - q.start * QUERY_GROUP) * width + (j - g.start * GALLERY_GROUP)];
                    if i >= n_q || j >= n_g {
                        prop_assert_eq!(got, 0.0);
                        continue;
                    }
                    let (x, y) = (&a[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim]);
                    prop_assert_eq!(got.to_bits(), dot(x, y).to_bits());
                    let naive: f64 = x.iter().zip(y).map(|(&u, &v)| f64::from(u) * f64::from(v)).sum();
                    prop_assert!((f64::from(got) - naive).abs() < 1e-5);
                }
            }
        }
    }
}
