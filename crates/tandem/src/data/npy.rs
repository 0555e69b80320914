//! Reading and writing `.npy` arrays: float features of any float dtype and ids of any integer
//! dtype, in either byte order and either memory order.

use std::path::Path;

use npyz::{DType, Endianness, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::data::Matrix;
use crate::error::{Error, Result};
use crate::fsio;

/// How many leading bytes hold the header for the checks before npyz parses it (a version 1
/// header is at most 64 KiB; a longer one is checked as far as it goes).
const HEADER_PREFIX: usize = 1 << 16;

/// Reads the header of an `.npy` stream whose first bytes are `head` (checked here: empty,
/// magic, header nesting) and which `reader` reads from its start; `reader` is left at the
/// first data byte.
fn open_header<R: std::io::Read>(path: &Path, head: &[u8], reader: &mut R) -> Result<NpyHeader> {
    if head.is_empty() {
        return Err(Error::bad_file(
            path,
            "the file is empty",
            "write it again with numpy.save",
        ));
    }
    if !head.starts_with(b"\x93NUMPY") {
        return Err(Error::bad_file(
            path,
            "not a .npy file (the magic bytes \\x93NUMPY are missing)",
            "save the array with numpy.save(path, array)",
        ));
    }
    check_header_nesting(path, head)?;
    NpyHeader::from_reader(reader).map_err(|e| {
        Error::bad_file(
            path,
            format!("unreadable .npy header: {e}"),
            "save the array again with numpy.save; the file may be truncated or from an unsupported format version",
        )
    })
}

/// [`open_header`], then npyz's reader over the data.
fn open<R: std::io::Read>(path: &Path, head: &[u8], mut reader: R) -> Result<NpyFile<R>> {
    let header = open_header(path, head, &mut reader)?;
    Ok(NpyFile::with_header(header, reader))
}

/// [`open`] on bytes in memory.
fn open_bytes(path: &Path, bytes: Vec<u8>) -> Result<NpyFile<std::io::Cursor<Vec<u8>>>> {
    let head = bytes[..bytes.len().min(HEADER_PREFIX)].to_vec();
    open(path, &head, std::io::Cursor::new(bytes))
}

/// numpy writes a header like `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`:
/// brackets nest two deep. npyz's header parser backtracks exponentially on deeply nested
/// brackets (found by fuzzing: 120 bytes of `((([[[` took over 10 s), so such headers are
/// refused before it sees them.
fn check_header_nesting(path: &Path, bytes: &[u8]) -> Result<()> {
    const MAX_DEPTH: usize = 4;
    let (len_at, len_size) = match bytes.get(6) {
        Some(1) => (8, 2),
        _ => (8, 4),
    };
    let Some(len) = bytes.get(len_at..len_at + len_size) else {
        return Ok(()); // too short: npyz reports the truncated header
    };
    let len = len
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let start = len_at + len_size;
    let header = &bytes[start.min(bytes.len())..(start + len).min(bytes.len())];
    let mut depth = 0usize;
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Error::bad_file(
                        path,
                        format!(
                            "unreadable .npy header: brackets nested more than {MAX_DEPTH} deep"
                        ),
                        "save the array again with numpy.save",
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn type_of(path: &Path, dtype: &DType) -> Result<(TypeChar, u64)> {
    match dtype {
        DType::Plain(ts) => Ok((ts.type_char(), ts.size_field())),
        other => Err(Error::bad_file(
            path,
            format!("structured dtype {} is not supported", other.descr()),
            "save a plain numeric array",
        )),
    }
}

fn shape_of(header: &NpyHeader) -> Vec<usize> {
    header.shape().iter().map(|&d| d as usize).collect()
}

fn truncated(path: &Path, e: std::io::Error) -> Error {
    Error::bad_file(
        path,
        format!("cannot read the array data: {e} (is the file truncated?)"),
        "write the file again with numpy.save",
    )
}

/// Reads a 2-D float array (float16, float32 or float64) as `f32`, rejecting NaN and infinity.
///
/// # Errors
/// [`Error::BadFile`] naming `path` for a missing magic, a bad header, a non-float dtype, a shape
/// that is not 2-D, zero rows or columns, truncated data, or a non-finite value (with its row and
/// column).
pub fn read_features(path: &Path) -> Result<Matrix> {
    use std::io::Read;
    // The values stream from the file into the matrix: the peak memory is the features once,
    // not the file's bytes and the features (8.5 → 4.3 GB on Flickr30K-size text features).
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut head = Vec::with_capacity(HEADER_PREFIX);
    (&mut reader)
        .take(HEADER_PREFIX as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    let mut stream = std::io::Cursor::new(&head).chain(reader);
    let header = open_header(path, &head, &mut stream)?;
    features_from(path, &header, stream, file_len)
}

/// [`read_features`] on the bytes of a file; `path` only names it in errors.
///
/// # Errors
/// As [`read_features`].
pub fn parse_features(path: &Path, bytes: Vec<u8>) -> Result<Matrix> {
    let head = &bytes[..bytes.len().min(HEADER_PREFIX)];
    let mut stream = bytes.as_slice();
    let header = open_header(path, head, &mut stream)?;
    features_from(path, &header, stream, bytes.len() as u64)
}

/// The shape and element type of a 2-D float `.npy` array, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeatureLayout {
    pub rows: usize,
    pub cols: usize,
    /// Bytes per element: 2, 4 or 8.
    pub size: usize,
    pub big_endian: bool,
    /// Stored column after column (numpy's `fortran_order`).
    pub fortran: bool,
}

impl FeatureLayout {
    /// The layout `header` promises, refused unless it is a non-empty 2-D float array whose
    /// values fit in the `stored` bytes of the file.
    fn of(path: &Path, header: &NpyHeader, stored: u64) -> Result<Self> {
        let shape = shape_of(header);
        let (kind, size) = type_of(path, &header.dtype())?;
        if kind != TypeChar::Float || !matches!(size, 2 | 4 | 8) {
            return Err(Error::bad_file(
                path,
                format!(
                    "features must be float16, float32 or float64, found {kind:?} of {size} bytes"
                ),
                "convert with array.astype(numpy.float32) before saving",
            ));
        }
        if shape.len() != 2 {
            return Err(Error::bad_file(
                path,
                format!("expected a 2-D array [rows, dim], found shape {shape:?}"),
                "reshape to [n, dim] before saving (e.g. array.reshape(len(array), -1))",
            ));
        }
        let (rows, cols) = (shape[0], shape[1]);
        if rows == 0 || cols == 0 {
            return Err(Error::bad_file(
                path,
                format!("the array is empty (shape [{rows}, {cols}])"),
                "save at least one row with at least one feature",
            ));
        }
        let fits = (rows as u64)
            .checked_mul(cols as u64)
            .and_then(|n| n.checked_mul(size))
            .is_some_and(|n| n <= stored);
        if !fits {
            return Err(Error::bad_file(
                path,
                format!(
                    "the header promises [{rows}, {cols}] values of {size} bytes but the file holds {stored} bytes (is the file truncated?)"
                ),
                "write the file again with numpy.save",
            ));
        }
        let big_endian = match header.dtype() {
            DType::Plain(ts) => ts.endianness() == Endianness::Big,
            _ => false,
        };
        Ok(FeatureLayout {
            rows,
            cols,
            size: size as usize,
            big_endian,
            fortran: header.order() == Order::Fortran,
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols * self.size
    }
}

/// The layout of the 2-D float array in the `.npy` file at `path` and the offset of its first
/// value, read from the header alone (the values stay on disk).
///
/// # Errors
/// As [`read_features`], except that values are not read (so not checked).
pub(crate) fn read_feature_layout(path: &Path) -> Result<(FeatureLayout, u64)> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(HEADER_PREFIX);
    (&file)
        .take(HEADER_PREFIX as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    let mut reader = head.as_slice();
    let header = open_header(path, &head, &mut reader)?;
    let offset = (head.len() - reader.len()) as u64;
    let layout = FeatureLayout::of(path, &header, file_len.saturating_sub(offset))?;
    Ok((layout, offset))
}

/// The checked matrix from `data`, the stream right after `header`; `stored` is the size of the
/// whole file, so a header promising more values than the file holds is refused before any
/// allocation.
fn features_from<R: std::io::Read>(
    path: &Path,
    header: &NpyHeader,
    data: R,
    stored: u64,
) -> Result<Matrix> {
    let FeatureLayout {
        rows,
        cols,
        size,
        big_endian,
        fortran,
    } = FeatureLayout::of(path, header, stored)?;
    let data = decode_floats(data, rows * cols * size, size, big_endian)
        .map_err(|e| truncated(path, e))?;
    let data = if fortran {
        transpose(&data, cols, rows)
    } else {
        data
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(non_finite(path, data[i], i / cols, i % cols));
    }
    Ok(Matrix { rows, cols, data })
}

/// The error for a NaN or infinite feature at `row`, `column` of `path`.
pub(crate) fn non_finite(path: &Path, value: f32, row: usize, column: usize) -> Error {
    Error::bad_file(
        path,
        format!("non-finite value {value} at row {row}, column {column}"),
        "replace NaN/Inf features (e.g. numpy.nan_to_num) or drop those rows",
    )
}

/// Reads `bytes` bytes of `size`-byte floats (2, 4 or 8) and converts them to `f32`.
///
/// Large blocks and a plain byte-to-float conversion: npyz's element-by-element reader took about
/// 40 s for the 4.3 GB of Flickr30K-size features; this is bounded by the disk (or page cache).
fn decode_floats(
    mut data: impl std::io::Read,
    bytes: usize,
    size: usize,
    big_endian: bool,
) -> std::io::Result<Vec<f32>> {
    const BLOCK: usize = 1 << 22; // a multiple of every element size
    let mut out = Vec::with_capacity(bytes / size);
    let mut block = vec![0u8; BLOCK.min(bytes)];
    let mut left = bytes;
    while left > 0 {
        let chunk = &mut block[..BLOCK.min(left)];
        data.read_exact(chunk)?;
        left -= chunk.len();
        decode_into(chunk, size, big_endian, &mut out);
    }
    Ok(out)
}

/// Appends the `size`-byte floats (2, 4 or 8) of `bytes` to `out` as `f32`.
pub(crate) fn decode_into(bytes: &[u8], size: usize, big_endian: bool, out: &mut Vec<f32>) {
    let elements = bytes.chunks_exact(size);
    match (size, big_endian) {
        (2, false) => out.extend(elements.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
        (2, true) => out.extend(elements.map(|c| half::f16::from_be_bytes([c[0], c[1]]).to_f32())),
        (4, false) => out.extend(elements.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        (4, true) => out.extend(elements.map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
        (_, false) => {
            out.extend(elements.map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
        (_, true) => {
            out.extend(elements.map(|c| {
                f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
    }
}

/// Column-major `[cols_of_source... ]` to row-major: `data` holds `outer` runs of `inner` values.
fn transpose(data: &[f32], outer: usize, inner: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for o in 0..outer {
        for i in 0..inner {
            out[i * outer + o] = data[o * inner + i];
        }
    }
    out
}

/// Reads a 1-D array of any integer dtype as `i64`.
///
/// # Errors
/// [`Error::BadFile`] naming `path` for a bad file, a non-integer dtype or a shape that is not 1-D.
pub fn read_ids(path: &Path) -> Result<Vec<i64>> {
    parse_ids(path, fsio::read(path)?)
}

/// [`read_ids`] on the bytes of a file; `path` only names it in errors.
///
/// # Errors
/// As [`read_ids`].
pub fn parse_ids(path: &Path, bytes: Vec<u8>) -> Result<Vec<i64>> {
    let npy = open_bytes(path, bytes)?;
    let shape = shape_of(&npy);
    let (kind, size) = type_of(path, &npy.dtype())?;
    if shape.len() != 1 {
        return Err(Error::bad_file(
            path,
            format!("expected a 1-D array of image indices, found shape {shape:?}"),
            "save a flat integer array (array.ravel())",
        ));
    }
    let ids: Vec<i64> = match (kind, size) {
        (TypeChar::Int, 1) => widen::<i8>(path, npy)?,
        (TypeChar::Int, 2) => widen::<i16>(path, npy)?,
        (TypeChar::Int, 4) => widen::<i32>(path, npy)?,
        (TypeChar::Int, 8) => widen::<i64>(path, npy)?,
        (TypeChar::Uint, 1) => widen::<u8>(path, npy)?,
        (TypeChar::Uint, 2) => widen::<u16>(path, npy)?,
        (TypeChar::Uint, 4) => widen::<u32>(path, npy)?,
        (TypeChar::Uint, 8) => widen::<u64>(path, npy)?,
        (k, s) => {
            return Err(Error::bad_file(
                path,
                format!("image indices must be integers, found {k:?} of {s} bytes"),
                "convert with array.astype(numpy.int64) before saving",
            ));
        }
    };
    Ok(ids)
}

/// Reads every element as `T` and widens it to `i64`; a `u64` beyond `i64::MAX` saturates (and is
/// then rejected as out of range by the dataset checks).
fn widen<T>(path: &Path, npy: NpyFile<std::io::Cursor<Vec<u8>>>) -> Result<Vec<i64>>
where
    T: npyz::Deserialize,
    i64: TryFrom<T>,
{
    Ok(npy
        .into_vec::<T>()
        .map_err(|e| truncated(path, e))?
        .into_iter()
        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
        .collect())
}

/// Encodes `data` with the given `shape` (C order) as `.npy` bytes.
fn encode<T: npyz::AutoSerialize + Copy>(shape: &[u64], data: &[T]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()
        .expect("writing to memory cannot fail");
    writer
        .extend(data.iter().copied())
        .expect("writing to memory cannot fail");
    writer.finish().expect("writing to memory cannot fail");
    buf
}

/// Encodes a row-major `f32` matrix as `.npy` bytes.
pub fn encode_f32(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    encode(&[rows as u64, cols as u64], data)
}

/// Encodes a 1-D integer array as `.npy` bytes.
pub fn encode_i64(data: &[i64]) -> Vec<u8> {
    encode(&[data.len() as u64], data)
}

/// Writes a row-major `f32` matrix to `path` atomically.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    fsio::write_atomic(path, &encode_f32(rows, cols, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_header_is_refused_quickly() {
        // The shape of a fuzzer finding: a v1 header of nested brackets.
        let header = format!("{}{}{}", "(".repeat(19), "[".repeat(60), "(".repeat(17));
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let e = parse_features(Path::new("deep.npy"), bytes.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("deep.npy") && e.contains("nested"), "{e}");
        assert!(parse_ids(Path::new("deep.npy"), bytes).is_err());
    }

    #[test]
    fn float_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_f32(&p, 2, 3, &[1., 2., 3., 4., 5., 6.]).unwrap();
        let m = read_features(&p).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.data, vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn ids_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.npy");
        fsio::write_atomic(&p, &encode_i64(&[0, 5, 2])).unwrap();
        assert_eq!(read_ids(&p).unwrap(), vec![0, 5, 2]);
    }

    #[test]
    fn ids_of_every_integer_dtype_widen_to_i64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.npy");
        let check = |bytes: Vec<u8>, expected: Vec<i64>| {
            fsio::write_atomic(&p, &bytes).unwrap();
            assert_eq!(read_ids(&p).unwrap(), expected);
        };
        check(encode(&[3], &[0u8, 7, 255]), vec![0, 7, 255]);
        check(encode(&[2], &[-3i16, 9]), vec![-3, 9]);
        check(encode(&[2], &[5u32, 6]), vec![5, 6]);
        check(encode(&[2], &[-1i8, 1]), vec![-1, 1]);
        check(encode(&[2], &[u64::MAX, 2]), vec![i64::MAX, 2]);
        check(encode(&[1], &[4i32]), vec![4]);
    }

    /// `values` written with the dtype `descr` (e.g. `>f2`) by npyz, as `.npy` bytes.
    fn encoded_as<T: npyz::Serialize + Copy>(descr: &str, rows: u64, values: &[T]) -> Vec<u8> {
        let dtype = DType::Plain(descr.parse().unwrap());
        let mut buf = Vec::new();
        let mut writer = npyz::WriteOptions::new()
            .dtype(dtype)
            .shape(&[rows, values.len() as u64 / rows])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        writer.extend(values.iter().copied()).unwrap();
        writer.finish().unwrap();
        buf
    }

    /// Every float width in both byte orders decodes to what npyz's element reader gives,
    /// across the block boundary of the bulk reader.
    #[test]
    fn every_float_dtype_and_byte_order_decodes_like_npyz() {
        let n = (1 << 22) / 2 + 6; // float16 elements past one 4 MiB block
        let values: Vec<f32> = (0..n).map(|i| (i % 977) as f32 * 0.25 - 100.0).collect();
        let path = Path::new("x.npy");
        for descr in ["<f2", ">f2", "<f4", ">f4", "<f8", ">f8"] {
            let bytes = match &descr[1..] {
                "f2" => {
                    let halves: Vec<half::f16> =
                        values.iter().map(|&v| half::f16::from_f32(v)).collect();
                    encoded_as(descr, 2, &halves)
                }
                "f4" => encoded_as(descr, 2, &values),
                _ => {
                    let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
                    encoded_as(descr, 2, &wide)
                }
            };
            let reference: Vec<f32> = {
                let npy = NpyFile::new(bytes.as_slice()).unwrap();
                match &descr[1..] {
                    "f2" => npy
                        .into_vec::<half::f16>()
                        .unwrap()
                        .into_iter()
                        .map(f32::from)
                        .collect(),
                    "f4" => npy.into_vec::<f32>().unwrap(),
                    _ => npy
                        .into_vec::<f64>()
                        .unwrap()
                        .into_iter()
                        .map(|v| v as f32)
                        .collect(),
                }
            };
            let m = parse_features(path, bytes).unwrap();
            assert_eq!((m.rows, m.cols), (2, n / 2), "{descr}");
            assert_eq!(m.data, reference, "{descr}");
            assert_eq!(
                m.data, values,
                "{descr}: these values are exact in every width"
            );
        }
    }

    /// A header that promises more values than the file holds is refused before any
    /// allocation, naming the file.
    #[test]
    fn header_promising_more_than_the_file_holds_is_refused() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (9999999999, 99999), }\n";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let e = parse_features(Path::new("big.npy"), bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.npy") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn fortran_order_is_transposed_to_rows() {
        assert_eq!(
            transpose(&[1., 4., 2., 5., 3., 6.], 3, 2),
            vec![1., 2., 3., 4., 5., 6.]
        );
    }
}
