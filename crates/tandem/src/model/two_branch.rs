//! The image branch and the text branch together.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;

use crate::config::ModelConfig;
use crate::data::Features;
use crate::error::{Error, Result};
use crate::model::Branch;
use crate::model::explicit::{self, BranchTape};
use crate::parallel::Shard;

/// Training (batch statistics, dropout from a seeded RNG) or evaluation mode.
pub enum Mode<'a> {
    /// BatchNorm uses batch statistics; dropout draws from the RNG.
    Train(&'a mut rand_chacha::ChaCha8Rng),
    /// BatchNorm uses running statistics; no dropout.
    Eval,
}

/// How a training step computes the gradients of the branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backward {
    /// Written out by hand (`model::explicit`) where it runs (f32 features on the CPU),
    /// autograd elsewhere. What training uses.
    Explicit,
    /// candle's autograd through the whole network (the reference; GPUs).
    Autograd,
}

/// A training forward's embeddings, ready for the loss, and what the branches' backward needs.
pub struct TrainForward {
    /// `[n, dim]`, unit rows.
    pub images: Tensor,
    /// `[m, dim]`, unit rows.
    pub texts: Tensor,
    /// Present on the explicit path: the embeddings above are then leaves of the loss's graph.
    tapes: Option<(BranchTape, BranchTape)>,
    /// A data-parallel rank's embeddings on autograd as its branches tracked them: with one
    /// padding row on a side without rows (`Branch::forward_train_shard`), where the
    /// embeddings above are empty.
    tracked: Option<(Tensor, Tensor)>,
}

/// Two branches mapping image and text features into one L2-normalised space.
#[derive(Debug, Clone)]
pub struct TwoBranch {
    /// Image branch.
    pub image: Branch,
    /// Text branch.
    pub text: Branch,
    /// Image feature dimension.
    pub d_image: usize,
    /// Text feature dimension.
    pub d_text: usize,
    /// The architecture.
    pub config: ModelConfig,
    /// Where the tensors live.
    pub device: Device,
}

impl TwoBranch {
    /// A freshly initialised model; `seed` fixes the initial weights.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn new(
        d_image: usize,
        d_text: usize,
        config: &ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Ok(TwoBranch {
            image: Branch::new(d_image, config, &mut rng, device)?,
            text: Branch::new(d_text, config, &mut rng, device)?,
            d_image,
            d_text,
            config: config.clone(),
            device: device.clone(),
        })
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.named()
            .into_iter()
            .filter_map(|(_, v, trainable)| trainable.then_some(v))
            .collect()
    }

    /// Every tensor by checkpoint name, with whether it is trained by gradient.
    pub fn named(&self) -> Vec<(String, Var, bool)> {
        let mut all = self.image.named("image");
        all.extend(self.text.named("text"));
        all
    }

    /// Embeds every row of `features` with one branch in evaluation mode, in chunks of `chunk`
    /// rows, and returns a row-major `[rows, dim]` buffer.
    ///
    /// # Errors
    /// [`Error::Checkpoint`]-style message when the feature dimension does not match the model.
    pub fn embed_all(
        &mut self,
        features: &Features,
        rows: &[u32],
        image_side: bool,
        chunk: usize,
    ) -> Result<Vec<f32>> {
        let expected = if image_side {
            self.d_image
        } else {
            self.d_text
        };
        if features.cols() != expected {
            return Err(Error::Config(format!(
                "the model expects {} features of dimension {expected} but the data has {}",
                if image_side { "image" } else { "text" },
                features.cols()
            )));
        }
        let mut out = Vec::with_capacity(rows.len() * self.config.dim);
        for part in rows.chunks(chunk.max(1)) {
            let x = Tensor::from_vec(
                features.gather(part)?,
                (part.len(), features.cols()),
                &self.device,
            )?;
            out.extend(self.embed_batch(&x, image_side)?);
        }
        Ok(out)
    }

    /// Embeds the rows of a row-major `[rows, cols]` buffer with one branch in evaluation
    /// mode, `chunk` rows at a time: [`TwoBranch::embed_all`] for features that are not a
    /// dataset (a caller's array), read in place.
    ///
    /// # Shapes
    /// `features: [rows * cols]` → `[rows * dim]`, row-major.
    ///
    /// # Errors
    /// [`Error::Config`] when `cols` is not the branch's input width or `features` is not a
    /// whole number of rows.
    pub fn embed_rows(
        &mut self,
        features: &[f32],
        cols: usize,
        image_side: bool,
        chunk: usize,
    ) -> Result<Vec<f32>> {
        let (expected, what) = if image_side {
            (self.d_image, "image")
        } else {
            (self.d_text, "text")
        };
        if cols != expected || !features.len().is_multiple_of(cols.max(1)) {
            return Err(Error::Config(format!(
                "the model expects {what} features of dimension {expected} but got {cols}"
            )));
        }
        let rows = features.len() / cols;
        let mut out = Vec::with_capacity(rows * self.config.dim);
        for part in features.chunks(chunk.max(1) * cols) {
            let x = Tensor::from_slice(part, (part.len() / cols, cols), &self.device)?;
            out.extend(self.embed_batch(&x, image_side)?);
        }
        Ok(out)
    }

    fn embed_batch(&mut self, x: &Tensor, image_side: bool) -> Result<Vec<f32>> {
        let branch = if image_side {
            &mut self.image
        } else {
            &mut self.text
        };
        let y = branch.forward(x, None)?;
        Ok(y.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// The training forward of a batch (batch statistics, dropout from `rng`), set up for
    /// [`TwoBranch::backward`].
    ///
    /// # Shapes
    /// `images: [n, d_image]`, `texts: [m, d_text]` → embeddings `[n, dim]`, `[m, dim]`.
    ///
    /// # Errors
    /// A tensor error when dimensions disagree.
    pub fn forward_train(
        &mut self,
        images: &Tensor,
        texts: &Tensor,
        rng: &mut rand_chacha::ChaCha8Rng,
        backward: Backward,
    ) -> Result<TrainForward> {
        if backward == Backward::Explicit
            && explicit::supported(images)
            && explicit::supported(texts)
        {
            let (ei, image_tape) = explicit::forward(&mut self.image, images, rng, None)?;
            let (et, text_tape) = explicit::forward(&mut self.text, texts, rng, None)?;
            // Leaves, so that the loss's backward stops at them and leaves their gradients.
            return Ok(TrainForward {
                images: Var::from_tensor(&ei)?.as_tensor().clone(),
                texts: Var::from_tensor(&et)?.as_tensor().clone(),
                tapes: Some((image_tape, text_tape)),
                tracked: None,
            });
        }
        let (images, texts) = self.forward(images, texts, Mode::Train(rng))?;
        Ok(TrainForward {
            images,
            texts,
            tapes: None,
            tracked: None,
        })
    }

    /// The gradients of `loss` (computed from `forward`'s embeddings) for every trainable
    /// tensor: autograd through the loss, then the branches explicitly or by autograd, as
    /// `forward` was made.
    ///
    /// # Errors
    /// A tensor error from the backward.
    pub fn backward(&self, forward: TrainForward, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Some((image_tape, text_tape)) = forward.tapes {
            for (branch, tape, embedded) in [
                (&self.image, image_tape, &forward.images),
                (&self.text, text_tape, &forward.texts),
            ] {
                if let Some(grad) = grads.remove(embedded) {
                    explicit::backward(branch, tape, &grad, &mut grads, None)?;
                }
            }
        }
        Ok(grads)
    }

    /// The training forward of one rank's rows of a data-parallel batch: BatchNorm normalises
    /// with the whole batch's statistics (summed over the ranks) and dropout draws each row's
    /// factors from its global row's place in the stream, so the rows come out as they would
    /// from [`TwoBranch::forward_train`] on the whole batch. `backward` picks the path as there:
    /// written out by hand where it runs (f32 features on the CPU), autograd elsewhere (GPUs).
    ///
    /// # Shapes
    /// `images: [image_rows.rows.len(), d_image]`, `texts: [text_rows.rows.len(), d_text]` →
    /// the rank's embeddings, `[n, dim]` and `[m, dim]`, with what
    /// [`TwoBranch::backward_shard`] needs.
    ///
    /// # Errors
    /// When another rank stopped; tensor errors when dimensions disagree.
    pub fn forward_train_shard(
        &mut self,
        (images, texts): (&Tensor, &Tensor),
        rng: &mut rand_chacha::ChaCha8Rng,
        (image_rows, text_rows): (&Shard, &Shard),
        backward: Backward,
    ) -> Result<TrainForward> {
        let explicit = backward == Backward::Explicit
            && explicit::supported(images)
            && explicit::supported(texts);
        if !explicit {
            let tracked = (
                self.image.forward_train_shard(images, rng, image_rows)?,
                self.text.forward_train_shard(texts, rng, text_rows)?,
            );
            // A padding row is not the rank's.
            let rows = |t: &Tensor, shard: &Shard| t.narrow(0, 0, shard.rows.len());
            return Ok(TrainForward {
                images: rows(&tracked.0, image_rows)?,
                texts: rows(&tracked.1, text_rows)?,
                tapes: None,
                tracked: Some(tracked),
            });
        }
        let (ei, image_tape) = explicit::forward(&mut self.image, images, rng, Some(image_rows))?;
        let (et, text_tape) = explicit::forward(&mut self.text, texts, rng, Some(text_rows))?;
        Ok(TrainForward {
            images: ei,
            texts: et,
            tapes: Some((image_tape, text_tape)),
            tracked: None,
        })
    }

    /// The backward of [`TwoBranch::forward_train_shard`] from the loss's gradient for the
    /// rank's embeddings: adds this rank's share of every trainable tensor's gradient to
    /// `grads` (the shares of all ranks sum to the whole batch's gradient).
    ///
    /// # Shapes
    /// `grad_images: [n, dim]`, `grad_texts: [m, dim]`, the rank's rows.
    ///
    /// # Errors
    /// A tensor error when shapes disagree with the forward; [`Error::Config`] when another
    /// rank stopped.
    pub fn backward_shard(
        &self,
        forward: TrainForward,
        grad_images: &Tensor,
        grad_texts: &Tensor,
        grads: &mut GradStore,
        (image_rows, text_rows): (&Shard, &Shard),
    ) -> Result<()> {
        let Some((image_tape, text_tape)) = forward.tapes else {
            return self.backward_shard_autograd(&forward, (grad_images, grad_texts), grads);
        };
        explicit::backward(
            &self.image,
            image_tape,
            grad_images,
            grads,
            Some(image_rows),
        )?;
        explicit::backward(&self.text, text_tape, grad_texts, grads, Some(text_rows))
    }

    /// [`TwoBranch::backward_shard`] on autograd: the backward of `Σ e · ∂loss/∂e` over the
    /// rank's embeddings `e` carries exactly the given gradients into the branches.
    fn backward_shard_autograd(
        &self,
        forward: &TrainForward,
        (grad_images, grad_texts): (&Tensor, &Tensor),
        grads: &mut GradStore,
    ) -> Result<()> {
        let (images, texts) = forward.tracked.as_ref().ok_or_else(|| {
            Error::Config("backward_shard needs forward_train_shard's embeddings".into())
        })?;
        // The padding row, where there is one, gets a zero gradient.
        let carried = |e: &Tensor, g: &Tensor| -> Result<Tensor> {
            let g = if e.dim(0)? == g.dim(0)? {
                g.to_dtype(e.dtype())?
            } else {
                Tensor::zeros(e.shape(), e.dtype(), e.device())?
            };
            Ok((e * g.detach())?.sum_all()?)
        };
        let surrogate = (carried(images, grad_images)? + carried(texts, grad_texts)?)?;
        let mut branch_grads = surrogate.backward()?;
        for (_, var, trainable) in self.named() {
            let Some(g) = branch_grads.remove(var.as_tensor()).filter(|_| trainable) else {
                continue;
            };
            let sum = match grads.get(var.as_tensor()) {
                Some(before) => (before + g)?,
                None => g,
            };
            grads.insert(var.as_tensor(), sum);
        }
        Ok(())
    }

    /// Embeds a batch of images and texts.
    ///
    /// # Shapes
    /// `images: [n, d_image]`, `texts: [m, d_text]` → (`[n, dim]`, `[m, dim]`).
    ///
    /// # Errors
    /// A tensor error when dimensions disagree.
    pub fn forward(
        &mut self,
        images: &Tensor,
        texts: &Tensor,
        mode: Mode<'_>,
    ) -> Result<(Tensor, Tensor)> {
        match mode {
            Mode::Train(rng) => {
                let i = self.image.forward(images, Some(&mut *rng))?;
                let t = self.text.forward(texts, Some(rng))?;
                Ok((i, t))
            }
            Mode::Eval => Ok((
                self.image.forward(images, None)?,
                self.text.forward(texts, None)?,
            )),
        }
    }
}
