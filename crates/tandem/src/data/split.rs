//! Train/val/test splits by image, read from `splits.json` or made with a seed.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Image indices of each split. Captions follow their image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Images to train on.
    pub train: Vec<u32>,
    /// Images for model selection and early stopping.
    #[serde(default)]
    pub val: Vec<u32>,
    /// Images held out for the final report.
    #[serde(default)]
    pub test: Vec<u32>,
}

impl Splits {
    /// A seeded random split of `n_images` into `val_images`, `test_images` and the rest.
    ///
    /// # Errors
    /// [`Error::Config`] when val and test leave no image to train on.
    pub fn random(
        n_images: usize,
        val_images: usize,
        test_images: usize,
        seed: u64,
    ) -> Result<Self> {
        if val_images + test_images >= n_images {
            return Err(Error::Config(format!(
                "data.val_images ({val_images}) + data.test_images ({test_images}) leave no training image out of {n_images}; lower them"
            )));
        }
        let mut ids: Vec<u32> = (0..n_images as u32).collect();
        ids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let mut val = ids[..val_images].to_vec();
        let mut test = ids[val_images..val_images + test_images].to_vec();
        let mut train = ids[val_images + test_images..].to_vec();
        val.sort_unstable();
        test.sort_unstable();
        train.sort_unstable();
        Ok(Splits { train, val, test })
    }

    /// Reads `splits.json`.
    ///
    /// # Errors
    /// [`Error::BadFile`] for unreadable JSON or unknown keys.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::fsio::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_file(
                path,
                format!("invalid splits: {e}"),
                r#"write {"train": [image indices], "val": [...], "test": [...]}"#,
            )
        })
    }

    /// The image indices of a split by name.
    ///
    /// # Errors
    /// [`Error::Config`] for a name other than train, val or test.
    pub fn get(&self, name: &str) -> Result<&[u32]> {
        match name {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            "test" => Ok(&self.test),
            other => Err(Error::Config(format!(
                "unknown split `{other}`; use train, val or test"
            ))),
        }
    }

    /// Checks that every index is in range, no image is listed twice and every image of a split
    /// has at least one caption.
    ///
    /// # Errors
    /// [`Error::BadDataset`] naming `path` and the offending image.
    pub fn validate(&self, path: &Path, n_images: usize, captions_per_image: &[u32]) -> Result<()> {
        let mut owner: Vec<Option<&str>> = vec![None; n_images];
        for (name, ids) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            for &i in ids.iter() {
                let slot = owner.get_mut(i as usize).ok_or_else(|| {
                    Error::bad_dataset(
                        path,
                        format!(
                            "split `{name}` lists image {i} but there are only {n_images} images"
                        ),
                        "list image indices in 0..n_images",
                    )
                })?;
                if let Some(prev) = slot {
                    return Err(Error::bad_dataset(
                        path,
                        format!("image {i} is in both `{prev}` and `{name}`"),
                        "put each image in exactly one split (splits must not overlap)",
                    ));
                }
                *slot = Some(name);
                if captions_per_image[i as usize] == 0 {
                    return Err(Error::bad_dataset(
                        path,
                        format!("image {i} in split `{name}` has no caption"),
                        "drop the image from the split or add a caption for it",
                    ));
                }
            }
        }
        if self.train.is_empty() {
            return Err(Error::bad_dataset(
                path,
                "the train split is empty",
                "list at least the training images under \"train\"",
            ));
        }
        Ok(())
    }
}

/// The images and captions of one split, with local indices.
#[derive(Debug, Clone)]
pub struct SplitView {
    /// Global image index of each local image.
    pub images: Vec<u32>,
    /// Global text index of each caption of those images, in dataset order.
    pub texts: Vec<u32>,
    /// Local image index (into `images`) of each caption in `texts`.
    pub text_image: Vec<u32>,
}

impl SplitView {
    /// Builds the view of `images` given every caption's image.
    pub fn new(images: &[u32], text_to_image: &[u32], n_images: usize) -> Self {
        let mut local = vec![u32::MAX; n_images];
        for (l, &g) in images.iter().enumerate() {
            local[g as usize] = l as u32;
        }
        let mut texts = Vec::new();
        let mut text_image = Vec::new();
        for (t, &img) in text_to_image.iter().enumerate() {
            let l = local[img as usize];
            if l != u32::MAX {
                texts.push(t as u32);
                text_image.push(l);
            }
        }
        SplitView {
            images: images.to_vec(),
            texts,
            text_image,
        }
    }

    /// The number of captions of each image of the split, in `images` order.
    pub fn captions_per_image(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.images.len()];
        for &l in &self.text_image {
            counts[l as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_split_is_a_seeded_partition() {
        let s = Splits::random(100, 10, 20, 7).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (70, 10, 20));
        let mut all: Vec<u32> = s
            .train
            .iter()
            .chain(&s.val)
            .chain(&s.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(s, Splits::random(100, 10, 20, 7).unwrap());
        assert_ne!(s, Splits::random(100, 10, 20, 8).unwrap());
    }

    #[test]
    fn overlap_is_named() {
        let s = Splits {
            train: vec![0, 1],
            val: vec![1],
            test: vec![],
        };
        let e = s
            .validate(Path::new("splits.json"), 3, &[1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 1 is in both `train` and `val`"), "{e}");
    }

    #[test]
    fn image_without_caption_is_named() {
        let s = Splits {
            train: vec![0, 2],
            val: vec![],
            test: vec![],
        };
        let e = s
            .validate(Path::new("splits.json"), 3, &[1, 1, 0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 2 in split `train` has no caption"), "{e}");
    }

    #[test]
    fn view_maps_captions_to_local_images() {
        let v = SplitView::new(&[2, 0], &[0, 1, 2, 2, 0], 3);
        assert_eq!(v.texts, vec![0, 2, 3, 4]);
        assert_eq!(v.text_image, vec![1, 0, 0, 1]);
        assert_eq!(v.captions_per_image(), vec![2, 2]);
    }
}
