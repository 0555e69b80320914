//! The image branch and the text branch together.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;

use crate::config::ModelConfig;
use crate::data::Matrix;
use crate::error::{Error, Result};
use crate::model::Branch;

/// Training (batch statistics, dropout from a seeded RNG) or evaluation mode.
pub enum Mode<'a> {
    /// BatchNorm uses batch statistics; dropout draws from the RNG.
    Train(&'a mut rand_chacha::ChaCha8Rng),
    /// BatchNorm uses running statistics; no dropout.
    Eval,
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
        features: &Matrix,
        rows: &[u32],
        image_side: bool,
        chunk: usize,
    ) -> Result<Vec<f32>> {
        let expected = if image_side {
            self.d_image
        } else {
            self.d_text
        };
        if features.cols != expected {
            return Err(Error::Config(format!(
                "the model expects {} features of dimension {expected} but the data has {}",
                if image_side { "image" } else { "text" },
                features.cols
            )));
        }
        let mut out = Vec::with_capacity(rows.len() * self.config.dim);
        for part in rows.chunks(chunk.max(1)) {
            let x = Tensor::from_vec(
                features.gather(part),
                (part.len(), features.cols),
                &self.device,
            )?;
            let branch = if image_side {
                &mut self.image
            } else {
                &mut self.text
            };
            let y = branch.forward(&x, None)?;
            out.extend(
                y.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
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
