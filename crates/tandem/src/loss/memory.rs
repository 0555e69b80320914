//! The cross-batch memory: detached embeddings of the previous samples, one ring buffer per
//! modality, used as extra references by every term (after XBM, Wang et al. 2020).

use candle_core::{DType, Device, Tensor};

use crate::config::MemoryConfig;
use crate::error::Result;
use crate::loss::Modality;

/// A fixed-capacity FIFO of embedding rows with the image id and sample key of each row.
///
/// Rows are read back oldest first, so two buffers with the same history read the same however
/// their storage is laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct RingBuffer {
    dim: usize,
    capacity: usize,
    rows: Vec<f32>,
    ids: Vec<u32>,
    keys: Vec<u32>,
    /// Slot the next row goes to.
    head: usize,
    len: usize,
}

impl RingBuffer {
    /// An empty buffer of `capacity` rows of `dim` values.
    pub fn new(capacity: usize, dim: usize) -> Self {
        RingBuffer {
            dim,
            capacity,
            rows: vec![0.0; capacity * dim],
            ids: vec![0; capacity],
            keys: vec![0; capacity],
            head: 0,
            len: 0,
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum rows held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Appends rows (row-major, `ids.len()` rows), dropping the oldest beyond capacity.
    pub fn push(&mut self, rows: &[f32], ids: &[u32], keys: &[u32]) {
        debug_assert_eq!(rows.len(), ids.len() * self.dim);
        debug_assert_eq!(ids.len(), keys.len());
        if self.capacity == 0 {
            return;
        }
        // Only the last `capacity` rows of a large push can survive it.
        let skip = ids.len().saturating_sub(self.capacity);
        for r in skip..ids.len() {
            let slot = self.head;
            self.rows[slot * self.dim..(slot + 1) * self.dim]
                .copy_from_slice(&rows[r * self.dim..(r + 1) * self.dim]);
            self.ids[slot] = ids[r];
            self.keys[slot] = keys[r];
            self.head = (self.head + 1) % self.capacity;
            self.len = (self.len + 1).min(self.capacity);
        }
    }

    /// Storage slots oldest first.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        let start = (self.head + self.capacity - self.len) % self.capacity.max(1);
        (0..self.len).map(move |i| (start + i) % self.capacity)
    }

    /// Rows oldest first, row-major.
    pub fn rows(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len * self.dim);
        for s in self.slots() {
            out.extend_from_slice(&self.rows[s * self.dim..(s + 1) * self.dim]);
        }
        out
    }

    /// Image ids oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.slots().map(|s| self.ids[s]).collect()
    }

    /// Sample keys (dataset rows) oldest first.
    pub fn keys(&self) -> Vec<u32> {
        self.slots().map(|s| self.keys[s]).collect()
    }
}

/// Extra references of one modality: detached embeddings with ids and sample keys.
#[derive(Debug, Clone)]
pub struct MemoryRows {
    /// `[rows, dim]`, no gradient.
    pub embeddings: Tensor,
    /// Image id of each row.
    pub ids: Vec<u32>,
    /// Sample key (dataset row) of each row.
    pub keys: Vec<u32>,
}

/// One ring buffer per modality, plus the step counter that drives the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Previous image embeddings.
    pub images: RingBuffer,
    /// Previous caption embeddings.
    pub texts: RingBuffer,
    /// Steps seen (recorded or not).
    pub steps: u64,
    /// Steps before recording starts.
    pub warmup_steps: u64,
}

impl Memory {
    /// An empty memory for embeddings of width `dim`.
    pub fn new(cfg: &MemoryConfig, dim: usize) -> Self {
        let capacity = if cfg.enabled { cfg.capacity } else { 0 };
        Memory {
            images: RingBuffer::new(capacity, dim),
            texts: RingBuffer::new(capacity, dim),
            steps: 0,
            warmup_steps: cfg.warmup_steps as u64,
        }
    }

    fn buffer(&self, modality: Modality) -> &RingBuffer {
        match modality {
            Modality::Image => &self.images,
            Modality::Text => &self.texts,
        }
    }

    /// The rows of `modality` as a tensor, or `None` when that buffer is empty.
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn references(
        &self,
        modality: Modality,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<MemoryRows>> {
        let b = self.buffer(modality);
        if b.is_empty() {
            return Ok(None);
        }
        let embeddings = Tensor::from_vec(b.rows(), (b.len(), b.dim()), device)?.to_dtype(dtype)?;
        Ok(Some(MemoryRows {
            embeddings,
            ids: b.ids(),
            keys: b.keys(),
        }))
    }

    /// Ends a step: counts it and, once past the warm-up, records the batch's embeddings
    /// (detached) with their image ids and sample keys.
    ///
    /// # Shapes
    /// `images: [n, dim]`, `texts: [m, dim]`.
    ///
    /// # Errors
    /// A tensor error from reading the embeddings back.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        images: &Tensor,
        image_ids: &[u32],
        image_keys: &[u32],
        texts: &Tensor,
        text_ids: &[u32],
        text_keys: &[u32],
    ) -> Result<()> {
        self.steps += 1;
        if self.steps <= self.warmup_steps || self.images.capacity() == 0 {
            return Ok(());
        }
        let flat = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.detach().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        self.images.push(&flat(images)?, image_ids, image_keys);
        self.texts.push(&flat(texts)?, text_ids, text_keys);
        Ok(())
    }

    /// The memory as named tensors for a checkpoint (rows oldest first, so a restored memory
    /// continues exactly).
    ///
    /// # Errors
    /// A tensor error from allocation.
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (name, b) in [("images", &self.images), ("texts", &self.texts)] {
            out.push((
                format!("memory.{name}.rows"),
                Tensor::from_vec(b.rows(), (b.len(), b.dim()), &Device::Cpu)?,
            ));
            out.push((
                format!("memory.{name}.ids"),
                Tensor::from_vec(b.ids(), b.len(), &Device::Cpu)?,
            ));
            out.push((
                format!("memory.{name}.keys"),
                Tensor::from_vec(b.keys(), b.len(), &Device::Cpu)?,
            ));
        }
        out.push((
            "memory.steps".into(),
            Tensor::from_vec(vec![self.steps as i64], 1, &Device::Cpu)?,
        ));
        Ok(out)
    }

    /// Restores a memory written by [`Memory::to_tensors`] into this (empty) memory.
    ///
    /// # Errors
    /// A message naming the missing or mis-shaped tensor.
    pub fn restore(
        &mut self,
        get: &mut dyn FnMut(&str) -> Option<Tensor>,
    ) -> std::result::Result<(), String> {
        let dim = self.images.dim();
        for (name, buffer) in [("images", &mut self.images), ("texts", &mut self.texts)] {
            let fetch = |get: &mut dyn FnMut(&str) -> Option<Tensor>, part: &str| {
                get(&format!("memory.{name}.{part}"))
                    .ok_or_else(|| format!("tensor `memory.{name}.{part}` is missing"))
            };
            let rows = fetch(get, "rows")?;
            let ids = fetch(get, "ids")?;
            let keys = fetch(get, "keys")?;
            let n = ids.elem_count();
            if rows.dims() != [n, dim] || keys.elem_count() != n || n > buffer.capacity() {
                return Err(format!(
                    "memory.{name} holds {n} rows of shape {:?}; this run keeps at most {} rows of {dim}",
                    rows.dims(),
                    buffer.capacity()
                ));
            }
            let read = |t: &Tensor| -> std::result::Result<Vec<u32>, String> {
                t.to_dtype(DType::U32)
                    .and_then(|t| t.to_vec1())
                    .map_err(|e| e.to_string())
            };
            let rows: Vec<f32> = rows
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all()?.to_vec1())
                .map_err(|e| e.to_string())?;
            *buffer = RingBuffer::new(buffer.capacity(), dim);
            buffer.push(&rows, &read(&ids)?, &read(&keys)?);
        }
        let steps = fetch_steps(get)?;
        self.steps = steps;
        Ok(())
    }
}

fn fetch_steps(get: &mut dyn FnMut(&str) -> Option<Tensor>) -> std::result::Result<u64, String> {
    let t = get("memory.steps").ok_or("tensor `memory.steps` is missing")?;
    let v: Vec<i64> = t
        .to_dtype(DType::I64)
        .and_then(|t| t.flatten_all()?.to_vec1())
        .map_err(|e| e.to_string())?;
    match v.as_slice() {
        [s] if *s >= 0 => Ok(*s as u64),
        _ => Err("tensor `memory.steps` is not one non-negative count".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The buffer always reads back the last `capacity` rows pushed, oldest first, however
        /// the pushes were sized.
        #[test]
        fn ring_buffer_keeps_the_last_capacity_rows(
            capacity in 0usize..7,
            pushes in proptest::collection::vec(0usize..10, 0..8),
        ) {
            let dim = 2;
            let mut ring = RingBuffer::new(capacity, dim);
            let mut history: Vec<u32> = Vec::new();
            let mut next = 0u32;
            for n in pushes {
                let ids: Vec<u32> = (next..next + n as u32).collect();
                next += n as u32;
                let rows: Vec<f32> = ids.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect();
                let keys: Vec<u32> = ids.iter().map(|i| i * 10).collect();
                ring.push(&rows, &ids, &keys);
                history.extend(&ids);
                let expected: Vec<u32> = history[history.len().saturating_sub(capacity)..].to_vec();
                prop_assert_eq!(ring.len(), expected.len());
                prop_assert!(ring.len() <= capacity);
                prop_assert_eq!(ring.ids(), expected.clone());
                prop_assert_eq!(ring.keys(), expected.iter().map(|i| i * 10).collect::<Vec<_>>());
                prop_assert_eq!(
                    ring.rows(),
                    expected.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect::<Vec<_>>()
                );
            }
        }
    }

    fn t(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn warm_up_delays_recording_and_checkpoint_round_trips() {
        let cfg = MemoryConfig {
            enabled: true,
            capacity: 3,
            warmup_steps: 1,
        };
        let mut m = Memory::new(&cfg, 2);
        let batch = t(&[[1.0, 0.0], [0.0, 1.0]]);
        m.record(&batch, &[0, 1], &[0, 1], &batch, &[0, 1], &[5, 6])
            .unwrap();
        assert!(m.images.is_empty(), "recorded during warm-up");
        m.record(&batch, &[2, 3], &[2, 3], &batch, &[2, 3], &[7, 8])
            .unwrap();
        m.record(&batch, &[4, 5], &[4, 5], &batch, &[4, 5], &[9, 10])
            .unwrap();
        assert_eq!(m.texts.ids(), vec![3, 4, 5]);
        assert_eq!(m.texts.keys(), vec![8, 9, 10]);
        assert_eq!(m.steps, 3);

        let saved: std::collections::HashMap<String, Tensor> =
            m.to_tensors().unwrap().into_iter().collect();
        let mut restored = Memory::new(&cfg, 2);
        restored
            .restore(&mut |name| saved.get(name).cloned())
            .unwrap();
        assert_eq!(restored.texts.ids(), m.texts.ids());
        assert_eq!(restored.images.rows(), m.images.rows());
        assert_eq!(restored.steps, 3);
        // Both continue identically.
        for mem in [&mut m, &mut restored] {
            mem.record(&batch, &[6, 7], &[6, 7], &batch, &[6, 7], &[1, 2])
                .unwrap();
        }
        assert_eq!(restored.texts.ids(), m.texts.ids());
        assert_eq!(restored.texts.rows(), m.texts.rows());

        let mut missing = Memory::new(&cfg, 2);
        let e = missing.restore(&mut |_| None).unwrap_err();
        assert!(e.contains("memory.images.rows"), "{e}");
    }

    #[test]
    fn disabled_memory_holds_nothing() {
        let mut m = Memory::new(&MemoryConfig::default(), 2);
        let batch = t(&[[1.0, 0.0]]);
        m.record(&batch, &[0], &[0], &batch, &[0], &[0]).unwrap();
        assert!(m.texts.is_empty() && m.images.is_empty());
        assert!(
            m.references(Modality::Text, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
