//! The files of a run folder, and opening a trained model from one.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::error::{Error, Result};
use crate::model::{Checkpoint, load_checkpoint};

/// The files of a run folder.
pub struct RunFiles;

impl RunFiles {
    /// The resolved config.
    pub const CONFIG: &'static str = "config.toml";
    /// The split used (copied or generated).
    pub const SPLITS: &'static str = "splits.json";
    /// One JSON object per step and per epoch.
    pub const METRICS: &'static str = "metrics.jsonl";
    /// The checkpoint with the best validation rsum.
    pub const BEST: &'static str = "best.safetensors";
    /// The checkpoint after the last epoch.
    pub const LAST: &'static str = "last.safetensors";

    /// Whether `dir` already holds a run (its metrics log or a checkpoint), which a new run
    /// must not overwrite unasked.
    pub fn holds_run(dir: &Path) -> bool {
        [Self::METRICS, Self::BEST, Self::LAST]
            .iter()
            .any(|f| dir.join(f).exists())
    }

    /// Opens a trained model: a run folder (its best checkpoint) or a checkpoint file.
    ///
    /// # Errors
    /// [`Error::Io`] (not found) when there is no checkpoint at `path`; the errors of
    /// [`load_checkpoint`] for one that cannot be read.
    pub fn open_model(path: &Path, device: &Device) -> Result<OpenedModel> {
        let (file, run_dir) = if path.is_dir() {
            (path.join(Self::BEST), Some(path.to_path_buf()))
        } else {
            let parent = path.parent().map(Path::to_path_buf);
            let in_a_run = parent
                .as_ref()
                .is_some_and(|p| p.join(Self::CONFIG).exists());
            (path.to_path_buf(), parent.filter(|_| in_a_run))
        };
        if !file.exists() {
            // An I/O "not found", so callers can tell a missing file (Python's
            // FileNotFoundError) from one that is there but wrong.
            let missing = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no checkpoint here\n  fix: pass a run folder written by `tandem train` or a .safetensors checkpoint",
            );
            return Err(Error::io(&file, missing));
        }
        Ok(OpenedModel {
            checkpoint: load_checkpoint(&file, device)?,
            file,
            run_dir,
        })
    }
}

/// A trained model with the files it came from.
pub struct OpenedModel {
    /// The weights and the config they were trained with.
    pub checkpoint: Checkpoint,
    /// The checkpoint file.
    pub file: PathBuf,
    /// The run folder, when the checkpoint is a run's (its folder holds the run's config, split
    /// and encoder records).
    pub run_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{TwoBranch, save_checkpoint};

    fn save_model(path: &Path) {
        let mut config = Config::default();
        config.model.hidden = vec![8];
        config.model.dim = 4;
        let model = TwoBranch::new(6, 5, &config.model, 3, &Device::Cpu).unwrap();
        save_checkpoint(path, &model, &config, 1, &[], &[]).unwrap();
    }

    #[test]
    fn a_run_folder_opens_its_best_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        save_model(&dir.path().join(RunFiles::BEST));
        let opened = RunFiles::open_model(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(opened.file, dir.path().join(RunFiles::BEST));
        assert_eq!(opened.run_dir.as_deref(), Some(dir.path()));
        assert_eq!(opened.checkpoint.model.d_image, 6);
    }

    #[test]
    fn a_checkpoint_file_belongs_to_a_run_only_beside_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("epoch3.safetensors");
        save_model(&file);
        assert_eq!(
            RunFiles::open_model(&file, &Device::Cpu).unwrap().run_dir,
            None
        );
        std::fs::write(
            dir.path().join(RunFiles::CONFIG),
            Config::default().to_toml(),
        )
        .unwrap();
        let opened = RunFiles::open_model(&file, &Device::Cpu).unwrap();
        assert_eq!(opened.run_dir.as_deref(), Some(dir.path()));
    }

    #[test]
    fn a_folder_without_a_checkpoint_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let message = match RunFiles::open_model(dir.path(), &Device::Cpu) {
            Err(e @ Error::Io { .. }) => e.to_string(),
            Err(e) => panic!("not an I/O error: {e}"),
            Ok(_) => panic!("a folder without a checkpoint opened"),
        };
        assert!(message.contains("best.safetensors"), "{message}");
        assert!(message.contains("no checkpoint here"), "{message}");
        assert!(message.contains("fix: pass a run folder"), "{message}");
    }
}
