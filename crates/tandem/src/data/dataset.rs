//! A dataset folder: image features, text features, each caption's image, optional splits and
//! caption text.

use std::path::{Path, PathBuf};

use crate::data::{Matrix, Splits, npy, read_captions};
use crate::error::{Error, Result};

/// Paired image and text features, validated.
#[derive(Debug, Clone)]
pub struct PairedDataset {
    /// The folder it was read from.
    pub root: PathBuf,
    /// `[n_images, d_img]`.
    pub images: Matrix,
    /// `[n_texts, d_txt]`.
    pub texts: Matrix,
    /// The image of each caption, `[n_texts]`, each `< n_images`.
    pub text_to_image: Vec<u32>,
    /// Caption text, when `captions.jsonl` exists.
    pub captions: Option<Vec<String>>,
    /// Splits from `splits.json`, when it exists.
    pub splits: Option<Splits>,
}

impl PairedDataset {
    /// Opens a dataset folder: `dataset.safetensors`, or `images.npy` + `texts.npy` +
    /// `text_to_image.npy`; optional `splits.json` and `captions.jsonl`.
    ///
    /// # Errors
    /// [`Error::BadFile`] / [`Error::BadDataset`] naming the file and the fix for any malformed
    /// or inconsistent input.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::bad_dataset(
                root,
                "not a folder",
                "pass a folder holding images.npy, texts.npy and text_to_image.npy (or dataset.safetensors)",
            ));
        }
        let started = std::time::Instant::now();
        let st = root.join("dataset.safetensors");
        let (images, texts, raw_ids, ids_path) = if st.exists() {
            let bytes = crate::fsio::read(&st)?;
            let (i, t, ids) = super::safetensors::read_dataset(&st, &bytes)?;
            (i, t, ids, st)
        } else {
            let need = |name: &str| {
                let p = root.join(name);
                if p.exists() {
                    Ok(p)
                } else {
                    Err(Error::bad_dataset(
                        root,
                        format!("{name} is missing"),
                        "a dataset folder needs images.npy (or .mat / .h5), texts.npy (or .mat / .h5) and text_to_image.npy, or one dataset.safetensors",
                    ))
                }
            };
            let ids_path = need("text_to_image.npy")?;
            let ids = npy::read_ids(&ids_path)?;
            // Features as .npy, MATLAB .mat (the reference's format) or .h5, one item per row
            // or per column (told apart by the counts the ids give).
            let features = |name: &str, items: Option<usize>| -> Result<super::Matrix> {
                if !root.join(format!("{name}.npy")).exists() {
                    let (mat, h5) = (
                        root.join(format!("{name}.mat")),
                        root.join(format!("{name}.h5")),
                    );
                    if mat.exists() {
                        return super::mat::read_mat_features(&mat, items);
                    }
                    if h5.exists() {
                        return super::hdf5::read_hdf5_features(&h5, items);
                    }
                }
                npy::read_features(&need(&format!("{name}.npy"))?)
            };
            let images_seen = ids.iter().copied().max().map(|m| (m.max(0) + 1) as usize);
            let images = features("images", images_seen)?;
            let texts = features("texts", Some(ids.len()))?;
            (images, texts, ids, ids_path)
        };
        let text_to_image = check_ids(&ids_path, &raw_ids, texts.rows, images.rows)?;
        let splits_path = root.join("splits.json");
        let splits = if splits_path.exists() {
            let s = Splits::read(&splits_path)?;
            s.validate(
                &splits_path,
                images.rows,
                &count_captions(&text_to_image, images.rows),
            )?;
            Some(s)
        } else {
            None
        };
        let captions_path = root.join("captions.jsonl");
        let captions = if captions_path.exists() {
            Some(read_captions(&captions_path, &text_to_image)?)
        } else {
            None
        };
        tracing::info!(
            "{}: {} images × {}, {} captions × {} loaded in {:.1} s",
            root.display(),
            images.rows,
            images.cols,
            texts.rows,
            texts.cols,
            started.elapsed().as_secs_f64()
        );
        Ok(PairedDataset {
            root: root.to_path_buf(),
            images,
            texts,
            text_to_image,
            captions,
            splits,
        })
    }

    /// A dataset from arrays in memory (the Python API's), checked as a folder would be: the
    /// ids, the split and the captions against the feature counts. `name` stands for the
    /// folder in error messages and in [`PairedDataset::root`].
    ///
    /// # Shapes
    /// `images: [n_images, d_img]`, `texts: [n_texts, d_txt]`, `text_to_image: [n_texts]`,
    /// `captions: [n_texts]`.
    ///
    /// # Errors
    /// [`Error::BadDataset`] when ids are out of range or negative, an image has no caption in
    /// a split, or the captions do not match the texts in number.
    pub fn from_parts(
        name: &Path,
        images: Matrix,
        texts: Matrix,
        text_to_image: &[i64],
        splits: Option<Splits>,
        captions: Option<Vec<String>>,
    ) -> Result<Self> {
        let text_to_image = check_ids(name, text_to_image, texts.rows, images.rows)?;
        if let Some(s) = &splits {
            s.validate(
                name,
                images.rows,
                &count_captions(&text_to_image, images.rows),
            )?;
        }
        if let Some(c) = &captions
            && c.len() != texts.rows
        {
            return Err(Error::bad_dataset(
                name,
                format!("{} captions for {} text rows", c.len(), texts.rows),
                "give one caption per row of texts, in the same order",
            ));
        }
        Ok(PairedDataset {
            root: name.to_path_buf(),
            images,
            texts,
            text_to_image,
            captions,
            splits,
        })
    }

    /// The number of captions of each image.
    pub fn captions_per_image(&self) -> Vec<u32> {
        count_captions(&self.text_to_image, self.images.rows)
    }
}

fn count_captions(text_to_image: &[u32], n_images: usize) -> Vec<u32> {
    let mut counts = vec![0u32; n_images];
    for &i in text_to_image {
        counts[i as usize] += 1;
    }
    counts
}

fn check_ids(path: &Path, ids: &[i64], n_texts: usize, n_images: usize) -> Result<Vec<u32>> {
    if ids.len() != n_texts {
        return Err(Error::bad_dataset(
            path,
            format!(
                "text_to_image has {} entries but texts has {n_texts} rows",
                ids.len()
            ),
            "give exactly one image index per row of texts, in the same order",
        ));
    }
    ids.iter()
        .enumerate()
        .map(|(t, &i)| {
            if i < 0 || i as usize >= n_images {
                Err(Error::bad_dataset(
                    path,
                    format!("caption {t} points at image {i}, but images has {n_images} rows (valid: 0..{n_images})"),
                    "fix text_to_image so every entry is a row index of images",
                ))
            } else {
                Ok(i as u32)
            }
        })
        .collect()
}
