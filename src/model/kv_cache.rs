//! Key/value cache for incremental decoding.
//!
//! One preallocated buffer pair per layer, [B, K, capacity, D]; `append` writes the new
//! T positions in place and returns views of the first P+T positions. All rows share the
//! same length (prompts are left-padded; the attention mask tells real from padding).
//! The buffers grow (doubling) if a call would overflow `capacity`.
//!
//! Inference only: use under `tch::no_grad` (in-place writes into the buffers are not
//! meant to be differentiated through).

use super::config::Config;
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
pub struct KvCache {
    /// per layer: (keys, values), each [B, K, capacity, D]
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// tokens already stored (P)
    len: i64,
    capacity: i64,
    batch: i64,
    n_kv_heads: i64,
    head_dim: i64,
    kind: Kind,
    device: Device,
}

impl KvCache {
    /// Empty cache for `batch` rows; `capacity` is a hint (prompt + max new tokens).
    pub fn new(cfg: &Config, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        KvCache {
            layers: (0..cfg.num_hidden_layers).map(|_| None).collect(),
            len: 0,
            capacity: capacity.max(1),
            batch,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            kind,
            device,
        }
    }

    /// Number of cached positions (P).
    pub fn seq_len(&self) -> i64 {
        self.len
    }

    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// Stores k, v ([B, K, T, D]) for `layer` at positions P..P+T and returns the
    /// cached keys and values for positions 0..P+T, each [B, K, P+T, D].
    /// Does not advance the length: the model calls [`KvCache::advance`] once after all layers.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let needed = self.len + t;
        if needed > self.capacity {
            let new_cap = needed.max(self.capacity * 2);
            for slot in self.layers.iter_mut().flatten() {
                let grow = |x: &Tensor| {
                    let extra = Tensor::zeros(
                        [self.batch, self.n_kv_heads, new_cap - self.capacity, self.head_dim],
                        (self.kind, self.device),
                    );
                    Tensor::cat(&[x, &extra], 2) // [B, K, new_cap, D]
                };
                *slot = (grow(&slot.0), grow(&slot.1));
            }
            self.capacity = new_cap;
        }
        let shape = [self.batch, self.n_kv_heads, self.capacity, self.head_dim];
        let (kind, device) = (self.kind, self.device);
        let slot = self.layers[layer]
            .get_or_insert_with(|| (Tensor::zeros(shape, (kind, device)), Tensor::zeros(shape, (kind, device))));
        slot.0.narrow(2, self.len, t).copy_(k);
        slot.1.narrow(2, self.len, t).copy_(v);
        (slot.0.narrow(2, 0, needed), slot.1.narrow(2, 0, needed)) // [B, K, P+T, D] each
    }

    /// Marks T more positions as stored (called by the model after every layer appended).
    pub fn advance(&mut self, t: i64) {
        self.len += t;
    }

    /// A cache of `index.len()` rows whose row i is this cache's row `index[i]` (int64 on the
    /// cache's device): the k samples of one prompt share one prefill, then each gets its own copy.
    pub fn select_rows(&self, index: &Tensor) -> KvCache {
        let layers = self
            .layers
            .iter()
            .map(|slot| slot.as_ref().map(|(k, v)| (k.index_select(0, index), v.index_select(0, index))))
            .collect();
        KvCache { layers, batch: index.size()[0], ..*self }
    }

    /// Layer `layer`'s cached keys and values for positions 0..P, [B, K, P, D] each (views);
    /// `None` before anything was stored.
    pub fn layer(&self, layer: usize) -> Option<(Tensor, Tensor)> {
        let (k, v) = self.layers.get(layer)?.as_ref()?;
        Some((k.narrow(2, 0, self.len), v.narrow(2, 0, self.len)))
    }

    /// Drops everything (keeps the buffers).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}
