//! Feature rows that stay on disk: one or more `.npy` shards read row by row at their byte
//! offsets (`pread`), so a dataset larger than memory trains in the memory of a batch. The
//! page cache, not the process, keeps the hot rows; nothing is mapped.

use std::fs::File;
use std::path::PathBuf;

use crate::data::npy::{self, FeatureLayout};
use crate::error::{Error, Result};

/// Threads reading one gather's rows at once.
const READERS: usize = 4;
/// Gathers of fewer rows are read on the calling thread.
const READ_IN_PARALLEL_FROM: usize = 256;

/// One `.npy` file of rows.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    file: File,
    layout: FeatureLayout,
    /// Byte offset of the first value.
    data_offset: u64,
    /// Global index of the shard's first row.
    first_row: usize,
}

/// The rows of one or more `.npy` files with the same width, numbered across the files in
/// order.
#[derive(Debug)]
pub struct StreamedRows {
    shards: Vec<Shard>,
    rows: usize,
    cols: usize,
}

impl StreamedRows {
    /// Opens the files' headers; values are read (and checked) when rows are gathered.
    ///
    /// # Errors
    /// [`Error::BadFile`] naming the file for a bad header, a non-float or non-2-D array, an
    /// array stored column-major (its rows are not contiguous), or a width that differs from
    /// the first file's.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut rows = 0;
        for path in paths {
            let (layout, data_offset) = npy::read_feature_layout(path)?;
            if layout.fortran {
                return Err(Error::bad_file(
                    path,
                    "the array is stored column-major (fortran_order), so its rows cannot be read one at a time",
                    "save it row-major with numpy.save(path, numpy.ascontiguousarray(array)), or load the dataset into memory (--features memory)",
                ));
            }
            if let Some(first) = shards.first().map(|s: &Shard| s.layout.cols)
                && first != layout.cols
            {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "rows of {} features, but {} has rows of {first}",
                        layout.cols,
                        paths[0].display()
                    ),
                    "write every shard of a dataset with the same feature width",
                ));
            }
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            shards.push(Shard {
                path: path.clone(),
                file,
                layout,
                data_offset,
                first_row: rows,
            });
            rows += layout.rows;
        }
        let cols = shards.first().map_or(0, |s| s.layout.cols);
        Ok(StreamedRows { shards, rows, cols })
    }

    /// Rows across all shards.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Features per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Reads the rows `ids` in that order into one row-major buffer. The reads go in file
    /// order (sorted by position), which a cold disk serves faster than the batch's order, and
    /// a batch's worth of rows is read by 4 threads at once: a disk serves several
    /// reads in flight faster than one after another.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when a read fails (a file shortened since it was opened),
    /// [`Error::BadFile`] for a NaN or infinite value, with its row and column.
    ///
    /// # Panics
    /// When an id is not below [`StreamedRows::rows`] (the dataset checks its ids on open).
    pub fn gather(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.cols];
        let mut rows: Vec<(u32, &mut [f32])> = ids
            .iter()
            .copied()
            .zip(out.chunks_mut(self.cols.max(1)))
            .collect();
        rows.sort_unstable_by_key(|(id, _)| *id);
        if rows.len() < READ_IN_PARALLEL_FROM {
            self.read_rows(&mut rows)?;
        } else {
            let per_reader = rows.len().div_ceil(READERS);
            std::thread::scope(|scope| {
                let readers: Vec<_> = rows
                    .chunks_mut(per_reader)
                    .map(|part| scope.spawn(move || self.read_rows(part)))
                    .collect();
                // The scope joins every reader; the first error is the one reported.
                readers
                    .into_iter()
                    .try_for_each(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            })?;
        }
        Ok(out)
    }

    /// Reads each `(id, row)`'s values into `row`, in the order given.
    fn read_rows(&self, rows: &mut [(u32, &mut [f32])]) -> Result<()> {
        let mut bytes = Vec::new();
        let mut values = Vec::with_capacity(self.cols);
        for (id, out) in rows {
            let id = *id as usize;
            assert!(id < self.rows, "row {id} of {}", self.rows);
            let shard = &self.shards[self.shard_of(id)];
            let local = id - shard.first_row;
            let row_bytes = shard.layout.row_bytes();
            bytes.resize(row_bytes, 0);
            let offset = shard.data_offset + (local * row_bytes) as u64;
            read_exact_at(&shard.file, &mut bytes, offset).map_err(|e| {
                Error::io(
                    &shard.path,
                    std::io::Error::new(e.kind(), format!("reading row {local}: {e}")),
                )
            })?;
            values.clear();
            npy::decode_into(
                &bytes,
                shard.layout.size,
                shard.layout.big_endian,
                &mut values,
            );
            if let Some(c) = values.iter().position(|v| !v.is_finite()) {
                return Err(npy::non_finite(&shard.path, values[c], local, c));
            }
            out.copy_from_slice(&values);
        }
        Ok(())
    }

    /// The shard holding global row `id`.
    fn shard_of(&self, id: usize) -> usize {
        self.shards.partition_point(|s| s.first_row <= id) - 1
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::{read_features, write_f32};

    fn values(rows: usize, cols: usize, from: usize) -> Vec<f32> {
        (0..rows * cols).map(|v| (from * cols + v) as f32).collect()
    }

    #[test]
    fn rows_across_shards_read_as_one_matrix_does() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        write_f32(&a, 3, 4, &values(3, 4, 0)).unwrap();
        write_f32(&b, 2, 4, &values(2, 4, 3)).unwrap();
        let rows = StreamedRows::open(&[a.clone(), b]).unwrap();
        assert_eq!((rows.rows(), rows.cols()), (5, 4));
        let whole = values(5, 4, 0);
        let ids = [4u32, 0, 3, 3, 2];
        let expected: Vec<f32> = ids
            .iter()
            .flat_map(|&i| whole[i as usize * 4..(i as usize + 1) * 4].to_vec())
            .collect();
        assert_eq!(rows.gather(&ids).unwrap(), expected);
        let single = StreamedRows::open(std::slice::from_ref(&a)).unwrap();
        assert_eq!(single.gather(&[2, 1]).unwrap(), {
            let m = read_features(&a).unwrap();
            [m.row(2), m.row(1)].concat()
        });
    }

    #[test]
    fn a_large_gather_read_by_several_threads_equals_the_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        write_f32(&a, 200, 3, &values(200, 3, 0)).unwrap();
        let mut second = values(150, 3, 200);
        second[100 * 3 + 2] = f32::NEG_INFINITY; // global row 300
        write_f32(&b, 150, 3, &second).unwrap();
        let rows = StreamedRows::open(&[a, b]).unwrap();
        let ids: Vec<u32> = (0..1000u32)
            .map(|k| (k * 7919) % 350)
            .filter(|&i| i != 300)
            .collect();
        assert!(ids.len() >= READ_IN_PARALLEL_FROM);
        let whole = values(350, 3, 0);
        let expected: Vec<f32> = ids
            .iter()
            .flat_map(|&i| whole[i as usize * 3..(i as usize + 1) * 3].to_vec())
            .collect();
        assert_eq!(rows.gather(&ids).unwrap(), expected);
        let mut with_bad = ids.clone();
        with_bad.push(300);
        let e = rows.gather(&with_bad).unwrap_err().to_string();
        assert!(
            e.contains("b.npy") && e.contains("row 100, column 2"),
            "{e}"
        );
    }

    #[test]
    fn a_non_finite_value_is_named_when_its_row_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        let mut data = values(3, 2, 0);
        data[5] = f32::NAN;
        write_f32(&path, 3, 2, &data).unwrap();
        let rows = StreamedRows::open(std::slice::from_ref(&path)).unwrap();
        assert!(rows.gather(&[0, 1]).is_ok());
        let e = rows.gather(&[2]).unwrap_err().to_string();
        assert!(e.contains("f.npy") && e.contains("row 2, column 1"), "{e}");
    }

    #[test]
    fn shards_of_different_widths_and_truncated_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        write_f32(&a, 2, 3, &values(2, 3, 0)).unwrap();
        write_f32(&b, 2, 4, &values(2, 4, 0)).unwrap();
        let e = StreamedRows::open(&[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.npy") && e.contains("rows of 4 features"),
            "{e}"
        );
        let rows = StreamedRows::open(std::slice::from_ref(&a)).unwrap();
        let len = std::fs::metadata(&a).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .set_len(len - 4)
            .unwrap();
        let e = rows.gather(&[1]).unwrap_err().to_string();
        assert!(e.contains("a.npy") && e.contains("row 1"), "{e}");
    }
}
