//! The search's journal, `tune.jsonl`: one JSON event per line, appended and synced before the
//! search acts on it, so a killed search replays it and continues where it stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tune::Sampler;

/// What must match for a journal to be continued: a different space or base config would mix
/// incomparable trials in one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The space file's text.
    pub space: String,
    /// The base config (before the space's values), as TOML.
    pub base: String,
    /// How trials draw their values.
    pub sampler: Sampler,
    /// Seeds the draws and the grid's order.
    pub seed: u64,
    /// Successive halving's reduction factor: each rung keeps the top 1/eta.
    pub eta: usize,
    /// Epochs of each rung, ascending.
    pub rungs: Vec<usize>,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The first line.
    Search(Settings),
    /// A trial started training towards `rung` (`epochs` in all). At rung 0 this is the
    /// trial's birth, with the values it drew.
    Job {
        /// The trial's number, from 0.
        trial: usize,
        /// The rung the job trains to.
        rung: usize,
        /// The epochs the trial will have at the end of the job.
        epochs: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        /// The trial's drawn values, at rung 0 only.
        params: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// A trial finished `rung`: its best validation rsum in the epochs so far.
    Result {
        /// The trial's number.
        trial: usize,
        /// The rung it finished.
        rung: usize,
        /// Epochs trained so far.
        epochs: usize,
        /// Best validation rsum over those epochs.
        val_rsum: f64,
        /// The epoch that gave it.
        best_epoch: usize,
        /// Seconds of this job.
        seconds: f64,
        /// Seconds the whole search has spent training, this job included.
        search_seconds: f64,
    },
    /// A trial could not finish `rung` (diverged); it is never promoted.
    Failed {
        /// The trial's number.
        trial: usize,
        /// The rung it failed at.
        rung: usize,
        /// The error, as the trainer reported it.
        error: String,
        /// Seconds the whole search has spent training, this job included.
        search_seconds: f64,
    },
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens `path`, creating it with `settings` as its first line, or checking that its first
    /// line matches them. Returns the journal and every event in it. A torn last line (a kill
    /// while writing it) is dropped.
    ///
    /// # Errors
    /// [`Error::BadFile`] when the journal belongs to another search or a line other than the
    /// last is unreadable; I/O errors.
    pub fn open(path: &Path, settings: &Settings) -> Result<(Self, Vec<Event>)> {
        let mut events = if path.exists() {
            read_events(path)?
        } else {
            Vec::new()
        };
        match events.first() {
            Some(Event::Search(found)) if found == settings => {}
            Some(Event::Search(_)) => {
                return Err(Error::bad_file(
                    path,
                    "this folder holds a search with another space, base config, sampler, seed or epoch budget",
                    "choose another --out, pass the same options as before, or --overwrite to start over",
                ));
            }
            Some(_) => {
                return Err(Error::bad_file(
                    path,
                    "the journal does not start with the search's settings",
                    "choose another --out, or --overwrite to start over",
                ));
            }
            None => events.clear(),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let length = events_length(path, events.len())?;
        file.set_len(length).map_err(|e| Error::io(path, e))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
        };
        std::io::Seek::seek(&mut journal.file, std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(path, e))?;
        if events.is_empty() {
            let first = Event::Search(settings.clone());
            journal.append(&first)?;
            events.push(first);
        }
        Ok((journal, events))
    }

    /// Appends one event and syncs it to disk.
    ///
    /// # Errors
    /// I/O errors naming the journal.
    pub fn append(&mut self, event: &Event) -> Result<()> {
        let line = serde_json::to_string(event).expect("events serialise");
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn read_events(path: &Path) -> Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Event>(line.trim_end()) {
            Ok(event) if complete => events.push(event),
            // Only the last line can be torn by a kill; anything else is damage.
            _ if i + 1 == lines.len() => break,
            Ok(_) | Err(_) => {
                return Err(Error::bad_file(
                    path,
                    format!("line {} is not a journal event", i + 1),
                    "the journal was edited or damaged; choose another --out or --overwrite",
                ));
            }
        }
    }
    Ok(events)
}

/// Bytes taken by the first `count` lines (what stays when a torn last line is dropped).
fn events_length(path: &Path, count: usize) -> Result<u64> {
    if count == 0 {
        return Ok(0);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .split_inclusive('\n')
        .take(count)
        .map(|l| l.len() as u64)
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> Settings {
        Settings {
            space: "[search]\n".into(),
            base: "seed = 1\n".into(),
            sampler: Sampler::Random,
            seed,
            eta: 3,
            rungs: vec![2, 7, 20],
        }
    }

    #[test]
    fn events_survive_a_reopen_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.jsonl");
        let job = Event::Job {
            trial: 0,
            rung: 0,
            epochs: 2,
            params: Some(serde_json::Map::new()),
        };
        {
            let (mut journal, events) = Journal::open(&path, &settings(1)).unwrap();
            assert_eq!(events, [Event::Search(settings(1))]);
            journal.append(&job).unwrap();
        }
        // A kill in the middle of the next line.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"kind\":\"result\",\"tri").unwrap();
        drop(file);
        let (mut journal, events) = Journal::open(&path, &settings(1)).unwrap();
        assert_eq!(events, [Event::Search(settings(1)), job.clone()]);
        journal.append(&job).unwrap();
        drop(journal);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("\"tri\n"));
    }

    #[test]
    fn another_search_in_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.jsonl");
        Journal::open(&path, &settings(1)).unwrap();
        let message = Journal::open(&path, &settings(2))
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("another space"), "{message}");
        assert!(message.contains("--overwrite"), "{message}");
    }

    #[test]
    fn damage_before_the_last_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tune.jsonl");
        Journal::open(&path, &settings(1)).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"garbage\n{\"kind\":\"job\",\"trial\":0,\"rung\":0,\"epochs\":2}\n")
            .unwrap();
        drop(file);
        let message = Journal::open(&path, &settings(1))
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("line 2"), "{message}");
    }
}
