//! From decoded 8-bit RGB to the network's input: the short side resized with Pillow's
//! bilinear filter (bit for bit: the same antialiasing triangle, 22-bit fixed-point weights,
//! horizontal pass first with its result rounded to 8 bits), a centre crop, `(x − 127) / 128`.
//! The PyTorch reference (`tests/fixtures/images/make_reference.py`) preprocesses exactly so.

use serde::{Deserialize, Serialize};

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width · height · 3` bytes.
    pub data: Vec<u8>,
}

/// The preprocessing of an encoder, recorded in `image_encoder.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// The short side is resized to this many pixels (Pillow bilinear, antialiased).
    pub resize_short_side: usize,
    /// Then a centred square of this side is cut out.
    pub crop: usize,
    /// Each 8-bit value `v` becomes `(v − mean) / scale`.
    pub mean: f32,
    /// See `mean`.
    pub scale: f32,
}

impl Preprocessing {
    /// The EfficientNet-Lite preprocessing for an input side of `crop` pixels (224 → 256).
    pub fn lite(crop: usize) -> Self {
        Preprocessing {
            resize_short_side: (crop * 8).div_ceil(7),
            crop,
            mean: 127.0,
            scale: 128.0,
        }
    }

    /// The size after the resize: short side `resize_short_side`, the long side in proportion
    /// (rounded, ties up).
    pub fn resized_size(&self, width: usize, height: usize) -> (usize, usize) {
        let (short, long) = (width.min(height), width.max(height));
        let target = self.resize_short_side;
        let new_long = (2 * long * target + short) / (2 * short);
        if width <= height {
            (target, new_long)
        } else {
            (new_long, target)
        }
    }

    /// Resize and centre crop, as 8-bit RGB (`crop × crop`).
    pub fn crop_rgb8(&self, image: &Rgb8) -> Rgb8 {
        let (w, h) = self.resized_size(image.width, image.height);
        let resized = resize_bilinear(image, w, h);
        let (left, top) = ((w - self.crop) / 2, (h - self.crop) / 2);
        let mut data = Vec::with_capacity(self.crop * self.crop * 3);
        for y in top..top + self.crop {
            let row = (y * w + left) * 3;
            data.extend_from_slice(&resized.data[row..row + self.crop * 3]);
        }
        Rgb8 {
            width: self.crop,
            height: self.crop,
            data,
        }
    }

    /// The network input of one image: `crop × crop × 3` values, channels last.
    pub fn input(&self, image: &Rgb8) -> Vec<f32> {
        self.crop_rgb8(image)
            .data
            .iter()
            .map(|&v| (v as f32 - self.mean) / self.scale)
            .collect()
    }
}

/// Fractional bits of Pillow's fixed-point filter weights (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel of one axis: the first input pixel and its fixed-point weights.
fn coefficients(input: usize, output: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's radius is 1 input pixel, widened when shrinking
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let min = ((center - support + 0.5) as isize).max(0) as usize;
            let max = ((center + support + 0.5) as isize).min(input as isize) as usize;
            let weights: Vec<f64> = (min..max)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    (w * (1u32 << PRECISION_BITS) as f64 + 0.5) as i32
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes with Pillow's `Image.resize(size, Image.BILINEAR)`, bit for bit: horizontal pass
/// (over just the rows the vertical pass reads), rounded to 8 bits, then vertical. A pass whose
/// size does not change is skipped.
pub fn resize_bilinear(image: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let horizontal = coefficients(image.width, width);
    let vertical = coefficients(image.height, height);
    let half = 1i32 << (PRECISION_BITS - 1);
    let (mut src, mut row_offset) = (image.clone(), 0);
    if width != image.width {
        // Rows from the first the vertical pass reads to the last.
        let first = vertical.first().map_or(0, |(m, _)| *m);
        let last = vertical.last().map_or(0, |(m, k)| m + k.len());
        let (first, last) = if height != image.height {
            (first, last)
        } else {
            (0, image.height)
        };
        let mut data = Vec::with_capacity(width * (last - first) * 3);
        for y in first..last {
            let row = &image.data[y * image.width * 3..(y + 1) * image.width * 3];
            for (min, k) in &horizontal {
                for c in 0..3 {
                    let acc = k
                        .iter()
                        .enumerate()
                        .fold(half, |acc, (j, w)| acc + row[(min + j) * 3 + c] as i32 * w);
                    data.push(clip8(acc));
                }
            }
        }
        src = Rgb8 {
            width,
            height: last - first,
            data,
        };
        row_offset = first;
    }
    if height == image.height {
        return src;
    }
    let mut data = Vec::with_capacity(width * height * 3);
    for (min, k) in &vertical {
        for x in 0..width * 3 {
            let acc = k.iter().enumerate().fold(half, |acc, (j, w)| {
                acc + src.data[(min - row_offset + j) * width * 3 + x] as i32 * w
            });
            data.push(clip8(acc));
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_side_rounds_ties_up() {
        let p = Preprocessing::lite(224);
        assert_eq!(p.resize_short_side, 256);
        assert_eq!(p.resized_size(420, 280), (384, 256));
        assert_eq!(p.resized_size(512, 513), (256, 257));
        assert_eq!(p.resized_size(64, 512), (256, 2048));
        assert_eq!(Preprocessing::lite(240).resize_short_side, 275);
    }

    #[test]
    fn an_unchanged_size_is_the_image_itself() {
        let image = Rgb8 {
            width: 2,
            height: 2,
            data: (0..12).collect(),
        };
        assert_eq!(resize_bilinear(&image, 2, 2), image);
    }

    #[test]
    fn a_constant_image_stays_constant_and_weights_sum_to_one() {
        let image = Rgb8 {
            width: 37,
            height: 23,
            data: vec![200; 37 * 23 * 3],
        };
        let out = resize_bilinear(&image, 11, 50);
        assert!(out.data.iter().all(|&v| v == 200));
        for (input, output) in [(37, 11), (23, 50), (1000, 3), (3, 1000)] {
            for (_, k) in coefficients(input, output) {
                let sum: i64 = k.iter().map(|&w| w as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64);
            }
        }
    }

    #[test]
    fn halving_averages_pairs_with_the_antialiasing_triangle() {
        // 4 → 2 columns: scale 2, support 2; output 0 centres at 1.0 and weighs columns
        // 0, 1, 2 by tri(-0.25), tri(0.25), tri(0.75) = 0.75, 0.75, 0.25 (normalised by 1.75).
        let image = Rgb8 {
            width: 4,
            height: 1,
            data: [0u8, 70, 140, 210].iter().flat_map(|&v| [v; 3]).collect(),
        };
        let out = resize_bilinear(&image, 2, 1);
        let want = ((0.0 * 0.75 + 70.0 * 0.75 + 140.0 * 0.25) / 1.75_f64).round() as u8;
        assert_eq!(out.data[0], want);
    }
}
