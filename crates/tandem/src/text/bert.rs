//! The BERT encoder of a sentence-transformers model (Devlin et al. 2019), inference only.
//!
//! The weights, their names and the arithmetic are those of candle-transformers' `BertModel`
//! and of Hugging Face's `BertModel`, with three changes that make it faster than PyTorch on a
//! CPU: the attention's scale, mask and softmax are one pass over the scores (candle's BERT
//! runs five, each allocating a tensor of the scores' size); a dense layer's bias and what
//! follows it (the residual, or GELU) are one pass over its product; and GELU is PyTorch's
//! vectorised formula (`super::gelu`) instead of libm's `erf` per element. A dense layer also
//! keeps its weight transposed, `[in, out]`, as the product reads it (gemm ran the product
//! with the transposed view of candle's `[out, in]` at 0.7–0.8 of the rate with the plain
//! layout), and the query, key and value are one product of their three weights side by side.

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

use super::gelu::gelu_slice;

/// Token, position and token-type embeddings, summed and normalised.
struct Embeddings {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let width = config.hidden_size;
        Ok(Embeddings {
            words: candle_nn::embedding(config.vocab_size, width, vb.pp("word_embeddings"))?,
            positions: candle_nn::embedding(
                config.max_position_embeddings,
                width,
                vb.pp("position_embeddings"),
            )?,
            token_types: candle_nn::embedding(
                config.type_vocab_size,
                width,
                vb.pp("token_type_embeddings"),
            )?,
            norm: candle_nn::layer_norm(width, config.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, ids: &Tensor, token_types: &Tensor) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let summed = (self.words.forward(ids)? + self.token_types.forward(token_types)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        self.norm.forward(&summed)
    }
}

/// One transformer layer: self-attention, then the feed-forward block, each with its residual
/// and layer norm.
struct Layer {
    /// The query, key and value, `[width, 3 · width]`.
    query_key_value: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    act: HiddenAct,
    out: Dense,
    out_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let (width, inner) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps;
        let attention = vb.pp("attention");
        let linear = |vb: VarBuilder, from, to| candle_nn::linear(from, to, vb);
        let one = |vb: VarBuilder, from, to| Dense::side_by_side(&[linear(vb, from, to)?]);
        let [query, key, value] = ["query", "key", "value"]
            .map(|name| linear(attention.pp(format!("self.{name}")), width, width));
        Ok(Layer {
            query_key_value: Dense::side_by_side(&[query?, key?, value?])?,
            attention_out: one(attention.pp("output.dense"), width, width)?,
            attention_norm: candle_nn::layer_norm(width, eps, attention.pp("output.LayerNorm"))?,
            intermediate: one(vb.pp("intermediate.dense"), width, inner)?,
            act: config.hidden_act,
            out: one(vb.pp("output.dense"), inner, width)?,
            out_norm: candle_nn::layer_norm(width, eps, vb.pp("output.LayerNorm"))?,
            heads: config.num_attention_heads,
        })
    }

    /// `[b, len, width]` → `[b, len, width]`; `mask: [b, len]`, 1 for a real token.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, len, width) = x.dims3()?;
        let head = width / self.heads;
        // [b, len, 3 · width] → [3, b, heads, len, head]: the query, key and value per head.
        let qkv = dense(x, &self.query_key_value, Then::Nothing)?
            .reshape((b, len, 3, self.heads, head))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?; // [b, heads, len, len]
        let probs = masked_softmax(&scores, mask, 1.0 / (head as f64).sqrt())?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, len, width))?;
        let attended =
            self.attention_norm
                .forward(&dense(&context, &self.attention_out, Then::Add(x))?)?;
        let hidden = match self.act {
            HiddenAct::Gelu => dense(&attended, &self.intermediate, Then::Gelu)?,
            HiddenAct::GeluApproximate => {
                dense(&attended, &self.intermediate, Then::Nothing)?.gelu()?
            }
            HiddenAct::Relu => dense(&attended, &self.intermediate, Then::Nothing)?.relu()?,
        };
        self.out_norm
            .forward(&dense(&hidden, &self.out, Then::Add(&attended))?)
    }
}

/// What follows a dense layer's bias.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    /// A residual: `x Wᵀ + b + residual`.
    Add(&'a Tensor),
    /// `gelu(x Wᵀ + b)`.
    Gelu,
}

/// A dense layer as the product reads it: the weight transposed, `[in, out]`, and the bias
/// as values besides the tensor.
struct Dense {
    weight: Tensor,
    bias: Tensor,
    bias_values: Vec<f32>,
}

impl Dense {
    /// `linears` as one layer whose outputs are theirs side by side (one linear: itself).
    fn side_by_side(linears: &[candle_nn::Linear]) -> Result<Self> {
        let mut weights = Vec::with_capacity(linears.len());
        let mut biases = Vec::with_capacity(linears.len());
        for linear in linears {
            let Some(bias) = linear.bias() else {
                candle_core::bail!("a BERT dense layer without a bias");
            };
            weights.push(linear.weight().t()?);
            biases.push(bias.clone());
        }
        let bias = Tensor::cat(&biases, 0)?;
        Ok(Dense {
            weight: Tensor::cat(&weights, 1)?.contiguous()?,
            bias_values: bias.to_dtype(DType::F32)?.to_vec1()?,
            bias,
        })
    }
}

/// `layer` applied to `x: [b, len, in]` → `[b, len, out]`, and then `then`, with the bias,
/// the residual and the activation in one pass over the product on the CPU (candle's
/// `Linear` and the tensor ops would make a tensor for each). The same f32 operations in the
/// same order: `(p + b) + r`, `gelu(p + b)`.
fn dense(x: &Tensor, layer: &Dense, then: Then<'_>) -> Result<Tensor> {
    let (b, len, k) = x.dims3()?;
    let product = x
        .reshape((b * len, k))?
        .matmul(&layer.weight)?
        .reshape((b, len, ()))?;
    if !product.device().is_cpu() || product.dtype() != DType::F32 {
        let biased = product.broadcast_add(&layer.bias)?;
        return match then {
            Then::Nothing => Ok(biased),
            Then::Add(residual) => biased + residual,
            Then::Gelu => biased.gelu_erf(),
        };
    }
    // The product is this function's own tensor: the pass writes into it.
    let epilogue = Epilogue {
        bias: &layer.bias_values,
        gelu: matches!(then, Then::Gelu),
    };
    match then {
        Then::Add(residual) => product.inplace_op2(&residual.contiguous()?, &epilogue)?,
        Then::Nothing | Then::Gelu => product.inplace_op1(&epilogue)?,
    }
    Ok(product)
}

/// The pass after a product, in place: `p + bias` per row, then GELU or `+ residual`.
struct Epilogue<'a> {
    bias: &'a [f32],
    gelu: bool,
}

impl Epilogue<'_> {
    /// The product's values with the bias added.
    fn biased<'s>(&self, storage: &'s mut CpuStorage, layout: &Layout) -> Result<&'s mut [f32]> {
        let (CpuStorage::F32(values), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("dense: a contiguous f32 product on the CPU");
        };
        let values = &mut values[start..end];
        for row in values.chunks_mut(self.bias.len().max(1)) {
            for (v, b) in row.iter_mut().zip(self.bias) {
                *v += b;
            }
        }
        Ok(values)
    }
}

impl InplaceOp1 for Epilogue<'_> {
    fn name(&self) -> &'static str {
        "dense_epilogue"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let values = self.biased(storage, layout)?;
        if self.gelu {
            gelu_slice(values);
        }
        Ok(())
    }
}

impl InplaceOp2 for Epilogue<'_> {
    fn name(&self) -> &'static str {
        "dense_epilogue_residual"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<()> {
        let values = self.biased(storage, layout)?;
        let (CpuStorage::F32(residual), Some((start, end))) =
            (residual, residual_layout.contiguous_offsets())
        else {
            candle_core::bail!("dense: a contiguous f32 residual on the CPU");
        };
        if end - start != values.len() {
            candle_core::bail!(
                "dense: a residual of {} values for {}",
                end - start,
                values.len()
            );
        }
        for (v, r) in values.iter_mut().zip(&residual[start..end]) {
            *v += r;
        }
        Ok(())
    }
}

/// `softmax(scale · scores + (1 − mask) · f32::MIN)` over the last dimension, as BERT masks
/// padding (the extended attention mask of Hugging Face and candle), in one pass per row.
///
/// # Shapes
/// `scores: [b, heads, len, len]`, `mask: [b, len]` (f32, 1 for a real token).
fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if !scores.device().is_cpu() {
        let additive = ((1.0 - mask)? * f64::from(f32::MIN))?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        let scaled = (scores * scale)?.broadcast_add(&additive)?;
        return candle_nn::ops::softmax_last_dim(&scaled);
    }
    let (b, heads, rows, len) = scores.dims4()?;
    let mut values = scores.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mask = mask.flatten_all()?.to_vec1::<f32>()?;
    let scale = scale as f32;
    for (row, index) in values.chunks_mut(len).zip(0..) {
        let sequence = index / (heads * rows);
        softmax_row(row, &mask[sequence * len..(sequence + 1) * len], scale);
    }
    Tensor::from_vec(values, (b, heads, rows, len), &candle_core::Device::Cpu)
}

/// One row of [`masked_softmax`], in place: the same f32 operations as candle's scale, mask
/// add and `softmax_last_dim` (max, `exp(x − max)`, sum, divide).
fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32) {
    for (x, &m) in row.iter_mut().zip(mask) {
        *x = *x * scale + (1.0 - m) * f32::MIN;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// A BERT encoder: token ids to the last layer's hidden states.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// The weights under `vb` (`embeddings.*`, `encoder.layer.N.*`, or the same under
    /// `bert.` as Hugging Face's pretraining checkpoints name them).
    ///
    /// # Errors
    /// candle's error naming the first missing or misshapen tensor.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp(config.model_type.as_deref().unwrap_or("bert"))
        };
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<_>>()?;
        Ok(Bert {
            embeddings: Embeddings::load(vb.pp("embeddings"), config)?,
            layers,
        })
    }

    /// The last layer's hidden states.
    ///
    /// # Shapes
    /// `ids, token_types: [b, len]` (u32), `mask: [b, len]` (u32, 1 for a real token) →
    /// `[b, len, hidden]`.
    ///
    /// # Errors
    /// candle's errors for mismatched shapes.
    pub fn forward(&self, ids: &Tensor, token_types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask = mask.to_dtype(DType::F32)?;
        let mut x = self.embeddings.forward(ids, token_types)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The product against candle's `Linear` (the same values to rounding: the transposed
    /// weight changes gemm's order of additions), and the epilogue against the product
    /// followed by candle's ops, bit for bit.
    #[test]
    fn dense_equals_candles_linear_and_ops() {
        use candle_nn::Module;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut draw = |shape: &[usize]| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        let (x, residual) = (draw(&[2, 3, 8]), draw(&[2, 3, 5]));
        let linear = candle_nn::Linear::new(draw(&[5, 8]), Some(draw(&[5])));
        let layer = Dense::side_by_side(std::slice::from_ref(&linear)).unwrap();
        let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let bits = |t: &Tensor| -> Vec<u32> { values(t).iter().map(|x| x.to_bits()).collect() };
        let plain = dense(&x, &layer, Then::Nothing).unwrap();
        // Eight products of |x|, |w| < 2 and a bias: each value is within 40 of zero.
        for (got, want) in values(&plain)
            .iter()
            .zip(values(&linear.forward(&x).unwrap()))
        {
            assert!(
                (got - want).abs() <= 40.0 * 4.0 * f32::EPSILON,
                "{got} vs {want}"
            );
        }
        let added = (&plain + &residual).unwrap();
        let got = dense(&x, &layer, Then::Add(&residual)).unwrap();
        assert_eq!(bits(&got), bits(&added));
        let mut activated = values(&plain);
        gelu_slice(&mut activated);
        let got = dense(&x, &layer, Then::Gelu).unwrap();
        assert_eq!(got.dims(), &[2, 3, 5]);
        assert_eq!(values(&got), activated);
        // Side by side, two layers give each one's outputs, bit for bit.
        let other = candle_nn::Linear::new(draw(&[3, 8]), Some(draw(&[3])));
        let alone = Dense::side_by_side(std::slice::from_ref(&other)).unwrap();
        let both = Dense::side_by_side(&[linear, other]).unwrap();
        let got = dense(&x, &both, Then::Nothing).unwrap();
        let want = Tensor::cat(&[plain, dense(&x, &alone, Then::Nothing).unwrap()], 2).unwrap();
        assert_eq!(bits(&got), bits(&want));
    }

    #[test]
    fn one_pass_softmax_equals_candles_five() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (b, heads, len) = (3, 2, 5);
        let scores: Vec<f32> = (0..b * heads * len * len)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let scores = Tensor::from_vec(scores, (b, heads, len, len), &Device::Cpu).unwrap();
        // Sequences of 5, 3 and 1 real tokens.
        let mask: Vec<f32> = [5, 3, 1]
            .iter()
            .flat_map(|&n| (0..len).map(move |i| f32::from(u8::from(i < n))))
            .collect();
        let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
        let got = masked_softmax(&scores, &mask, 0.125).unwrap();
        let additive = ((1.0 - &mask).unwrap() * f64::from(f32::MIN))
            .unwrap()
            .unsqueeze(1)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let want = candle_nn::ops::softmax(
            &(&scores * 0.125).unwrap().broadcast_add(&additive).unwrap(),
            candle_core::D::Minus1,
        )
        .unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-7, "{g} against {w}");
        }
        // Padding gets no weight; each row sums to one.
        let probs = masked_softmax(&scores, &mask, 0.125).unwrap();
        let last: Vec<f32> = probs
            .get(2)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&last[1..], &[0.0; 4]);
        assert!((last[0] - 1.0).abs() < 1e-7);
    }
}
