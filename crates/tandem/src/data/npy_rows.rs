//! Writing an `f32` matrix to `.npy` row block by row block, so an encoder's output never has
//! to fit in memory, and resuming after a kill: rows go to `<file>.partial` behind a header of
//! fixed size, whose shape is filled in when the last row is written; then the file is renamed
//! into place. A killed run leaves the partial file, whose rows up to the last committed block
//! are kept by [`NpyRowWriter::resume`].

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Header bytes reserved: magic, version, length and the dict padded to 128 (numpy's
/// alignment is 64), room for any shape.
const HEADER_LEN: usize = 128;

/// A `[rows, cols]` little-endian `f32` `.npy` header padded to [`HEADER_LEN`] bytes.
fn header(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let len = HEADER_LEN - 10;
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(HEADER_LEN - 1, b' ');
    h.push(b'\n');
    h
}

/// Appends rows to `<path>.partial`; [`finish`](Self::finish) makes it `path`.
#[derive(Debug)]
pub struct NpyRowWriter {
    path: PathBuf,
    partial: PathBuf,
    file: File,
    cols: usize,
    rows: usize,
}

impl NpyRowWriter {
    /// The partial file beside `path`.
    pub fn partial_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        path.with_file_name(name)
    }

    /// Starts a new partial file (replacing any).
    ///
    /// # Errors
    /// [`Error::Io`] naming the partial file.
    pub fn create(path: &Path, cols: usize) -> Result<Self> {
        let partial = Self::partial_path(path);
        let mut file = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        file.write_all(&header(0, cols))
            .map_err(|e| Error::io(&partial, e))?;
        Ok(NpyRowWriter {
            path: path.to_path_buf(),
            partial,
            file,
            cols,
            rows: 0,
        })
    }

    /// Reopens a partial file keeping its first `rows` rows (what the caller recorded as
    /// committed), dropping anything written after them.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::BadFile`] when the partial file is shorter than `rows` rows.
    pub fn resume(path: &Path, cols: usize, rows: usize) -> Result<Self> {
        let partial = Self::partial_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(|e| Error::io(&partial, e))?;
        let want = (HEADER_LEN + rows * cols * 4) as u64;
        let len = file.metadata().map_err(|e| Error::io(&partial, e))?.len();
        if len < want {
            return Err(Error::bad_file(
                &partial,
                format!("holds {len} bytes, fewer than the {rows} rows recorded as done"),
                "delete it and its progress file to start again",
            ));
        }
        file.set_len(want).map_err(|e| Error::io(&partial, e))?;
        let mut writer = NpyRowWriter {
            path: path.to_path_buf(),
            partial,
            file,
            cols,
            rows,
        };
        writer
            .file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&writer.partial, e))?;
        Ok(writer)
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends rows (each `cols` values) and flushes them to disk, so they survive a kill.
    ///
    /// # Errors
    /// [`Error::Io`]; a row of the wrong width is an [`Error::BadFile`].
    pub fn append(&mut self, rows: &[Vec<f32>]) -> Result<()> {
        let mut bytes = Vec::with_capacity(rows.len() * self.cols * 4);
        for row in rows {
            if row.len() != self.cols {
                return Err(Error::bad_file(
                    &self.partial,
                    format!(
                        "a row of {} values, the file's rows have {}",
                        row.len(),
                        self.cols
                    ),
                    "this is a bug in the caller",
                ));
            }
            bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        }
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.partial, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.partial, e))?;
        self.rows += rows.len();
        Ok(())
    }

    /// Writes the final shape and renames the file into place.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn finish(mut self) -> Result<PathBuf> {
        let io = |e| Error::io(&self.partial, e);
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file
            .write_all(&header(self.rows, self.cols))
            .map_err(io)?;
        self.file.sync_all().map_err(io)?;
        drop(self.file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::read_features;

    #[test]
    fn rows_written_in_blocks_read_back_as_one_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let mut w = NpyRowWriter::create(&path, 3).unwrap();
        w.append(&[vec![1., 2., 3.]]).unwrap();
        w.append(&[vec![4., 5., 6.], vec![7., 8., 9.]]).unwrap();
        assert!(!path.exists(), "only the partial file exists before finish");
        w.finish().unwrap();
        let m = read_features(&path).unwrap();
        assert_eq!((m.rows, m.cols), (3, 3));
        assert_eq!(m.data, (1..=9).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(header(123_456_789_012, 1280).len(), HEADER_LEN);
    }

    #[test]
    fn resume_keeps_the_committed_rows_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let mut w = NpyRowWriter::create(&path, 2).unwrap();
        w.append(&[vec![1., 2.], vec![3., 4.], vec![5., 6.]])
            .unwrap();
        drop(w); // killed after three rows, of which two were recorded as done
        let mut w = NpyRowWriter::resume(&path, 2, 2).unwrap();
        w.append(&[vec![7., 8.]]).unwrap();
        w.finish().unwrap();
        assert_eq!(
            read_features(&path).unwrap().data,
            vec![1., 2., 3., 4., 7., 8.]
        );
        assert!(NpyRowWriter::resume(&dir.path().join("g.npy"), 2, 0).is_err());
    }
}
