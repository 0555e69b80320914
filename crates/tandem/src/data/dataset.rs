//! A dataset folder: image features, text features, each caption's image, optional splits and
//! caption text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::shards::array_files;
use crate::data::{Features, Matrix, Residency, Splits, StreamedRows, npy, read_captions};
use crate::error::{Error, Result};

/// Paired image and text features, validated.
#[derive(Debug, Clone)]
pub struct PairedDataset {
    /// The folder it was read from.
    pub root: PathBuf,
    /// `[n_images, d_img]`, in memory or streamed from disk.
    pub images: Features,
    /// `[n_texts, d_txt]`, in memory or streamed from disk.
    pub texts: Features,
    /// The image of each caption, `[n_texts]`, each `< n_images`.
    pub text_to_image: Vec<u32>,
    /// Caption text, when `captions.jsonl` exists.
    pub captions: Option<Vec<String>>,
    /// Splits from `splits.json`, when it exists.
    pub splits: Option<Splits>,
}

impl PairedDataset {
    /// Opens a dataset folder: `dataset.safetensors`, or `images.npy` + `texts.npy` +
    /// `text_to_image.npy` (or shards of each, `images-00000.npy`, …); optional `splits.json`
    /// and `captions.jsonl`. Features stay on disk when they would fill more than half of the
    /// memory available ([`Residency::Auto`]).
    ///
    /// # Errors
    /// [`Error::BadFile`] / [`Error::BadDataset`] naming the file and the fix for any malformed
    /// or inconsistent input.
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_with(root, Residency::Auto)
    }

    /// [`PairedDataset::open`] with the features kept where `residency` says.
    ///
    /// # Errors
    /// As [`PairedDataset::open`]; [`Residency::Stream`] of features that are not `.npy` is an
    /// [`Error::BadDataset`].
    pub fn open_with(root: &Path, residency: Residency) -> Result<Self> {
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
            if residency == Residency::Stream {
                return Err(not_streamable(&st));
            }
            let bytes = crate::fsio::read(&st)?;
            let (i, t, ids) = super::safetensors::read_dataset(&st, &bytes)?;
            (i.into(), t.into(), ids, st)
        } else {
            open_arrays(root, residency)?
        };
        let text_to_image = check_ids(&ids_path, &raw_ids, texts.rows(), images.rows())?;
        let splits_path = root.join("splits.json");
        let splits = if splits_path.exists() {
            let s = Splits::read(&splits_path)?;
            s.validate(
                &splits_path,
                images.rows(),
                &count_captions(&text_to_image, images.rows()),
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
            "{}: {} images × {}, {} captions × {} {} in {:.1} s",
            root.display(),
            images.rows(),
            images.cols(),
            texts.rows(),
            texts.cols(),
            if images.is_streamed() {
                "opened to stream from disk"
            } else {
                "loaded"
            },
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
            images: images.into(),
            texts: texts.into(),
            text_to_image,
            captions,
            splits,
        })
    }

    /// The number of captions of each image.
    pub fn captions_per_image(&self) -> Vec<u32> {
        count_captions(&self.text_to_image, self.images.rows())
    }
}

/// The features and ids of a folder of arrays: `.npy` (whole or sharded), `.mat` or `.h5`
/// features, and `text_to_image.npy` (global image ids) or one `text_to_image-NNNNN.npy` per
/// shard (ids of the shard's images).
fn open_arrays(
    root: &Path,
    residency: Residency,
) -> Result<(Features, Features, Vec<i64>, PathBuf)> {
    let image_files = array_files(root, "images")?;
    let text_files = array_files(root, "texts")?;
    let id_files = array_files(root, "text_to_image")?;
    if id_files.is_empty() {
        return Err(missing(root, "text_to_image.npy"));
    }
    let layouts = |files: &[PathBuf]| -> Result<Vec<npy::FeatureLayout>> {
        files
            .iter()
            .map(|p| npy::read_feature_layout(p).map(|(layout, _)| layout))
            .collect()
    };
    let (image_layouts, text_layouts) = (layouts(&image_files)?, layouts(&text_files)?);
    let ids = if id_files.len() == 1 {
        npy::read_ids(&id_files[0])?
    } else {
        shard_ids(
            root,
            (&image_files, &image_layouts),
            (&text_files, &text_layouts),
            &id_files,
        )?
    };
    let npy_bytes: u64 = image_layouts
        .iter()
        .chain(&text_layouts)
        .map(|l| (l.rows * l.cols * 4) as u64)
        .sum();
    let both_npy = !image_files.is_empty() && !text_files.is_empty();
    let stream = residency.streams(npy_bytes);
    let features = |name: &str, files: &[PathBuf], items: Option<usize>| -> Result<Features> {
        if !files.is_empty() {
            return if stream && both_npy {
                Ok(Features::Streamed(Arc::new(StreamedRows::open(files)?)))
            } else {
                concatenated(files).map(Features::from)
            };
        }
        // MATLAB .mat (the reference's format) or .h5, one item per row or per column (told
        // apart by the counts the ids give).
        let (mat, h5) = (
            root.join(format!("{name}.mat")),
            root.join(format!("{name}.h5")),
        );
        let found = [&mat, &h5].into_iter().find(|p| p.exists());
        let Some(path) = found else {
            return Err(missing(root, &format!("{name}.npy")));
        };
        if residency == Residency::Stream {
            return Err(not_streamable(path));
        }
        let matrix = if path == &mat {
            super::mat::read_mat_features(&mat, items)?
        } else {
            super::hdf5::read_hdf5_features(&h5, items)?
        };
        Ok(matrix.into())
    };
    let images_seen = ids.iter().copied().max().map(|m| (m.max(0) + 1) as usize);
    let images = features("images", &image_files, images_seen)?;
    let texts = features("texts", &text_files, Some(ids.len()))?;
    Ok((images, texts, ids, id_files[0].clone()))
}

fn missing(root: &Path, name: &str) -> Error {
    Error::bad_dataset(
        root,
        format!("{name} is missing"),
        "a dataset folder needs images.npy (or .mat / .h5), texts.npy (or .mat / .h5) and text_to_image.npy, or one dataset.safetensors",
    )
}

fn not_streamable(path: &Path) -> Error {
    Error::bad_dataset(
        path,
        "features stream from .npy files only",
        "load this dataset into memory (--features memory or auto), or save its features as images.npy and texts.npy",
    )
}

/// The rows of `files` in order, as one matrix.
fn concatenated(files: &[PathBuf]) -> Result<Matrix> {
    let mut whole = npy::read_features(&files[0])?;
    for path in &files[1..] {
        let part = npy::read_features(path)?;
        if part.cols != whole.cols {
            return Err(Error::bad_file(
                path,
                format!(
                    "rows of {} features, but {} has rows of {}",
                    part.cols,
                    files[0].display(),
                    whole.cols
                ),
                "write every shard of a dataset with the same feature width",
            ));
        }
        whole.rows += part.rows;
        whole.data.extend_from_slice(&part.data);
    }
    Ok(whole)
}

/// Global image ids from one `text_to_image-NNNNN.npy` per shard, each holding the ids of its
/// shard's images (0 for the shard's first image).
fn shard_ids(
    root: &Path,
    (image_files, image_layouts): (&[PathBuf], &[npy::FeatureLayout]),
    (text_files, text_layouts): (&[PathBuf], &[npy::FeatureLayout]),
    id_files: &[PathBuf],
) -> Result<Vec<i64>> {
    if image_files.len() != id_files.len() || text_files.len() != id_files.len() {
        return Err(Error::bad_dataset(
            root,
            format!(
                "{} text_to_image shards for {} image and {} text shards",
                id_files.len(),
                image_files.len(),
                text_files.len()
            ),
            "write one images, texts and text_to_image shard per piece, or one global text_to_image.npy",
        ));
    }
    let mut ids = Vec::new();
    let mut first_image = 0i64;
    let pieces = image_files
        .iter()
        .zip(image_layouts)
        .zip(text_files.iter().zip(text_layouts))
        .zip(id_files);
    for (((image_file, images), (text_file, texts)), id_file) in pieces {
        let local = npy::read_ids(id_file)?;
        if local.len() != texts.rows {
            return Err(Error::bad_dataset(
                id_file,
                format!(
                    "{} ids for the {} rows of {}",
                    local.len(),
                    texts.rows,
                    text_file.display()
                ),
                "give one image id per caption row of the shard, in the same order",
            ));
        }
        if let Some((t, &i)) = local
            .iter()
            .enumerate()
            .find(|&(_, &i)| i < 0 || i as usize >= images.rows)
        {
            return Err(Error::bad_dataset(
                id_file,
                format!(
                    "caption {t} points at image {i}, but {} has {} rows (valid: 0..{})",
                    image_file.display(),
                    images.rows,
                    images.rows
                ),
                "a shard's ids count from its own first image",
            ));
        }
        ids.extend(local.iter().map(|&i| i + first_image));
        first_image += images.rows as i64;
    }
    Ok(ids)
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
