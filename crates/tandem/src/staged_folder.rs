//! A folder replaced as a whole: its new content is written into a staging folder beside it,
//! then swapped in with one atomic `renameat2(RENAME_EXCHANGE)` on Linux, so a reader (or a
//! process killed at any moment) sees the old folder or the new one, never a mix.
//!
//! Elsewhere the swap is two renames (old aside, new in) and a kill between them leaves the
//! old folder beside the target as `.NAME.previous-PID`, intact.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A staging folder for `target`, written then committed with [`StagedFolder::commit`];
/// dropped without committing, it is removed.
pub struct StagedFolder {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedFolder {
    /// An empty staging folder beside `target` (same parent, so the swap is a rename).
    /// Staging folders that killed writers of the same target left behind are removed.
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder when the parent is not writable.
    pub fn beside(target: &Path) -> Result<Self> {
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let name = file_name(target);
        let stale = format!(".{name}.building-");
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&stale) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let staging = parent.join(format!("{stale}{}", std::process::id()));
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(StagedFolder {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where to write the new content.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Swaps the staging folder in for the target and removes the old content.
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder when a rename fails (the target is then unchanged).
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.staging)?;
        if self.target.exists() {
            swap(&self.staging, &self.target)?;
            // The staging path now holds the old content.
            let _ = std::fs::remove_dir_all(&self.staging);
        } else {
            std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        self.committed = true;
        sync_dir(&parent_of(&self.target))
    }
}

impl Drop for StagedFolder {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(target_os = "linux")]
fn swap(staging: &Path, target: &Path) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, staging, CWD, target, RenameFlags::EXCHANGE)
        .map_err(|e| Error::io(target, e.into()))
}

#[cfg(not(target_os = "linux"))]
fn swap(staging: &Path, target: &Path) -> Result<()> {
    let aside = parent_of(target).join(format!(
        ".{}.previous-{}",
        file_name(target),
        std::process::id()
    ));
    std::fs::rename(target, &aside).map_err(|e| Error::io(target, e))?;
    if let Err(e) = std::fs::rename(staging, target) {
        let _ = std::fs::rename(&aside, target);
        return Err(Error::io(target, e));
    }
    // The caller removes what `staging` names; here that is the old content's new place.
    std::fs::rename(&aside, staging).map_err(|e| Error::io(staging, e))
}

/// fsync of a folder, so the renames in it survive a crash (a no-op where folders cannot be
/// opened).
fn sync_dir(dir: &Path) -> Result<()> {
    match std::fs::File::open(dir) {
        Ok(handle) => handle.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_commit_replaces_the_whole_folder_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old-only.txt"), "old").unwrap();
        std::fs::write(target.join("both.txt"), "old").unwrap();
        let staged = StagedFolder::beside(&target).unwrap();
        std::fs::write(staged.path().join("both.txt"), "new").unwrap();
        std::fs::write(staged.path().join("new-only.txt"), "new").unwrap();
        // Until the commit, the target is the old folder.
        assert_eq!(listing(&target), ["both.txt", "old-only.txt"]);
        staged.commit().unwrap();
        assert_eq!(listing(&target), ["both.txt", "new-only.txt"]);
        assert_eq!(
            std::fs::read_to_string(target.join("both.txt")).unwrap(),
            "new"
        );
        assert_eq!(listing(dir.path()), ["index"]);
    }

    #[test]
    fn a_new_target_is_created_and_an_abandoned_staging_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fresh");
        let abandoned = StagedFolder::beside(&target).unwrap();
        std::fs::write(abandoned.path().join("x"), "x").unwrap();
        drop(abandoned);
        assert!(listing(dir.path()).is_empty());
        // A staging folder a killed writer left is cleared by the next one.
        std::fs::create_dir(dir.path().join(".fresh.building-1")).unwrap();
        let staged = StagedFolder::beside(&target).unwrap();
        std::fs::write(staged.path().join("y"), "y").unwrap();
        staged.commit().unwrap();
        assert_eq!(listing(dir.path()), ["fresh"]);
        assert_eq!(listing(&target), ["y"]);
    }
}
