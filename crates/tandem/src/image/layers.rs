//! The inference layers of EfficientNet-Lite on channels-last activations, with BatchNorm
//! folded into each convolution: 1×1 convolutions are one matrix product over every pixel of
//! the batch, the depthwise k×k convolution is a loop whose innermost axis is the channels
//! (contiguous, so it vectorises), and the stem is an im2col product.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Activations of a batch, channels last: `data[((n · h + y) · w + x) · c + ch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// Images.
    pub n: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n · h · w · c` values.
    pub data: Vec<f32>,
}

impl Activations {
    fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

/// `min(max(x, 0), 6)`.
fn relu6(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

/// BatchNorm in inference form, `y = x · scale + shift`, from its four tensors.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// `γ / √(var + eps)`.
    pub scale: Vec<f32>,
    /// `β − mean · scale`.
    pub shift: Vec<f32>,
}

impl BatchNorm {
    /// Folds `weight`, `bias`, `running_mean`, `running_var` (each `[c]`) with `eps`.
    ///
    /// # Errors
    /// A tensor error when the four lengths differ.
    pub fn fold(weight: &[f32], bias: &[f32], mean: &[f32], var: &[f32], eps: f64) -> Result<Self> {
        let c = weight.len();
        if bias.len() != c || mean.len() != c || var.len() != c {
            return Err(
                candle_core::Error::Msg("BatchNorm tensors of different lengths".into()).into(),
            );
        }
        let scale: Vec<f32> = (0..c)
            .map(|i| (weight[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32)
            .collect();
        let shift = (0..c)
            .map(|i| (bias[i] as f64 - mean[i] as f64 * scale[i] as f64) as f32)
            .collect();
        Ok(BatchNorm { scale, shift })
    }
}

/// A 1×1 convolution (no bias) followed by BatchNorm, optionally ReLU6.
#[derive(Debug, Clone)]
pub struct Pointwise {
    /// `[c_in, c_out]`, BatchNorm's scale folded in.
    weight: Tensor,
    shift: Vec<f32>,
    relu6: bool,
}

impl Pointwise {
    /// From a PyTorch weight `[c_out, c_in, 1, 1]` (as `[c_out, c_in]` values) and its BatchNorm.
    ///
    /// # Errors
    /// A tensor error when the shapes disagree.
    pub fn new(weight: &[f32], c_out: usize, bn: &BatchNorm, relu6: bool) -> Result<Self> {
        let c_in = weight.len() / c_out.max(1);
        let mut folded = vec![0f32; c_in * c_out];
        for o in 0..c_out {
            for i in 0..c_in {
                folded[i * c_out + o] = weight[o * c_in + i] * bn.scale[o];
            }
        }
        Ok(Pointwise {
            weight: Tensor::from_vec(folded, (c_in, c_out), &Device::Cpu)?,
            shift: bn.shift.clone(),
            relu6,
        })
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.shift.len()
    }

    /// `x · W + shift`, ReLU6 if asked, plus `residual` when given.
    ///
    /// # Shapes
    /// `x`: `[n, h, w, c_in]` → `[n, h, w, c_out]`; `residual` the shape of the output.
    ///
    /// # Errors
    /// A tensor error when `x` has not `c_in` channels.
    pub fn forward(&self, x: &Activations, residual: Option<&Activations>) -> Result<Activations> {
        let rows = x.pixels();
        let input = Tensor::from_slice(&x.data, (rows, x.c), &Device::Cpu)?;
        let mut data = input
            .matmul(&self.weight)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let c = self.c_out();
        data.par_chunks_mut(c * 64)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (p, row) in out.chunks_mut(c).enumerate() {
                    for (v, s) in row.iter_mut().zip(&self.shift) {
                        *v += s;
                    }
                    if self.relu6 {
                        row.iter_mut().for_each(|v| *v = relu6(*v));
                    }
                    if let Some(r) = residual {
                        let at = (chunk * 64 + p) * c;
                        for (v, r) in row.iter_mut().zip(&r.data[at..at + c]) {
                            *v += r;
                        }
                    }
                }
            });
        Ok(Activations { c, data, ..*x })
    }
}

/// TensorFlow's "SAME" padding: output `⌈in / stride⌉`, the odd extra pixel after (bottom/right).
///
/// Returns `(out, pad_before)`.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (out, total / 2)
}

/// A depthwise k×k convolution (one filter per channel) followed by BatchNorm and ReLU6.
#[derive(Debug, Clone)]
pub struct Depthwise {
    kernel: usize,
    stride: usize,
    /// `[k · k, c]`: tap-major, so each tap's weights for all channels are contiguous.
    weight: Vec<f32>,
    shift: Vec<f32>,
}

impl Depthwise {
    /// From a PyTorch weight `[c, 1, k, k]` and its BatchNorm.
    pub fn new(weight: &[f32], kernel: usize, stride: usize, bn: &BatchNorm) -> Self {
        let c = bn.scale.len();
        let taps = kernel * kernel;
        let mut folded = vec![0f32; taps * c];
        for ch in 0..c {
            for t in 0..taps {
                folded[t * c + ch] = weight[ch * taps + t] * bn.scale[ch];
            }
        }
        Depthwise {
            kernel,
            stride,
            weight: folded,
            shift: bn.shift.clone(),
        }
    }

    /// The convolution with SAME padding, then ReLU6.
    ///
    /// # Shapes
    /// `[n, h, w, c]` → `[n, ⌈h/s⌉, ⌈w/s⌉, c]`.
    pub fn forward(&self, x: &Activations) -> Activations {
        let (k, s, c) = (self.kernel, self.stride, x.c);
        let (oh, top) = same_padding(x.h, k, s);
        let (ow, left) = same_padding(x.w, k, s);
        let mut data = vec![0f32; x.n * oh * ow * c];
        data.par_chunks_mut(ow * c)
            .enumerate()
            .for_each(|(row, out)| {
                let (img, oy) = (row / oh, row % oh);
                let image = &x.data[img * x.h * x.w * c..(img + 1) * x.h * x.w * c];
                for ox in 0..ow {
                    let acc = &mut out[ox * c..(ox + 1) * c];
                    acc.copy_from_slice(&self.shift);
                    for ky in 0..k {
                        let Some(iy) = (oy * s + ky).checked_sub(top).filter(|&y| y < x.h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = (ox * s + kx).checked_sub(left).filter(|&v| v < x.w)
                            else {
                                continue;
                            };
                            let input = &image[(iy * x.w + ix) * c..(iy * x.w + ix + 1) * c];
                            let tap = &self.weight[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                            for ((a, w), v) in acc.iter_mut().zip(tap).zip(input) {
                                *a += w * v;
                            }
                        }
                    }
                    acc.iter_mut().for_each(|v| *v = relu6(*v));
                }
            });
        Activations {
            h: oh,
            w: ow,
            data,
            ..*x
        }
    }
}

/// The stem: a k×k convolution of stride s from few channels (RGB), BatchNorm, ReLU6, as an
/// im2col product.
#[derive(Debug, Clone)]
pub struct Stem {
    kernel: usize,
    stride: usize,
    /// `[k · k · c_in, c_out]`, rows in (ky, kx, c_in) order.
    weight: Tensor,
    shift: Vec<f32>,
}

impl Stem {
    /// From a PyTorch weight `[c_out, c_in, k, k]` and its BatchNorm.
    ///
    /// # Errors
    /// A tensor error when the shapes disagree.
    pub fn new(
        weight: &[f32],
        c_in: usize,
        kernel: usize,
        stride: usize,
        bn: &BatchNorm,
    ) -> Result<Self> {
        let c_out = bn.scale.len();
        let rows = kernel * kernel * c_in;
        let mut folded = vec![0f32; rows * c_out];
        for o in 0..c_out {
            for i in 0..c_in {
                for t in 0..kernel * kernel {
                    folded[(t * c_in + i) * c_out + o] =
                        weight[(o * c_in + i) * kernel * kernel + t] * bn.scale[o];
                }
            }
        }
        Ok(Stem {
            kernel,
            stride,
            weight: Tensor::from_vec(folded, (rows, c_out), &Device::Cpu)?,
            shift: bn.shift.clone(),
        })
    }

    /// The convolution with SAME padding, then ReLU6.
    ///
    /// # Shapes
    /// `[n, h, w, c_in]` → `[n, ⌈h/s⌉, ⌈w/s⌉, c_out]`.
    ///
    /// # Errors
    /// A tensor error when `x` has the wrong number of channels.
    pub fn forward(&self, x: &Activations) -> Result<Activations> {
        let (k, s, c) = (self.kernel, self.stride, x.c);
        let (oh, top) = same_padding(x.h, k, s);
        let (ow, left) = same_padding(x.w, k, s);
        let cols = k * k * c;
        let mut patches = vec![0f32; x.n * oh * ow * cols];
        patches
            .par_chunks_mut(ow * cols)
            .enumerate()
            .for_each(|(row, out)| {
                let (img, oy) = (row / oh, row % oh);
                let image = &x.data[img * x.h * x.w * c..(img + 1) * x.h * x.w * c];
                for ox in 0..ow {
                    for ky in 0..k {
                        let Some(iy) = (oy * s + ky).checked_sub(top).filter(|&y| y < x.h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = (ox * s + kx).checked_sub(left).filter(|&v| v < x.w)
                            else {
                                continue;
                            };
                            let at = ox * cols + (ky * k + kx) * c;
                            out[at..at + c].copy_from_slice(
                                &image[(iy * x.w + ix) * c..(iy * x.w + ix + 1) * c],
                            );
                        }
                    }
                }
            });
        let patches = Tensor::from_vec(patches, (x.n * oh * ow, cols), &Device::Cpu)?;
        let mut data = patches
            .matmul(&self.weight)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let c_out = self.shift.len();
        data.par_chunks_mut(c_out).for_each(|row| {
            for (v, sh) in row.iter_mut().zip(&self.shift) {
                *v = relu6(*v + sh);
            }
        });
        Ok(Activations {
            h: oh,
            w: ow,
            c: c_out,
            data,
            ..*x
        })
    }
}

/// The mean over every pixel of each image.
///
/// # Shapes
/// `[n, h, w, c]` → `n` rows of `c`.
pub fn global_average(x: &Activations) -> Vec<Vec<f32>> {
    let hw = x.h * x.w;
    x.data
        .par_chunks(hw * x.c)
        .map(|image| {
            let mut sum = vec![0f64; x.c];
            for px in image.chunks(x.c) {
                for (s, v) in sum.iter_mut().zip(px) {
                    *s += *v as f64;
                }
            }
            sum.iter().map(|s| (s / hw as f64) as f32).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct NCHW-style convolution with explicit zero padding, the definition.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &Activations,
        weight: &[f32],
        c_out: usize,
        k: usize,
        s: usize,
        groups_depthwise: bool,
    ) -> Activations {
        let (oh, top) = same_padding(x.h, k, s);
        let (ow, left) = same_padding(x.w, k, s);
        let mut data = vec![0f32; x.n * oh * ow * c_out];
        for n in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..c_out {
                        let mut acc = 0f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - top as isize;
                                let ix = (ox * s + kx) as isize - left as isize;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let ins: Vec<usize> = if groups_depthwise {
                                    vec![o]
                                } else {
                                    (0..x.c).collect()
                                };
                                for i in ins {
                                    let w = if groups_depthwise {
                                        weight[o * k * k + ky * k + kx]
                                    } else {
                                        weight[((o * x.c + i) * k + ky) * k + kx]
                                    };
                                    acc += w as f64
                                        * x.data[((n * x.h + iy) * x.w + ix) * x.c + i] as f64;
                                }
                            }
                        }
                        data[((n * oh + oy) * ow + ox) * c_out + o] = relu6(acc as f32);
                    }
                }
            }
        }
        Activations {
            n: x.n,
            h: oh,
            w: ow,
            c: c_out,
            data,
        }
    }

    fn ramp(n: usize, h: usize, w: usize, c: usize) -> Activations {
        let data = (0..n * h * w * c)
            .map(|i| ((i * 7919 % 97) as f32 - 48.0) / 40.0)
            .collect();
        Activations { n, h, w, c, data }
    }

    fn identity_bn(c: usize) -> BatchNorm {
        BatchNorm {
            scale: vec![1.0; c],
            shift: vec![0.0; c],
        }
    }

    fn assert_close(a: &Activations, b: &Activations) {
        assert_eq!((a.n, a.h, a.w, a.c), (b.n, b.h, b.w, b.c));
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(224, 3, 2), (112, 0));
        assert_eq!(same_padding(56, 5, 2), (28, 1));
        assert_eq!(same_padding(7, 3, 1), (7, 1));
        assert_eq!(same_padding(7, 5, 1), (7, 2));
        assert_eq!(same_padding(5, 3, 2), (3, 1));
    }

    #[test]
    fn depthwise_equals_the_definition() {
        for (h, w, k, s) in [(7, 9, 3, 1), (8, 6, 3, 2), (9, 9, 5, 2), (5, 4, 5, 1)] {
            let x = ramp(2, h, w, 6);
            let weight: Vec<f32> = (0..6 * k * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let got = Depthwise::new(&weight, k, s, &identity_bn(6)).forward(&x);
            assert_close(&got, &naive_conv(&x, &weight, 6, k, s, true));
        }
    }

    #[test]
    fn stem_equals_the_definition() {
        let x = ramp(2, 9, 7, 3);
        let weight: Vec<f32> = (0..4 * 3 * 9)
            .map(|i| ((i * 13 % 11) as f32 - 5.0) / 6.0)
            .collect();
        let got = Stem::new(&weight, 3, 3, 2, &identity_bn(4))
            .unwrap()
            .forward(&x)
            .unwrap();
        assert_close(&got, &naive_conv(&x, &weight, 4, 3, 2, false));
    }

    #[test]
    fn pointwise_folds_batch_norm_and_adds_the_residual() {
        let x = ramp(1, 2, 3, 4);
        let weight: Vec<f32> = (0..5 * 4).map(|i| i as f32 / 10.0 - 1.0).collect();
        let bn = BatchNorm::fold(
            &[1.0, 2.0, 0.5, 1.0, 3.0],
            &[0.1; 5],
            &[0.2; 5],
            &[4.0; 5],
            0.0,
        )
        .unwrap();
        let residual = ramp(1, 2, 3, 5);
        let got = Pointwise::new(&weight, 5, &bn, false)
            .unwrap()
            .forward(&x, Some(&residual))
            .unwrap();
        for p in 0..6 {
            for o in 0..5 {
                let conv: f32 = (0..4).map(|i| weight[o * 4 + i] * x.data[p * 4 + i]).sum();
                let gamma = [1.0, 2.0, 0.5, 1.0, 3.0][o];
                let want = (conv - 0.2) * gamma / 2.0 + 0.1 + residual.data[p * 5 + o];
                assert!((got.data[p * 5 + o] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn global_average_is_the_mean_per_channel() {
        let x = Activations {
            n: 2,
            h: 1,
            w: 2,
            c: 2,
            data: vec![1., 2., 3., 4., 5., 6., 7., 8.],
        };
        assert_eq!(global_average(&x), vec![vec![2., 3.], vec![6., 7.]]);
    }
}
