//! A graph as a safetensors file: `levels` (u8, one per node), `layer0` (u32, `n × (1 + 2M)`),
//! `upper` (u32) and `entry` (u32: `M`, the entry node, its layer; `u32::MAX` for the last two
//! in a graph of no rows). Only `format` is metadata, so the same graph always writes the same
//! bytes. Reading checks every count and link, so a damaged file is refused rather than
//! walked.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

use super::kernel::{Rows, WalkRows};
use super::links::{Links, RawLinks};
use super::{Entry, Graph};

/// The `format` metadata value of a graph file.
const FORMAT: &str = "tandem-hnsw-1";

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The file's bytes.
pub fn write(graph: &Graph) -> Vec<u8> {
    let raw = graph.links.to_raw();
    let n = raw.levels.len();
    let layer0 = words_to_bytes(&raw.layer0);
    let upper = words_to_bytes(&raw.upper);
    let (node, top) = graph
        .entry
        .map_or((u32::MAX, u32::MAX), |e| (e.node, e.level as u32));
    let entry = words_to_bytes(&[raw.connections as u32, node, top]);
    let views = [
        ("levels", Dtype::U8, vec![n], &raw.levels[..]),
        (
            "layer0",
            Dtype::U32,
            vec![n, 1 + 2 * raw.connections],
            &layer0[..],
        ),
        ("upper", Dtype::U32, vec![raw.upper.len()], &upper[..]),
        ("entry", Dtype::U32, vec![3], &entry[..]),
    ]
    .map(|(name, dtype, shape, bytes)| {
        (
            name,
            TensorView::new(dtype, shape, bytes).expect("shapes match their bytes"),
        )
    });
    let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    safetensors::serialize(views, Some(meta)).expect("in-memory tensors serialise")
}

/// A graph from the bytes [`write`] made, over the gallery `gallery` (one node per row).
///
/// # Errors
/// A sentence saying what does not fit.
pub fn read(bytes: &[u8], gallery: Rows<'_>) -> Result<Graph, String> {
    let rows = gallery.len();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err("not a tandem HNSW graph (no graph metadata)".into());
    }
    let tensors =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("unreadable ({e})"))?;
    let get = |name: &str, dtype: Dtype| -> Result<&[u8], String> {
        let view = tensors
            .tensor(name)
            .map_err(|_| format!("tensor `{name}` is missing"))?;
        if view.dtype() != dtype {
            return Err(format!(
                "tensor `{name}` is {:?}, not {dtype:?}",
                view.dtype()
            ));
        }
        Ok(view.data())
    };
    let words = |bytes: &[u8]| -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let [connections, node, top] = words(get("entry", Dtype::U32)?)[..] else {
        return Err("tensor `entry` does not hold three words".into());
    };
    let raw = RawLinks {
        connections: connections as usize,
        levels: get("levels", Dtype::U8)?.to_vec(),
        layer0: words(get("layer0", Dtype::U32)?),
        upper: words(get("upper", Dtype::U32)?),
    };
    if raw.levels.len() != rows {
        return Err(format!(
            "the graph holds {} nodes, the gallery {rows} rows",
            raw.levels.len()
        ));
    }
    let links = Links::from_raw(raw)?;
    let entry = match (node, top) {
        (u32::MAX, u32::MAX) if rows == 0 => None,
        (node, level) if (node as usize) < rows && links.level(node as usize) == level as usize => {
            Some(Entry {
                node,
                level: level as usize,
            })
        }
        _ => return Err("the entry node does not fit the graph".into()),
    };
    Ok(Graph {
        links,
        walk: WalkRows::new(gallery),
        entry,
    })
}
