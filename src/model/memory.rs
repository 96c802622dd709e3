//! Memory plans: what a model, a generation batch or (later) a training step will allocate,
//! computed from the config *before* allocating, so an impossible request is a one-line error
//! instead of an abort in the allocator or a panic in libtorch.
//!
//! The plan is an estimate (the big buffers, not every temporary). It is checked against the
//! memory the OS reports as available (`MemAvailable` in `/proc/meminfo`) for CPU runs. For CUDA,
//! libtorch does not expose the free device memory through tch, so only absurd sizes (beyond any
//! existing device, [`MAX_DEVICE_BYTES`]) are refused there.

use super::{Config, ModelError, Result};

/// No single accelerator has more memory than this (2 TiB); used where the real figure is unknown.
pub const MAX_DEVICE_BYTES: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;

/// Named byte counts (f64: absurd configs must not overflow while being refused).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<(String, f64)>,
}

impl Plan {
    pub fn add(&mut self, what: impl Into<String>, bytes: f64) -> &mut Self {
        self.items.push((what.into(), bytes));
        self
    }
    pub fn total(&self) -> f64 {
        self.items.iter().map(|(_, b)| b).sum()
    }
    /// `what 1.2 GB + other 3.4 MB`
    pub fn describe(&self) -> String {
        self.items.iter().map(|(w, b)| format!("{w} {}", human_bytes(*b))).collect::<Vec<_>>().join(" + ")
    }
}

/// `1.5 GB`, `12.0 MB`, `3.2 TB` (decimal units).
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else if v >= 1e4 {
        format!("{v:.3e} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Bytes the OS can give this process now (Linux `MemAvailable`), if known.
pub fn available_host_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Number of parameters of `cfg`, in f64 (never overflows).
pub fn parameter_count(cfg: &Config) -> f64 {
    let f = |x: i64| x as f64;
    let (h, i, v) = (f(cfg.hidden_size), f(cfg.intermediate_size), f(cfg.vocab_size));
    let (nh, kv, d) = (f(cfg.num_attention_heads), f(cfg.num_key_value_heads), f(cfg.head_dim));
    let attn = h * nh * d * 2.0
        + h * kv * d * 2.0
        + if cfg.qkv_bias { nh * d + 2.0 * kv * d } else { 0.0 }
        + if cfg.o_bias { h } else { 0.0 }
        + if cfg.qk_norm { 2.0 * d } else { 0.0 };
    let layer = attn + 3.0 * h * i + 2.0 * h;
    v * h * if cfg.tie_word_embeddings { 1.0 } else { 2.0 } + f(cfg.num_hidden_layers) * layer + h
}

/// The dimensions a generation plan needs (from a `Config` or an ONNX export manifest).
#[derive(Debug, Clone, Copy)]
pub struct GenShape {
    pub layers: f64,
    pub kv_heads: f64,
    pub heads: f64,
    pub head_dim: f64,
    pub hidden: f64,
    pub vocab: f64,
    /// Bytes per element of the KV cache / activations.
    pub elt: f64,
}

impl GenShape {
    pub fn from_config(cfg: &Config, elt: usize) -> GenShape {
        GenShape {
            layers: cfg.num_hidden_layers as f64,
            kv_heads: cfg.num_key_value_heads as f64,
            heads: cfg.num_attention_heads as f64,
            head_dim: cfg.head_dim as f64,
            hidden: cfg.hidden_size as f64,
            vocab: cfg.vocab_size as f64,
            elt: elt as f64,
        }
    }
}

/// The big buffers of generating `max_new` tokens for `batch` rows after prompts of `prompt_len`:
/// the KV cache at full length, the prefill's activations and attention scores, and the
/// per-step logits (device and host copies).
pub fn generation_plan(s: &GenShape, batch: usize, prompt_len: usize, max_new: usize) -> Plan {
    let (b, l, t) = (batch as f64, prompt_len as f64, (prompt_len + max_new) as f64);
    let mut p = Plan::default();
    p.add("KV cache", 2.0 * s.layers * b * s.kv_heads * s.head_dim * t * s.elt);
    p.add("prefill activations", b * l * s.hidden * 8.0 * s.elt + b * s.heads * l * l * 4.0);
    p.add("logits", b * s.vocab * 4.0 * 3.0);
    p
}

/// What a training run holds on one device (the `train --dry-run` plan).
#[derive(Debug, Clone, Copy)]
pub struct TrainShape {
    /// Bytes per element of the compute dtype (4 f32, 2 bf16).
    pub elt: usize,
    /// f32 master weights beside lower-precision parameters.
    pub master: bool,
    /// Samples per forward/backward and their longest sequence (prompt + response).
    pub micro_batch: usize,
    pub seq_len: usize,
    /// LM-head rows per chunk of the logits (see `rl::logprob::head_chunk_rows`).
    pub head_chunk: usize,
    /// Rows per generation call, prompt length, response length.
    pub gen_rows: usize,
    pub prompt_len: usize,
    pub max_new: usize,
    /// A frozen reference copy (GRPO/PPO with KL) and PPO's critic.
    pub reference: bool,
    pub critic: bool,
    /// The attention keeps its [B, H, T, T] probabilities for the backward pass (SDPA's math
    /// path). libtorch 2.11 takes a fused kernel on CPU (flash attention, boolean masks included:
    /// checked with autograd's node names) and on CUDA, which keep O(T); the trainer plans with
    /// `false`.
    pub attention_probs: bool,
    /// Data-parallel ranks (1: a single process).
    pub world: usize,
    /// ZeRO-1: f32 master weights and AdamW moments sharded over `world` ranks.
    pub zero1: bool,
    /// Per-layer gradient checkpointing: only each layer's input is kept, one layer is recomputed
    /// at a time in the backward pass.
    pub checkpointing: bool,
    /// Elements per gradient-communication bucket (`rl::optim::BUCKET_ELEMS`; a bucket is never
    /// smaller than the largest tensor).
    pub bucket_elems: usize,
}

/// Per token and layer, the tensors autograd keeps for the backward pass, in units of the hidden
/// size C and the MLP width I (transformers-style block, counted from our `qwen.rs`): the two
/// RMSNorms (input, f32 copy, normed: 3C each), q/k/v and their RoPE'd copies, keys and values
/// repeated to every head, the attention output (≈ 6C), the o-projection input (C), and the MLP's
/// gate, SiLU, up and product (4I).
fn saved_per_token_layer(cfg: &Config) -> f64 {
    14.0 * cfg.hidden_size as f64 + 4.0 * cfg.intermediate_size as f64
}

/// The update step alone (what `bench-train` measures): parameters, gradients, master weights,
/// AdamW state, data-parallel buffers, the activations kept for the backward pass of one
/// micro-batch, and the LM head's live chunk.
pub fn update_plan(cfg: &Config, s: &TrainShape) -> Plan {
    let p = parameter_count(cfg);
    let elt = s.elt as f64;
    let w = s.world.max(1) as f64;
    let shard = if s.zero1 { w } else { 1.0 };
    let mut plan = Plan::default();
    plan.add("policy parameters", p * elt);
    plan.add("gradients", p * elt);
    if s.master || s.zero1 {
        // ZeRO-1 keeps an f32 master shard even for f32 parameters.
        plan.add(if s.zero1 { "f32 master weights (ZeRO-1 shard)" } else { "f32 master weights" }, p * 4.0 / shard);
    }
    plan.add(if s.zero1 { "AdamW state (f32 m, v; ZeRO-1 shard)" } else { "AdamW state (f32 m, v)" }, p * 8.0 / shard);
    if s.world > 1 {
        let largest = (cfg.vocab_size * cfg.hidden_size).max(cfg.hidden_size * cfg.intermediate_size) as f64;
        let bucket = (s.bucket_elems as f64).max(largest);
        // One f32 bucket in flight (and, ZeRO-1, its gathered weights plus the reduced shards).
        let mut comm = bucket * 4.0;
        if s.zero1 {
            comm += bucket * elt + p * 4.0 / w;
        }
        plan.add("data-parallel buckets (f32 gradients in flight)", comm);
    }
    let (b, t) = (s.micro_batch as f64, s.seq_len as f64);
    let (c, l, h) = (cfg.hidden_size as f64, cfg.num_hidden_layers as f64, cfg.num_attention_heads as f64);
    let layer = b * t * saved_per_token_layer(cfg) * elt;
    let probs = if s.attention_probs { b * h * t * t * elt } else { 0.0 };
    if s.checkpointing {
        plan.add("layer inputs kept by checkpointing", l * b * t * c * elt);
        plan.add("one layer recomputed for its backward", layer + probs);
    } else {
        plan.add("activations of one micro-batch", l * layer);
        if s.attention_probs {
            plan.add("attention probabilities of one micro-batch", l * probs);
        }
    }
    // Live at once for one chunk: f32 logits, log-softmax, its exp, their product and the
    // gradient of the logits.
    plan.add(
        "LM-head chunk (f32 logits, log-softmax, exp, grad)",
        s.head_chunk as f64 * cfg.vocab_size as f64 * 4.0 * 5.0,
    );
    plan
}

/// The big buffers of a training step on one device: [`update_plan`], plus the reference and
/// critic copies and the rollout KV cache preallocated for the longest response.
pub fn training_plan(cfg: &Config, s: &TrainShape) -> Plan {
    let p = parameter_count(cfg);
    let elt = s.elt as f64;
    let mut plan = update_plan(cfg, s);
    if s.reference {
        plan.add("reference policy", p * elt);
    }
    if s.critic {
        let shard = if s.zero1 { s.world.max(1) as f64 } else { 1.0 };
        let master = if s.master || s.zero1 { 4.0 / shard } else { 0.0 };
        plan.add("critic (parameters, gradients, master, AdamW)", p * (2.0 * elt + master + 8.0 / shard));
    }
    let g = generation_plan(&GenShape::from_config(cfg, s.elt), s.gen_rows, s.prompt_len, s.max_new);
    plan.add("rollout KV cache + prefill + logits", g.total());
    plan
}

/// Fails with [`ModelError::OutOfMemory`] if `plan` cannot fit where it will run.
pub fn check_fits(what: &str, plan: &Plan, device: tch::Device) -> Result<()> {
    let need = plan.total();
    let (avail, where_) = match device {
        tch::Device::Cpu => match available_host_bytes() {
            Some(a) => (a, "of memory available"),
            None => (f64::INFINITY, ""),
        },
        _ => (MAX_DEVICE_BYTES, "(more than any accelerator has)"),
    };
    if !need.is_finite() || need > avail {
        return Err(ModelError::OutOfMemory {
            what: what.to_string(),
            need: human_bytes(need),
            plan: plan.describe(),
            avail: format!("{} {where_}", human_bytes(avail)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1.5e9), "1.5 GB");
        assert_eq!(human_bytes(1.28e13), "12.8 TB");
    }

    #[test]
    fn absurd_plans_are_refused_on_every_device() {
        let s = GenShape { layers: 2.0, kv_heads: 2.0, heads: 4.0, head_dim: 8.0, hidden: 32.0, vocab: 1e3, elt: 4.0 };
        let small = generation_plan(&s, 2, 10, 10);
        assert!(small.total() < 1e6);
        check_fits("small", &small, tch::Device::Cpu).unwrap();
        let huge = generation_plan(&s, 1, 10, 100_000_000_000);
        let e = check_fits("generation", &huge, tch::Device::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("generation needs") && e.contains("KV cache"), "{e}");
    }
}
