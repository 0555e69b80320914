//! Mini-batches as in the reference code: B anchor captions, their B images, and one more
//! caption of each image. Unlike the reference, an image appears at most once per batch, so a
//! copy of the positive is never treated as a negative.

use std::collections::VecDeque;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::data::SplitView;
use crate::error::{Error, Result};

/// One mini-batch, as global indices into the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The B distinct images.
    pub images: Vec<u32>,
    /// 2B captions: the B anchors, then one more caption of each image in the same order.
    pub texts: Vec<u32>,
    /// For each caption, the position of its image in `images`.
    pub text_image: Vec<u32>,
}

/// Makes seeded, reproducible epochs of batches over one split.
#[derive(Debug, Clone)]
pub struct Batcher {
    texts: Vec<u32>,
    text_image: Vec<u32>,
    images: Vec<u32>,
    captions_of: Vec<Vec<u32>>,
    batch_size: usize,
    seed: u64,
}

impl Batcher {
    /// A batcher over `view` with `batch_size` anchors per batch.
    ///
    /// # Errors
    /// [`Error::Config`] when the batch is smaller than 2 or larger than the number of images.
    pub fn new(view: &SplitView, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size < 2 {
            return Err(Error::Config(format!(
                "train.batch_size is {batch_size}; a batch needs at least 2 images to have negatives"
            )));
        }
        if batch_size > view.images.len() {
            return Err(Error::Config(format!(
                "train.batch_size ({batch_size}) is larger than the {} training images; one image may appear once per batch, so lower it",
                view.images.len()
            )));
        }
        let mut captions_of = vec![Vec::new(); view.images.len()];
        for (t, &l) in view.text_image.iter().enumerate() {
            captions_of[l as usize].push(t as u32);
        }
        Ok(Batcher {
            texts: view.texts.clone(),
            text_image: view.text_image.clone(),
            images: view.images.clone(),
            captions_of,
            batch_size,
            seed,
        })
    }

    /// The number of anchor captions per epoch.
    pub fn captions(&self) -> usize {
        self.texts.len()
    }

    /// The batches of epoch `epoch`: every caption is an anchor once; a caption whose image is
    /// already in the batch waits for the next one. A last batch of fewer than 2 images is
    /// dropped.
    pub fn epoch(&self, epoch: usize) -> Vec<Batch> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut order: Vec<u32> = (0..self.texts.len() as u32).collect();
        order.shuffle(&mut rng);
        let mut queue: VecDeque<u32> = order.into();
        let mut stamp = vec![usize::MAX; self.images.len()];
        let mut batches = Vec::new();
        let mut number = 0;
        while !queue.is_empty() {
            let mut anchors = Vec::with_capacity(self.batch_size);
            let mut deferred = Vec::new();
            while anchors.len() < self.batch_size {
                let Some(t) = queue.pop_front() else { break };
                let l = self.text_image[t as usize] as usize;
                if stamp[l] == number {
                    deferred.push(t);
                } else {
                    stamp[l] = number;
                    anchors.push(t);
                }
            }
            for t in deferred.into_iter().rev() {
                queue.push_front(t);
            }
            number += 1;
            if anchors.len() < 2 {
                // Only captions of one image are left: they have no negatives.
                break;
            }
            batches.push(self.assemble(&anchors, &mut rng));
        }
        batches
    }

    fn assemble(&self, anchors: &[u32], rng: &mut impl Rng) -> Batch {
        let b = anchors.len();
        let mut images = Vec::with_capacity(b);
        let mut texts = Vec::with_capacity(2 * b);
        let mut extras = Vec::with_capacity(b);
        for &t in anchors {
            let l = self.text_image[t as usize] as usize;
            images.push(self.images[l]);
            texts.push(self.texts[t as usize]);
            let others = &self.captions_of[l];
            let extra = if others.len() == 1 {
                t
            } else {
                // A different caption of the same image, uniformly.
                let k = rng.random_range(0..others.len() - 1);
                let pos = others
                    .iter()
                    .position(|&o| o == t)
                    .expect("anchor is a caption of its image");
                others[if k >= pos { k + 1 } else { k }]
            };
            extras.push(self.texts[extra as usize]);
        }
        texts.extend(extras);
        let text_image = (0..b as u32).chain(0..b as u32).collect();
        Batch {
            images,
            texts,
            text_image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(captions: &[usize]) -> SplitView {
        let mut t2i = Vec::new();
        for (i, &c) in captions.iter().enumerate() {
            t2i.extend(std::iter::repeat_n(i as u32, c));
        }
        let images: Vec<u32> = (0..captions.len() as u32).collect();
        SplitView::new(&images, &t2i, captions.len())
    }

    proptest! {
        #[test]
        fn batches_are_well_formed(
            caps in proptest::collection::vec(1usize..6, 2..40),
            b in 2usize..12,
            seed in 0u64..1000,
        ) {
            let v = view(&caps);
            prop_assume!(b <= caps.len());
            let batcher = Batcher::new(&v, b, seed).unwrap();
            let mut anchors = Vec::new();
            let t2i: Vec<u32> = {
                let mut t = vec![0; v.texts.len()];
                for (k, &g) in v.texts.iter().enumerate() { t[g as usize] = v.images[v.text_image[k] as usize]; }
                t
            };
            for batch in batcher.epoch(1) {
                let n = batch.images.len();
                prop_assert!(n >= 2 && n <= b);
                let mut seen = batch.images.clone();
                seen.sort_unstable();
                seen.dedup();
                prop_assert_eq!(seen.len(), n, "an image appears twice in a batch");
                prop_assert_eq!(batch.texts.len(), 2 * n);
                for (k, &t) in batch.texts.iter().enumerate() {
                    prop_assert_eq!(t2i[t as usize], batch.images[batch.text_image[k] as usize]);
                }
                for j in 0..n {
                    let (a, e) = (batch.texts[j], batch.texts[j + n]);
                    if caps[batch.images[j] as usize] > 1 { prop_assert_ne!(a, e); }
                }
                anchors.extend_from_slice(&batch.texts[..n]);
            }
            anchors.sort_unstable();
            let before = anchors.len();
            anchors.dedup();
            prop_assert_eq!(anchors.len(), before, "a caption is an anchor twice in one epoch");
            // All captions are anchors except at most those of one image left at the end.
            prop_assert!(v.texts.len() - anchors.len() <= *caps.iter().max().unwrap());
            // Reproducible.
            prop_assert_eq!(batcher.epoch(1), Batcher::new(&v, b, seed).unwrap().epoch(1));
        }
    }

    #[test]
    fn batch_larger_than_split_is_refused() {
        let e = Batcher::new(&view(&[1, 1, 1]), 4, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than the 3 training images"), "{e}");
    }
}
