//! Feature matrices in MATLAB's Level 5 MAT-files (`save(..., '-v7')`, `scipy.io.savemat`), the
//! format of the reference's released image features: the 128-byte header, then data elements,
//! compressed (zlib) or not; a numeric 2-D matrix stored column-major in any numeric type.
//! MATLAB v7.3 files are HDF5 and go to `data::hdf5`.

use std::io::Read;
use std::path::Path;

use super::Matrix;
use crate::error::{Error, Result};
use crate::fsio;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Names the reference's code reads (`image_features`, `text_features`), preferred when a file
/// holds several matrices.
pub(super) const KNOWN_NAMES: [&str; 4] = ["image_features", "text_features", "features", "feats"];

/// A numeric matrix as stored: `rows × cols`, column-major.
#[derive(Debug, Clone, PartialEq)]
struct Variable {
    name: String,
    rows: usize,
    cols: usize,
    column_major: Vec<f32>,
}

/// Reads the feature matrix of a `.mat` file, one item per row. With `items` given, a matrix
/// stored with one item per *column* (as MATLAB users often save them) is transposed.
///
/// # Errors
/// [`Error::BadFile`] naming the file for a malformed or truncated file, no
/// numeric 2-D matrix, several without a known name, or non-finite values.
pub fn read_mat_features(path: &Path, items: Option<usize>) -> Result<Matrix> {
    let bytes = fsio::read(path)?;
    let bad = |problem: String| {
        Error::bad_file(
            path,
            problem,
            "save the features as a MATLAB -v7 .mat (one numeric matrix) or as .npy",
        )
    };
    if bytes.len() >= 520 && &bytes[512..520] == b"\x89HDF\r\n\x1a\n" {
        // MATLAB v7.3: HDF5 behind the 512-byte header.
        drop(bytes);
        return super::hdf5::read_hdf5_features(path, items);
    }
    let variables = parse(&bytes).map_err(bad)?;
    let v = choose(variables).map_err(bad)?;
    oriented(
        &v.name,
        v.rows,
        v.cols,
        |r, c| v.column_major[c * v.rows + r],
        items,
    )
    .map_err(bad)
}

/// A `rows × cols` matrix (read through `at(r, c)`) as one item per row: transposed when
/// `items` matches its columns and not its rows. Non-finite values are an error.
pub(super) fn oriented(
    name: &str,
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> f32,
    items: Option<usize>,
) -> std::result::Result<Matrix, String> {
    let transpose = items.is_some_and(|n| cols == n && rows != n);
    let (out_rows, out_cols) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut data = Vec::with_capacity(rows * cols);
    for row in 0..out_rows {
        for col in 0..out_cols {
            let v = if transpose {
                at(col, row)
            } else {
                at(row, col)
            };
            if !v.is_finite() {
                return Err(format!(
                    "`{name}` has a non-finite value at item {row}, feature {col}"
                ));
            }
            data.push(v);
        }
    }
    Ok(Matrix {
        rows: out_rows,
        cols: out_cols,
        data,
    })
}

fn choose(mut variables: Vec<Variable>) -> std::result::Result<Variable, String> {
    if variables.len() == 1 {
        return Ok(variables.remove(0));
    }
    if let Some(i) = variables
        .iter()
        .position(|v| KNOWN_NAMES.contains(&v.name.as_str()))
    {
        return Ok(variables.remove(i));
    }
    let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
    if names.is_empty() {
        return Err("holds no numeric 2-D matrix".into());
    }
    Err(format!(
        "holds {} matrices ({}) and none is named image_features or text_features",
        names.len(),
        names.join(", ")
    ))
}

fn u32_at(b: &[u8], at: usize) -> std::result::Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| "the file is truncated".to_string())
}

/// The numeric 2-D matrices of the file, in order.
fn parse(bytes: &[u8]) -> std::result::Result<Vec<Variable>, String> {
    if bytes.len() < 128 || !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err("not a MATLAB 5 MAT-file (the header text is missing)".into());
    }
    if &bytes[126..128] != b"IM" {
        return Err("a big-endian MAT-file, which tandem does not read".into());
    }
    let mut out = Vec::new();
    elements(&bytes[128..], &mut out, 0)?;
    Ok(out)
}

/// Walks the top-level data elements, decompressing as needed.
fn elements(
    mut b: &[u8],
    out: &mut Vec<Variable>,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 2 {
        return Err("compressed elements nest too deep".into());
    }
    while b.len() >= 8 {
        let (kind, len) = (u32_at(b, 0)?, u32_at(b, 4)? as usize);
        let body = b
            .get(8..8 + len)
            .ok_or("the file is truncated inside an element")?;
        match kind {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(body)
                    .take(1 << 34)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("a compressed element does not inflate: {e}"))?;
                elements(&inflated, out, depth + 1)?;
                b = &b[8 + len..];
            }
            _ => {
                if kind == MI_MATRIX
                    && let Some(v) = matrix(body)?
                {
                    out.push(v);
                }
                b = b.get((8 + len).next_multiple_of(8)..).unwrap_or(&[]);
            }
        }
    }
    Ok(())
}

/// One sub-element: `(type, data)`, and the rest after its padding.
fn sub_element(b: &[u8]) -> std::result::Result<(u32, &[u8], &[u8]), String> {
    let first = u32_at(b, 0)?;
    if first >> 16 != 0 {
        // Small element: type and length in 4 bytes, data in the next 4.
        let (kind, len) = (first & 0xffff, (first >> 16) as usize);
        let data = b.get(4..4 + len.min(4)).ok_or("the file is truncated")?;
        return Ok((kind, data, b.get(8..).unwrap_or(&[])));
    }
    let len = u32_at(b, 4)? as usize;
    let data = b
        .get(8..8 + len)
        .ok_or("the file is truncated inside a matrix")?;
    Ok((
        first,
        data,
        b.get((8 + len).next_multiple_of(8)..).unwrap_or(&[]),
    ))
}

/// A numeric, real, 2-D matrix; `None` for anything else (structs, cells, strings, sparse, N-D).
fn matrix(b: &[u8]) -> std::result::Result<Option<Variable>, String> {
    let (_, flags, rest) = sub_element(b)?;
    let class = flags.first().copied().unwrap_or(0);
    let complex = flags.get(1).is_some_and(|f| f & 0x08 != 0);
    let (_, dims, rest) = sub_element(rest)?;
    let (_, name, rest) = sub_element(rest)?;
    let name = String::from_utf8_lossy(name).into_owned();
    // Numeric classes: double 6, single 7, int8 … uint64 8–15.
    if !(6..=15).contains(&class) || complex || dims.len() != 8 {
        return Ok(None);
    }
    let rows = i32::from_le_bytes(dims[0..4].try_into().expect("4 bytes"));
    let cols = i32::from_le_bytes(dims[4..8].try_into().expect("4 bytes"));
    let (Ok(rows), Ok(cols)) = (usize::try_from(rows), usize::try_from(cols)) else {
        return Err(format!("`{name}` has negative dimensions"));
    };
    let (kind, data, _) = sub_element(rest)?;
    let values = numbers(kind, data)
        .ok_or_else(|| format!("`{name}` is stored as type {kind}, not a number type"))?;
    if values.len() != rows * cols {
        return Err(format!(
            "`{name}` is {rows}×{cols} but holds {} values",
            values.len()
        ));
    }
    Ok(Some(Variable {
        name,
        rows,
        cols,
        column_major: values,
    }))
}

/// The values of a numeric data element as f32.
fn numbers(kind: u32, b: &[u8]) -> Option<Vec<f32>> {
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect()
    }
    Some(match kind {
        MI_INT8 => each::<1>(b, |c| i8::from_le_bytes(c) as f32),
        MI_UINT8 => each::<1>(b, |c| c[0] as f32),
        MI_INT16 => each::<2>(b, |c| i16::from_le_bytes(c) as f32),
        MI_UINT16 => each::<2>(b, |c| u16::from_le_bytes(c) as f32),
        MI_INT32 => each::<4>(b, |c| i32::from_le_bytes(c) as f32),
        MI_UINT32 => each::<4>(b, |c| u32::from_le_bytes(c) as f32),
        MI_SINGLE => each::<4>(b, f32::from_le_bytes),
        MI_DOUBLE => each::<8>(b, |c| f64::from_le_bytes(c) as f32),
        MI_INT64 => each::<8>(b, |c| i64::from_le_bytes(c) as f32),
        MI_UINT64 => each::<8>(b, |c| u64::from_le_bytes(c) as f32),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mat")
            .join(name)
    }

    /// `(np.arange(12).reshape(3, 4) - 5.5) / 4`, row-major.
    fn expected() -> Vec<f32> {
        (0..12).map(|v| (v as f32 - 5.5) / 4.0).collect()
    }

    #[test]
    fn reads_what_scipy_writes_plain_and_compressed() {
        for name in ["plain_v5.mat", "compressed_v5.mat"] {
            let m = read_mat_features(&fixture(name), None).unwrap();
            assert_eq!((m.rows, m.cols), (3, 4), "{name}");
            assert_eq!(m.data, expected(), "{name}");
        }
    }

    #[test]
    fn one_item_per_column_is_transposed_when_the_count_says_so() {
        let m = read_mat_features(&fixture("columns_v5.mat"), Some(3)).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        let want: Vec<f32> = expected().iter().map(|v| (v * 4.0).trunc()).collect();
        assert_eq!(m.data, want);
        let stored = read_mat_features(&fixture("columns_v5.mat"), None).unwrap();
        assert_eq!((stored.rows, stored.cols), (4, 3));
    }

    #[test]
    fn matlab_v73_and_h5_files_read_through_hdf5() {
        // v73.mat stores the 3×4 matrix transposed, as MATLAB does.
        let m = read_mat_features(&fixture("v73.mat"), Some(3)).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, expected());
        let h5 = super::super::hdf5::read_hdf5_features(&fixture("features.h5"), Some(3)).unwrap();
        assert_eq!((h5.rows, h5.cols), (3, 4));
        assert_eq!(h5.data, expected());
        let e = super::super::hdf5::read_hdf5_features(&fixture("plain_v5.mat"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plain_v5.mat") && e.contains("not a readable HDF5 file"),
            "{e}"
        );
    }

    #[test]
    fn ambiguous_and_broken_files_are_one_clear_error() {
        let e = read_mat_features(&fixture("two_matrices.mat"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 matrices (a, b)"), "{e}");
        let bytes = std::fs::read(fixture("compressed_v5.mat")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in [0, 100, 130, 200, bytes.len() - 1] {
            let p = dir.path().join("cut.mat");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(read_mat_features(&p, None).is_err(), "cut at {cut}");
        }
    }
}
