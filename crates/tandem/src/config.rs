//! The whole training recipe as one TOML document. Defaults are the reference recipe of Wang,
//! Li & Lazebnik (CVPR 2016) as found in its public TensorFlow code; see docs/recipes.md.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::{Distance, Miner, Reducer};

/// Everything a run needs, saved in the run folder and in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of the split, initialisation, batches and dropout.
    pub seed: u64,
    /// How the dataset is split when it has no `splits.json`.
    pub data: DataConfig,
    /// The two branches.
    pub model: ModelConfig,
    /// The ranking objective.
    pub loss: LossConfig,
    /// Optimisation.
    pub train: TrainConfig,
}

/// Split sizes used when the dataset folder has no `splits.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Images held out for validation (Flickr30K and the reference use 1000).
    pub val_images: usize,
    /// Images held out for the test report (Flickr30K and the reference use 1000).
    pub test_images: usize,
}

/// Each branch: `hidden` Linear→BatchNorm→ReLU→Dropout blocks, then Linear→L2-normalise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Widths of the hidden blocks; `[]` makes each branch one linear map.
    pub hidden: Vec<usize>,
    /// Dimension of the joint space.
    pub dim: usize,
    /// Dropout probability after each hidden block.
    pub dropout: f64,
    /// BatchNorm after each hidden linear layer.
    pub batch_norm: bool,
}

/// Which batch-wise ranking objective to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Wang, Li & Lazebnik 2016: top-K hinges both ways plus the text→text structure term.
    Paper,
    /// VSE++ (Faghri et al. 2018) summed hinge: every negative, both ways, summed.
    VseSum,
    /// VSE++ max-violation: only the hardest negative, both ways, summed.
    VseMax,
    /// Summed hinge for the first `warmup_epochs` epochs, then max-violation (as VSE∞ trains).
    VseWarmup,
    /// Symmetric InfoNCE as in CLIP (Radford et al. 2021): softmax cross-entropy both ways over
    /// scaled similarities, with a learnable temperature.
    InfoNce,
    /// SigLIP (Zhai et al. 2023): a sigmoid loss on every image–caption pair, with learnable
    /// temperature and bias.
    Siglip,
}

/// The cross-batch memory: embeddings of the previous samples used as extra references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Whether the memory is used at all.
    pub enabled: bool,
    /// Rows kept per modality (the last `capacity` images and the last `capacity` captions).
    pub capacity: usize,
    /// Steps trained before the memory starts recording (early embeddings drift fast, so
    /// XBM starts its memory late).
    pub warmup_steps: usize,
}

/// The ranking objective. Defaults are the paper's bidirectional loss with top-K negatives and
/// the structure-preserving term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Which objective; `top_k` and the three weights apply to `paper` only.
    pub kind: LossKind,
    /// How distances between embeddings are measured.
    pub distance: Distance,
    /// Hinge margin.
    pub margin: f64,
    /// Each anchor keeps this many largest violations.
    pub top_k: usize,
    /// Weight of the caption→image term.
    pub text_to_image: f64,
    /// Weight of the image→caption term.
    pub image_to_text: f64,
    /// Weight of the caption→caption structure-preserving term.
    pub text_to_text: f64,
    /// Epochs of summed hinge before max-violation, for `kind = "vse_warmup"`.
    pub warmup_epochs: usize,
    /// Replaces the miner of every hinge term (e.g. `"semi_hard"` or `{ top_k = 5 }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miner: Option<Miner>,
    /// Replaces the reducer of every hinge term (`"mean"`, `"sum"`, `"mean_non_zero"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reducer: Option<Reducer>,
    /// Initial temperature of `info_nce` (default 0.07, CLIP) and `siglip` (default 0.1, i.e.
    /// logit scale 10 as SigLIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Whether the temperature (and SigLIP's bias) are trained.
    pub learn_temperature: bool,
    /// The logit scale (1 / temperature) is clamped to at most this after every step (CLIP: 100).
    pub max_logit_scale: f64,
    /// Initial bias of `siglip` (SigLIP: -10).
    pub bias: f64,
    /// The cross-batch memory of previous samples.
    pub memory: MemoryConfig,
}

/// Optimiser choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (decoupled weight decay, as AdamW, when `weight_decay > 0`).
    Adam,
    /// SGD with momentum (L2 weight decay).
    Sgd,
}

/// How the learning rate moves over a run (a linear warm-up may come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduleKind {
    /// × `lr_decay_factor` every `lr_decay_epochs` epochs; with `lr_decay_epochs = 0` (the
    /// default) a constant rate, which is what the reference runs.
    Step,
    /// Half a cosine from `lr` to `min_lr` over the steps after the warm-up.
    Cosine,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Anchor captions (= distinct images) per batch.
    pub batch_size: usize,
    /// Passes over the training captions.
    pub epochs: usize,
    /// Adam or SGD.
    pub optimizer: OptimizerKind,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// `step` (constant unless `lr_decay_epochs > 0`) or `cosine`.
    pub lr_schedule: LrScheduleKind,
    /// For `step`: multiply the learning rate by `lr_decay_factor` every this many epochs
    /// (0: never, the default, as the reference runs).
    pub lr_decay_epochs: usize,
    /// Step-decay factor.
    pub lr_decay_factor: f64,
    /// Steps of linear warm-up from `lr / warmup` to the schedule's rate (0: none).
    pub lr_warmup_steps: usize,
    /// For `cosine`: the rate at the last step.
    pub min_lr: f64,
    /// Stop after this many epochs without a better validation rsum (0: never).
    pub patience: usize,
    /// Rows per forward pass when embedding for evaluation.
    pub eval_batch_size: usize,
    /// Skip (and count) a batch whose loss or gradient is not finite instead of stopping.
    pub skip_nonfinite: bool,
    /// Write the resumable `last.safetensors` (and a newer `best.safetensors` before it) at
    /// the end of the first epoch that ends this many seconds after the previous write; 0:
    /// every epoch. The last epoch, an early stop, a pause and an interrupt always write, so
    /// only a killed run loses more than an epoch: at most this long.
    pub checkpoint_seconds: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            val_images: 1000,
            test_images: 1000,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: vec![2048],
            dim: 512,
            dropout: 0.5,
            batch_norm: true,
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: LossKind::Paper,
            distance: Distance::Euclidean,
            margin: 0.05,
            top_k: 10,
            text_to_image: 1.5,
            image_to_text: 1.0,
            text_to_text: 0.05,
            warmup_epochs: 1,
            miner: None,
            reducer: None,
            temperature: None,
            learn_temperature: true,
            max_logit_scale: 100.0,
            bias: -10.0,
            memory: MemoryConfig::default(),
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: false,
            capacity: 1000,
            warmup_steps: 0,
        }
    }
}

impl LossKind {
    /// Whether the loss scores by scaled similarities (and so trains a temperature).
    pub fn uses_temperature(self) -> bool {
        matches!(self, LossKind::InfoNce | LossKind::Siglip)
    }
}

impl LossConfig {
    /// A short human name of the objective, e.g. `paper recipe + memory 2000`.
    pub fn label(&self) -> String {
        let base = match self.kind {
            LossKind::Paper => "paper recipe",
            LossKind::VseSum => "VSE++ sum",
            LossKind::VseMax => "VSE++ max",
            LossKind::VseWarmup => "VSE++ sum→max",
            LossKind::InfoNce => "InfoNCE",
            LossKind::Siglip => "SigLIP",
        };
        if self.memory.enabled && self.memory.capacity > 0 {
            format!("{base} + memory {}", self.memory.capacity)
        } else {
            base.to_string()
        }
    }

    /// The initial temperature of the softmax and sigmoid losses.
    pub fn initial_temperature(&self) -> f64 {
        self.temperature.unwrap_or(match self.kind {
            LossKind::Siglip => 0.1,
            _ => 0.07,
        })
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 500,
            epochs: 20,
            optimizer: OptimizerKind::Adam,
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_schedule: LrScheduleKind::Step,
            lr_decay_epochs: 0,
            lr_decay_factor: 0.1,
            lr_warmup_steps: 0,
            min_lr: 0.0,
            patience: 0,
            eval_batch_size: 1024,
            skip_nonfinite: false,
            checkpoint_seconds: 60.0,
        }
    }
}

/// Keys whose default is "unset" (`None`), so that `tandem config` does not print them.
const OPTIONAL_KEYS: [&str; 3] = ["loss.miner", "loss.reducer", "loss.temperature"];

impl Config {
    /// Parses TOML; unknown keys are an error.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key or value at fault.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string().trim_end().to_string()))
    }

    /// The config a run uses: the reference recipe, or the TOML file when given, then each
    /// `key=value` override in order (`"train.lr=1e-3"`, as `--set` takes them), then the range
    /// checks of [`Config::validate`].
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadFile`] naming the file; [`Error::Config`] naming the
    /// override or value at fault.
    pub fn resolve(file: Option<&Path>, sets: &[String]) -> Result<Self> {
        let mut config = match file {
            Some(path) => Self::read(path)?,
            None => Self::default(),
        };
        config.apply(sets)?;
        Ok(config)
    }

    /// Applies `key=value` overrides in order, then [`Config::validate`].
    ///
    /// # Errors
    /// [`Error::Config`] naming the override or value at fault.
    pub fn apply(&mut self, sets: &[String]) -> Result<()> {
        for s in sets {
            self.set(s)?;
        }
        self.validate()
    }

    /// Reads a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::BadFile`] naming the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                e.to_string().trim_end().to_string(),
                "run `tandem config` to see every key and its default",
            )
        })
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serialises")
    }

    /// Applies one `key=value` override, e.g. `loss.margin=0.1` or `model.hidden=[1024,512]`.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed assignment, an unknown key or a value of the wrong type.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "`{assignment}` is not key=value (e.g. train.lr=0.001)"
            ))
        })?;
        let (key, raw) = (key.trim(), raw.trim());
        let mut doc = toml::Value::try_from(&*self).expect("a config always serialises");
        let mut slot = &mut doc;
        for part in key.split('.') {
            let table = slot
                .as_table_mut()
                .ok_or_else(|| Error::Config(format!("`{key}`: `{part}` is not a section")))?;
            // Keys that are unset by default are absent from the serialised config.
            if OPTIONAL_KEYS.contains(&key) && !table.contains_key(part) {
                table.insert(part.to_string(), toml::Value::Boolean(false));
            }
            let known: Vec<String> = table.keys().cloned().collect();
            slot = table.get_mut(part).ok_or_else(|| {
                Error::Config(format!(
                    "unknown key `{key}` (`{part}` is none of: {})",
                    known.join(", ")
                ))
            })?;
        }
        if slot.is_table() {
            return Err(Error::Config(format!(
                "`{key}` is a section; set one of its keys"
            )));
        }
        // A bare word that is not TOML (e.g. `sgd`) is taken as a string.
        *slot = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        *self = doc.try_into().map_err(|e: toml::de::Error| {
            Error::Config(format!("`{key}={raw}`: {}", e.message()))
        })?;
        Ok(())
    }

    /// Checks value ranges.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first invalid key, its value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, value: String, allowed: &str| {
            Err(Error::Config(format!(
                "{key} = {value} is invalid: {allowed}"
            )))
        };
        let m = &self.model;
        if m.dim == 0 {
            return bad("model.dim", m.dim.to_string(), "must be at least 1");
        }
        if m.hidden.contains(&0) {
            return bad(
                "model.hidden",
                format!("{:?}", m.hidden),
                "widths must be at least 1",
            );
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad("model.dropout", m.dropout.to_string(), "must be in [0, 1)");
        }
        let l = &self.loss;
        if !(l.margin >= 0.0 && l.margin.is_finite()) {
            return bad(
                "loss.margin",
                l.margin.to_string(),
                "must be a finite number >= 0",
            );
        }
        if l.top_k == 0 {
            return bad(
                "loss.top_k",
                "0".into(),
                "each anchor must keep at least 1 negative",
            );
        }
        for (k, w) in [
            ("loss.text_to_image", l.text_to_image),
            ("loss.image_to_text", l.image_to_text),
            ("loss.text_to_text", l.text_to_text),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(k, w.to_string(), "weights must be finite and >= 0");
            }
        }
        if l.miner == Some(Miner::TopK(0)) {
            return bad(
                "loss.miner",
                "{ top_k = 0 }".into(),
                "each anchor must keep at least 1 negative",
            );
        }
        let temperature = l.initial_temperature();
        if !(temperature > 0.0 && temperature.is_finite()) {
            return bad(
                "loss.temperature",
                temperature.to_string(),
                "must be a finite number > 0",
            );
        }
        if !(l.max_logit_scale >= 1.0 && l.max_logit_scale.is_finite()) {
            return bad(
                "loss.max_logit_scale",
                l.max_logit_scale.to_string(),
                "must be a finite number >= 1",
            );
        }
        if 1.0 / temperature > l.max_logit_scale {
            return bad(
                "loss.temperature",
                temperature.to_string(),
                "1 / temperature must not exceed loss.max_logit_scale",
            );
        }
        if !l.bias.is_finite() {
            return bad("loss.bias", l.bias.to_string(), "must be finite");
        }
        if l.text_to_image + l.image_to_text + l.text_to_text == 0.0 {
            return bad(
                "loss.*",
                "0".into(),
                "at least one term needs a positive weight",
            );
        }
        let t = &self.train;
        if t.batch_size < 2 {
            return bad(
                "train.batch_size",
                t.batch_size.to_string(),
                "must be at least 2",
            );
        }
        if t.epochs == 0 {
            return bad("train.epochs", "0".into(), "must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr", t.lr.to_string(), "must be > 0");
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return bad(
                "train.momentum",
                t.momentum.to_string(),
                "must be in [0, 1)",
            );
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return bad(
                "train.weight_decay",
                t.weight_decay.to_string(),
                "must be >= 0",
            );
        }
        if !(t.checkpoint_seconds >= 0.0 && t.checkpoint_seconds.is_finite()) {
            return bad(
                "train.checkpoint_seconds",
                t.checkpoint_seconds.to_string(),
                "must be >= 0 (0: every epoch)",
            );
        }
        if !(t.lr_decay_factor > 0.0 && t.lr_decay_factor <= 1.0) {
            return bad(
                "train.lr_decay_factor",
                t.lr_decay_factor.to_string(),
                "must be in (0, 1]",
            );
        }
        if t.lr_schedule == LrScheduleKind::Cosine && t.lr_decay_epochs > 0 {
            return bad(
                "train.lr_decay_epochs",
                t.lr_decay_epochs.to_string(),
                "applies to lr_schedule = \"step\" only; set it to 0 with \"cosine\"",
            );
        }
        if !(t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return bad(
                "train.min_lr",
                t.min_lr.to_string(),
                "must be in [0, train.lr]",
            );
        }
        if t.eval_batch_size == 0 {
            return bad("train.eval_batch_size", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_recipe() {
        let c = Config::default();
        assert_eq!(c.model.hidden, vec![2048]);
        assert_eq!(c.model.dim, 512);
        assert_eq!(c.loss.margin, 0.05);
        assert_eq!(c.loss.top_k, 10);
        assert_eq!(
            (
                c.loss.text_to_image,
                c.loss.image_to_text,
                c.loss.text_to_text
            ),
            (1.5, 1.0, 0.05)
        );
        assert_eq!(c.train.batch_size, 500);
        assert_eq!(c.train.lr, 1e-4);
        c.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial_files() {
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        let p = Config::from_toml("[train]\nepochs = 3\n").unwrap();
        assert_eq!(p.train.epochs, 3);
        assert_eq!(p.loss, LossConfig::default());
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = Config::from_toml("[train]\nepoch = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `epoch`"), "{e}");
    }

    #[test]
    fn set_overrides_by_path() {
        let mut c = Config::default();
        c.set("loss.margin=0.2").unwrap();
        c.set("model.hidden=[64, 32]").unwrap();
        c.set("train.optimizer=sgd").unwrap();
        c.set("seed = 7").unwrap();
        assert_eq!(c.loss.margin, 0.2);
        assert_eq!(c.model.hidden, vec![64, 32]);
        assert_eq!(c.train.optimizer, OptimizerKind::Sgd);
        assert_eq!(c.seed, 7);
    }

    #[test]
    fn set_reaches_keys_that_are_unset_by_default() {
        let mut c = Config::default();
        c.set("loss.temperature=0.05").unwrap();
        c.set("loss.reducer=\"sum\"").unwrap();
        c.set("loss.miner=\"hardest\"").unwrap();
        assert_eq!(c.loss.temperature, Some(0.05));
        assert_eq!(c.loss.reducer, Some(Reducer::Sum));
        assert_eq!(c.loss.miner, Some(Miner::Hardest));
        // Set once, they stay settable.
        c.set("loss.temperature=0.1").unwrap();
        assert_eq!(c.loss.temperature, Some(0.1));
        assert!(c.set("loss.temperature=\"warm\"").is_err());
    }

    #[test]
    fn set_rejects_unknown_keys_and_wrong_types() {
        let mut c = Config::default();
        let e = c.set("loss.marg=0.2").unwrap_err().to_string();
        assert!(
            e.contains("unknown key `loss.marg`") && e.contains("margin"),
            "{e}"
        );
        let e = c.set("train.epochs=many").unwrap_err().to_string();
        assert!(e.contains("train.epochs=many"), "{e}");
        assert!(c.set("noequals").is_err());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = Config::default();
        c.loss.margin = -1.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("loss.margin")
        );
        let mut c = Config::default();
        c.loss.top_k = 0;
        assert!(c.validate().unwrap_err().to_string().contains("loss.top_k"));
    }

    #[test]
    fn resolve_reads_the_file_then_applies_the_overrides_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recipe.toml");
        std::fs::write(&file, "[train]\nlr = 0.01\nbatch_size = 250\n").unwrap();
        let sets = ["train.lr=0.002".to_string(), "train.lr=0.003".to_string()];
        let c = Config::resolve(Some(&file), &sets).unwrap();
        assert_eq!((c.train.lr, c.train.batch_size), (0.003, 250));
        assert_eq!(Config::resolve(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn resolve_validates_after_the_overrides() {
        let err = Config::resolve(None, &["loss.top_k=0".to_string()]).unwrap_err();
        assert!(err.to_string().contains("loss.top_k"), "{err}");
        let missing = Path::new("/nonexistent/recipe.toml");
        let err = Config::resolve(Some(missing), &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/recipe.toml"),
            "{err}"
        );
    }
}
