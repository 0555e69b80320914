//! EfficientNet-Lite (Tan & Le 2019, the Lite variants of the TensorFlow release): the stem, 16+
//! MBConv blocks without squeeze-excitation, ReLU6, the 1280-channel head; the pooled head is
//! the image feature. Weights are PyTorch state dicts with the key names of the
//! `efficientnet-lite-pytorch` package (`_conv_stem`, `_blocks.N._depthwise_conv`, ...).

use std::collections::HashMap;

use candle_core::Tensor;

use super::layers::{Activations, BatchNorm, Depthwise, Pointwise, Stem, global_average};
use crate::error::{Error, Result};

/// TensorFlow's BatchNorm epsilon, which the converted checkpoints keep.
const BN_EPS: f64 = 1e-3;

/// `(repeats, kernel, stride, expand ratio, in channels, out channels)` of each stage of Lite0,
/// from `efficientnet_lite_builder.py`.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Which member of the family: its width and depth multipliers and input size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// `efficientnet-lite0` … `-lite4`.
    pub name: &'static str,
    /// Channel multiplier.
    pub width: f64,
    /// Repeat multiplier.
    pub depth: f64,
    /// Input side in pixels.
    pub image_size: usize,
}

impl Variant {
    /// The five published sizes.
    pub const ALL: [Variant; 5] = [
        Variant {
            name: "efficientnet-lite0",
            width: 1.0,
            depth: 1.0,
            image_size: 224,
        },
        Variant {
            name: "efficientnet-lite1",
            width: 1.0,
            depth: 1.1,
            image_size: 240,
        },
        Variant {
            name: "efficientnet-lite2",
            width: 1.1,
            depth: 1.2,
            image_size: 260,
        },
        Variant {
            name: "efficientnet-lite3",
            width: 1.2,
            depth: 1.4,
            image_size: 280,
        },
        Variant {
            name: "efficientnet-lite4",
            width: 1.4,
            depth: 1.8,
            image_size: 300,
        },
    ];

    /// The variant called `name`.
    pub fn named(name: &str) -> Option<Variant> {
        Self::ALL.into_iter().find(|v| v.name == name)
    }

    /// Channels scaled by the width multiplier, rounded to a multiple of 8 as TensorFlow does.
    fn filters(&self, c: usize) -> usize {
        let scaled = c as f64 * self.width;
        let rounded = ((scaled + 4.0) as usize / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded + 8
        } else {
            rounded
        }
    }

    /// Repeats scaled by the depth multiplier (rounded up); Lite keeps the first and last stage.
    fn repeats(&self, stage: usize, r: usize) -> usize {
        if stage == 0 || stage == STAGES.len() - 1 {
            r
        } else {
            (self.depth * r as f64).ceil() as usize
        }
    }
}

/// One inverted-residual block.
#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: &Activations) -> Result<Activations> {
        let expanded = match &self.expand {
            Some(e) => e.forward(x, None)?,
            None => x.clone(),
        };
        let y = self.depthwise.forward(&expanded);
        drop(expanded);
        self.project.forward(&y, self.residual.then_some(x))
    }
}

/// An EfficientNet-Lite network for inference.
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    variant: Variant,
    stem: Stem,
    blocks: Vec<MbConv>,
    head: Pointwise,
    /// The ImageNet classifier `[1280, 1000]` and its bias, when the weights have it.
    classifier: Option<(Tensor, Tensor)>,
}

/// The state dict's tensors by name, flattened, each taken once.
struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn take(&mut self, name: &str, numel: usize) -> Result<Vec<f32>> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| missing(format!("tensor `{name}` is missing")))?;
        if t.elem_count() != numel {
            return Err(missing(format!(
                "tensor `{name}` has {} values, expected {numel}",
                t.elem_count()
            )));
        }
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    fn batch_norm(&mut self, prefix: &str, c: usize) -> Result<BatchNorm> {
        BatchNorm::fold(
            &self.take(&format!("{prefix}.weight"), c)?,
            &self.take(&format!("{prefix}.bias"), c)?,
            &self.take(&format!("{prefix}.running_mean"), c)?,
            &self.take(&format!("{prefix}.running_var"), c)?,
            BN_EPS,
        )
    }

    fn pointwise(
        &mut self,
        conv: &str,
        bn: &str,
        c_in: usize,
        c_out: usize,
        relu6: bool,
    ) -> Result<Pointwise> {
        let w = self.take(&format!("{conv}.weight"), c_out * c_in)?;
        let bn = self.batch_norm(bn, c_out)?;
        Pointwise::new(&w, c_out, &bn, relu6)
    }
}

/// A structural problem of the weights, completed with the file by the caller.
fn missing(problem: String) -> Error {
    Error::Tensor(candle_core::Error::Msg(problem))
}

impl EfficientNetLite {
    /// Builds `variant` from a state dict (name → tensor, as [`super::torch_legacy`] reads).
    ///
    /// # Errors
    /// A tensor error naming the first tensor that is missing or of the wrong size.
    pub fn from_state_dict(variant: Variant, tensors: Vec<(String, Tensor)>) -> Result<Self> {
        let mut w = Weights {
            tensors: tensors.into_iter().collect(),
        };
        let stem_c = 32;
        let stem = Stem::new(
            &w.take("_conv_stem.weight", stem_c * 27)?,
            3,
            3,
            2,
            &w.batch_norm("_bn0", stem_c)?,
        )?;
        let mut blocks = Vec::new();
        let mut c_last = stem_c;
        for (stage, &(r, k, s, e, c_in, c_out)) in STAGES.iter().enumerate() {
            let c_in = if stage == 0 {
                stem_c
            } else {
                variant.filters(c_in)
            };
            let c_out = variant.filters(c_out);
            for rep in 0..variant.repeats(stage, r) {
                let (inp, stride) = if rep == 0 { (c_in, s) } else { (c_out, 1) };
                let p = format!("_blocks.{}", blocks.len());
                let mid = inp * e;
                let expand = (e != 1)
                    .then(|| {
                        w.pointwise(
                            &format!("{p}._expand_conv"),
                            &format!("{p}._bn0"),
                            inp,
                            mid,
                            true,
                        )
                    })
                    .transpose()?;
                let dw = w.take(&format!("{p}._depthwise_conv.weight"), mid * k * k)?;
                let depthwise =
                    Depthwise::new(&dw, k, stride, &w.batch_norm(&format!("{p}._bn1"), mid)?);
                let project = w.pointwise(
                    &format!("{p}._project_conv"),
                    &format!("{p}._bn2"),
                    mid,
                    c_out,
                    false,
                )?;
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && inp == c_out,
                });
            }
            c_last = c_out;
        }
        let head = w.pointwise("_conv_head", "_bn1", c_last, 1280, true)?;
        let classifier = match (w.tensors.remove("_fc.weight"), w.tensors.remove("_fc.bias")) {
            (Some(weight), Some(bias)) => Some((weight.t()?.contiguous()?, bias)),
            _ => None,
        };
        Ok(EfficientNetLite {
            variant,
            stem,
            blocks,
            head,
            classifier,
        })
    }

    /// Which member of the family this is.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The pooled 1280-d head activations of a batch of preprocessed images.
    ///
    /// # Shapes
    /// `images`: `n` images as `[size, size, 3]` channels-last values (see
    /// `image::preprocess`) → `n` rows of 1280.
    ///
    /// # Errors
    /// A tensor error when a shape is wrong.
    pub fn features(&self, images: Activations) -> Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        // The products of one small batch keep only one core busy (candle's gemm does not split
        // these shapes), so the batch is cut into one part per core, run side by side.
        let per_image = images.h * images.w * images.c;
        let parts = rayon::current_num_threads().min(images.n).max(1);
        let chunk = images.n.div_ceil(parts).max(1);
        let results: Vec<Result<Vec<Vec<f32>>>> = images
            .data
            .par_chunks(chunk * per_image)
            .map(|part| {
                let n = part.len() / per_image;
                self.features_of(Activations {
                    n,
                    data: part.to_vec(),
                    ..images
                })
            })
            .collect();
        let mut out = Vec::with_capacity(images.n);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    /// [`Self::features`] of one part of a batch.
    fn features_of(&self, images: Activations) -> Result<Vec<Vec<f32>>> {
        let mut x = self.stem.forward(&images)?;
        drop(images);
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(global_average(&self.head.forward(&x, None)?))
    }

    /// ImageNet logits of pooled features, when the weights include the classifier.
    ///
    /// # Shapes
    /// `features`: rows of 1280 → rows of 1000.
    ///
    /// # Errors
    /// A tensor error when the weights had no classifier.
    pub fn logits(&self, features: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let (weight, bias) = self
            .classifier
            .as_ref()
            .ok_or_else(|| missing("the weights have no `_fc` classifier".into()))?;
        let flat: Vec<f32> = features.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (features.len(), weight.dim(0)?), weight.device())?;
        Ok(x.matmul(weight)?.broadcast_add(bias)?.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_as_tensorflow() {
        let lite2 = Variant::named("efficientnet-lite2").unwrap();
        assert_eq!(lite2.filters(16), 16);
        assert_eq!(lite2.filters(24), 24);
        assert_eq!(lite2.filters(40), 48);
        assert_eq!(lite2.filters(320), 352);
        let lite4 = Variant::named("efficientnet-lite4").unwrap();
        assert_eq!(lite4.filters(24), 32);
        assert_eq!(lite4.repeats(1, 2), 4);
        assert_eq!(lite4.repeats(6, 1), 1);
        assert_eq!(
            Variant::named("efficientnet-lite0").unwrap().filters(112),
            112
        );
    }

    #[test]
    fn lite0_has_sixteen_blocks() {
        let v = Variant::named("efficientnet-lite0").unwrap();
        let n: usize = STAGES
            .iter()
            .enumerate()
            .map(|(i, s)| v.repeats(i, s.0))
            .sum();
        assert_eq!(n, 16);
    }
}
