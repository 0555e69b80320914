//! Synthetic embeddings for benchmarks at sizes no bundled dataset has. Learned embeddings have
//! a low intrinsic dimension (a few dozen directions carry most of the variance), which is what
//! makes graph search work on them; isotropic random vectors in 512-d have none and would
//! understate every approximate index. So rows are a random linear map of a low-dimensional
//! Gaussian latent, plus isotropic noise, normalised to unit length.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How synthetic rows are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentRows {
    /// Row width.
    pub dim: usize,
    /// Dimension of the latent Gaussian (the intrinsic dimension).
    pub latent: usize,
    /// Standard deviation of the isotropic noise per coordinate, relative to the latent
    /// part's (about 1 per coordinate).
    pub noise: f32,
    /// Seed of the latent→row map; rows drawn with the same basis seed share one space.
    pub basis_seed: u64,
}

impl Default for LatentRows {
    /// 512-d rows with a 32-d latent and noise 0.3 (`bench/hnsw_pick`'s data).
    fn default() -> Self {
        LatentRows {
            dim: 512,
            latent: 32,
            noise: 0.3,
            basis_seed: 7,
        }
    }
}

impl LatentRows {
    /// `n` unit rows, row `i` drawn from its own stream of `seed` (so any row range is
    /// reproducible without the others), on every core.
    ///
    /// # Shapes
    /// Returns `[n * dim]`, row-major.
    pub fn draw(&self, n: usize, seed: u64) -> Vec<f32> {
        self.draw_rows(0, n, seed)
    }

    /// Rows `first..first + n` of [`LatentRows::draw`]'s sequence for `seed`, without the rows
    /// before them: a large set can be written piece by piece.
    ///
    /// # Shapes
    /// Returns `[n * dim]`, row-major.
    pub fn draw_rows(&self, first: usize, n: usize, seed: u64) -> Vec<f32> {
        let (dim, latent) = (self.dim.max(1), self.latent.max(1));
        let mut basis_rng = ChaCha8Rng::seed_from_u64(self.basis_seed);
        let scale = 1.0 / (latent as f32).sqrt();
        let basis: Vec<f32> = (0..dim * latent)
            .map(|_| gaussian(&mut basis_rng) * scale)
            .collect();
        let mut out = vec![0f32; n * dim];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let rows_per_thread = n.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (part, chunk) in out.chunks_mut(rows_per_thread * dim).enumerate() {
                let basis = &basis;
                scope.spawn(move || {
                    let mut z = vec![0f32; latent];
                    for (r, row) in chunk.chunks_exact_mut(dim).enumerate() {
                        let i = (first + part * rows_per_thread + r) as u64;
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(i);
                        z.iter_mut().for_each(|v| *v = gaussian(&mut rng));
                        for (d, value) in row.iter_mut().enumerate() {
                            let signal: f32 = basis[d * latent..(d + 1) * latent]
                                .iter()
                                .zip(&z)
                                .map(|(b, z)| b * z)
                                .sum();
                            *value = signal + self.noise * gaussian(&mut rng);
                        }
                        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                        row.iter_mut().for_each(|v| *v /= norm);
                    }
                });
            }
        });
        out
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unit_reproducible_and_low_dimensional() {
        let spec = LatentRows {
            dim: 64,
            latent: 4,
            noise: 0.05,
            basis_seed: 1,
        };
        let a = spec.draw(300, 9);
        assert_eq!(a.len(), 300 * 64);
        for row in a.chunks_exact(64) {
            let norm: f32 = row.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        // Same seed: same rows; another seed: other rows in the same space.
        assert_eq!(a, spec.draw(300, 9));
        assert_eq!(spec.draw_rows(250, 50, 9), a[250 * 64..]);
        let b = spec.draw(300, 10);
        assert_ne!(a, b);
        // Low intrinsic dimension: a row's nearest neighbour among 300 is far closer than in
        // isotropic 64-d, where the best cosine among 300 stays near 0.4.
        let best = |rows: &[f32]| -> f32 {
            let q = &rows[..64];
            rows.chunks_exact(64)
                .skip(1)
                .map(|r| r.iter().zip(q).map(|(x, y)| x * y).sum::<f32>())
                .fold(f32::MIN, f32::max)
        };
        assert!(best(&a) > 0.8, "{}", best(&a));
        let isotropic = LatentRows {
            latent: 64,
            noise: 1.0,
            ..spec
        };
        assert!(best(&isotropic.draw(300, 9)) < 0.6);
    }
}
