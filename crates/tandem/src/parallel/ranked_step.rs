//! One rank's forward and backward of a data-parallel step.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::data::Batch;
use crate::error::Result;
use crate::model::{Backward, TrainForward, TwoBranch};
use crate::parallel::{
    BatchShare, Collective, Shard, gather_rows, local_rows, sum_model_gradients,
};

/// A batch as one rank of a group trains it.
pub(crate) struct RankedStep<'a> {
    collective: &'a Arc<dyn Collective>,
    shares: Vec<BatchShare>,
    images: usize,
    texts: usize,
}

impl<'a> RankedStep<'a> {
    /// This rank's part in `batch`.
    pub(crate) fn new(collective: &'a Arc<dyn Collective>, batch: &Batch) -> Self {
        RankedStep {
            collective,
            shares: BatchShare::split(batch, collective.ranks()),
            images: batch.images.len(),
            texts: batch.texts.len(),
        }
    }

    fn mine(&self) -> &BatchShare {
        &self.shares[self.collective.rank()]
    }

    fn shards(&self) -> (Shard<'_>, Shard<'_>) {
        let mine = self.mine();
        (
            Shard {
                collective: self.collective,
                rows: &mine.images,
                total: self.images,
            },
            Shard {
                collective: self.collective,
                rows: &mine.texts,
                total: self.texts,
            },
        )
    }

    /// Embeds the rank's rows (`images`, `texts`: its share's features) on the `backward`
    /// path and gathers the whole batch's embeddings, returned as leaves for the loss.
    ///
    /// # Errors
    /// When another rank stopped, or a tensor error.
    pub(crate) fn forward(
        &self,
        model: &mut TwoBranch,
        (images, texts): (&Tensor, &Tensor),
        rng: &mut rand_chacha::ChaCha8Rng,
        backward: Backward,
    ) -> Result<(TrainForward, Tensor, Tensor)> {
        let (image_rows, text_rows) = self.shards();
        let forward =
            model.forward_train_shard((images, texts), rng, (&image_rows, &text_rows), backward)?;
        let places = |side: fn(&BatchShare) -> &[usize]| -> Vec<&[usize]> {
            self.shares.iter().map(side).collect()
        };
        let all_images = gather_rows(
            &**self.collective,
            &forward.images,
            &places(|s| &s.images),
            self.images,
        )?;
        let all_texts = gather_rows(
            &**self.collective,
            &forward.texts,
            &places(|s| &s.texts),
            self.texts,
        )?;
        // Leaves, so that the loss's backward stops at them and leaves their gradients.
        let leaf = |t: &Tensor| -> Result<Tensor> { Ok(Var::from_tensor(t)?.as_tensor().clone()) };
        Ok((forward, leaf(&all_images)?, leaf(&all_texts)?))
    }

    /// The gradients of `loss` (computed from the gathered `images` and `texts`): the loss's
    /// own tensors' (the temperature) as every rank computes them alike, the model's summed
    /// over the ranks, so every rank holds the whole batch's gradient.
    ///
    /// # Errors
    /// When another rank stopped, or a tensor error.
    pub(crate) fn backward(
        &self,
        model: &TwoBranch,
        forward: TrainForward,
        (images, texts): (&Tensor, &Tensor),
        loss: &Tensor,
    ) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        let mine = self.mine();
        let of = |grads: &mut GradStore, whole: &Tensor, rows: &[usize]| -> Result<Tensor> {
            match grads.remove(whole) {
                Some(g) => local_rows(&g, rows),
                None => Ok(Tensor::zeros(
                    (rows.len(), whole.dim(1)?),
                    whole.dtype(),
                    whole.device(),
                )?),
            }
        };
        let grad_images = of(&mut grads, images, &mine.images)?;
        let grad_texts = of(&mut grads, texts, &mine.texts)?;
        let (image_rows, text_rows) = self.shards();
        model.backward_shard(
            forward,
            &grad_images,
            &grad_texts,
            &mut grads,
            (&image_rows, &text_rows),
        )?;
        let trained: Vec<Var> = model
            .named()
            .into_iter()
            .filter_map(|(_, v, trainable)| trainable.then_some(v))
            .collect();
        sum_model_gradients(&**self.collective, &trained, &mut grads)?;
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LossConfig, ModelConfig};
    use crate::loss::{Embedded, Objective};
    use crate::parallel::collective::on_every_rank;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const D_IMAGE: usize = 12;
    const D_TEXT: usize = 9;

    fn model() -> TwoBranch {
        let config = ModelConfig {
            hidden: vec![20, 16],
            dim: 8,
            batch_norm: true,
            dropout: 0.3,
        };
        TwoBranch::new(D_IMAGE, D_TEXT, &config, 5, &Device::Cpu).unwrap()
    }

    /// `b` images and two captions each (anchors, then the second captions), random features.
    fn batch(b: usize) -> (Batch, Vec<f32>, Vec<f32>) {
        let mut values = ChaCha8Rng::seed_from_u64(b as u64);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| values.random_range(-1.0..1.0)).collect() };
        let batch = Batch {
            images: (0..b as u32).collect(),
            texts: (0..2 * b as u32).collect(),
            text_image: (0..b as u32).chain(0..b as u32).collect(),
        };
        let (images, texts) = (draw(b * D_IMAGE), draw(2 * b * D_TEXT));
        (batch, images, texts)
    }

    fn loss_of(objective: &Objective, images: &Tensor, texts: &Tensor, batch: &Batch) -> Tensor {
        let text_ids: Vec<u32> = batch
            .text_image
            .iter()
            .map(|&l| batch.images[l as usize])
            .collect();
        let out = objective
            .forward(
                &Embedded::new(images, texts, &batch.images, &text_ids)
                    .with_keys(&batch.images, &batch.texts),
            )
            .unwrap();
        out.total
    }

    fn rows_of(values: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| values[r * width..(r + 1) * width].to_vec())
            .collect()
    }

    fn gradients(model: &TwoBranch, grads: &GradStore) -> Vec<(String, Vec<f32>)> {
        model
            .named()
            .into_iter()
            .filter(|(_, _, trainable)| *trainable)
            .map(|(name, var, _)| {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                (name, g.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect()
    }

    /// The loss, every gradient and the BatchNorm running statistics of N ranks equal one
    /// device's with the whole batch, to rounding, with BatchNorm and dropout on; with more
    /// ranks than images too (a rank without rows still takes part in every sum). On both
    /// paths: written out (the CPU's) and autograd (what GPUs run).
    #[test]
    fn ranks_give_one_devices_loss_and_gradients() {
        for backward in [Backward::Explicit, Backward::Autograd] {
            for (b, ranks) in [(7, 1), (7, 2), (7, 3), (2, 3)] {
                ranks_equal_one_device(b, ranks, backward);
            }
        }
    }

    fn ranks_equal_one_device(b: usize, ranks: usize, backward: Backward) {
        let objective = Objective::paper(&LossConfig::default());
        {
            let (batch, images, texts) = batch(b);
            let features = |values: &[f32], rows: usize, width: usize| {
                Tensor::from_slice(values, (rows, width), &Device::Cpu).unwrap()
            };
            let mut single = model();
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let forward = single
                .forward_train(
                    &features(&images, b, D_IMAGE),
                    &features(&texts, 2 * b, D_TEXT),
                    &mut rng,
                    backward,
                )
                .unwrap();
            let loss = loss_of(&objective, &forward.images, &forward.texts, &batch);
            let want_loss: f32 = loss.to_scalar().unwrap();
            let want = gradients(&single, &single.backward(forward, &loss).unwrap());
            let running = |m: &TwoBranch| -> Vec<f32> {
                m.named()
                    .into_iter()
                    .filter(|(_, _, trainable)| !trainable)
                    .flat_map(|(_, v, _)| {
                        v.as_tensor()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                    })
                    .collect()
            };
            let want_running = running(&single);

            let results = on_every_rank(ranks, |rank| {
                let step = RankedStep::new(rank, &batch);
                let mine = step.mine().clone();
                let mut replica = model();
                let mut rng = ChaCha8Rng::seed_from_u64(9);
                let (forward, all_images, all_texts) = step
                    .forward(
                        &mut replica,
                        (
                            &features(
                                &rows_of(&images, D_IMAGE, &mine.images),
                                mine.images.len(),
                                D_IMAGE,
                            ),
                            &features(
                                &rows_of(&texts, D_TEXT, &mine.texts),
                                mine.texts.len(),
                                D_TEXT,
                            ),
                        ),
                        &mut rng,
                        backward,
                    )
                    .unwrap();
                let loss = loss_of(&objective, &all_images, &all_texts, &batch);
                let grads = step
                    .backward(&replica, forward, (&all_images, &all_texts), &loss)
                    .unwrap();
                (
                    loss.to_scalar::<f32>().unwrap(),
                    gradients(&replica, &grads),
                    running(&replica),
                    rng.get_word_pos(),
                )
            });
            for (rank, (loss, grads, running_stats, word_pos)) in results.iter().enumerate() {
                let what = format!("{backward:?}: {b} images over {ranks} ranks, rank {rank}");
                assert!(
                    (loss - want_loss).abs() <= 1e-6 * want_loss.abs().max(1.0),
                    "{what}: loss {loss} vs {want_loss}"
                );
                assert_eq!(
                    *word_pos,
                    rng.get_word_pos(),
                    "{what}: the dropout stream moved alike"
                );
                for ((name, got), (_, want)) in grads.iter().zip(&want) {
                    if name.ends_with(".bias") && !name.contains("out") && !name.contains("bn") {
                        // A bias before BatchNorm: zero in exact arithmetic, rounding noise in
                        // both (see the explicit path's tests).
                        let largest = got.iter().chain(want).fold(0f32, |m, v| m.max(v.abs()));
                        assert!(largest < 1e-5, "{what}: {name} is {largest}, not ~0");
                        continue;
                    }
                    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                    let error = got
                        .iter()
                        .zip(want)
                        .fold(0f32, |m, (g, w)| m.max((g - w).abs()))
                        / scale;
                    assert!(
                        error < 1e-4,
                        "{what}: {name} differs by {error} of its largest value"
                    );
                }
                let error = running_stats
                    .iter()
                    .zip(&want_running)
                    .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                assert!(error < 1e-5, "{what}: running statistics differ by {error}");
                assert_eq!(
                    grads, &results[0].1,
                    "{what}: every rank holds the same gradients"
                );
            }
        }
    }
}
