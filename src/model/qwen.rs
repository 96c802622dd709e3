//! Qwen2 / Qwen3 decoder-only transformer, one file for the family, top-down:
//! Config (see `config.rs`) → RotaryEmbedding → Mlp → Attention → DecoderLayer → Model → Qwen
//! (the `*ForCausalLM`). Every module has `new(cfg, vs_path)` and `forward`.
//!
//! Parameters live in an `nn::VarStore` under Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`, ...), so the store can be
//! filled from / saved to an HF checkpoint by name and handed to an optimizer as is.
//!
//! Numerics follow transformers' implementation (RMSNorm in f32 then cast back; RoPE
//! tables in f32 cast to the activation dtype; SDPA with an explicit boolean mask
//! whenever padding or a KV-cache offset is involved), which is what lets the parity
//! tests hold to 1e-4 in f32.
//!
//! Shape legend: B batch, T new tokens, P cached (past) tokens, S = P + T keys,
//! C hidden size, H query heads, K key/value heads, D head_dim, I intermediate, V vocab.

use super::config::Config;
use super::kv_cache::KvCache;
use super::{ModelError, Result};
use tch::{nn, Device, Kind, Tensor};

fn param(vs: &nn::Path, name: &str, dims: &[i64]) -> Tensor {
    // Created as zeros (trainable); the checkpoint loader copies real values in.
    vs.zeros(name, dims)
}

/// `y = x W^T + b`, HF names `<prefix>.weight` [out, in] and `<prefix>.bias` [out].
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vs: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let weight = param(&vs, "weight", &[out_dim, in_dim]);
        let bias = bias.then(|| param(&vs, "bias", &[out_dim]));
        Linear { weight, bias }
    }
    /// x: [.., in] → [.., out]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm as in transformers: normalise in f32, cast back, then scale.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(vs: nn::Path, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: param(&vs, "weight", &[dim]), eps }
    }
    /// x: [.., dim] → [.., dim] (same dtype as x), computed in f32 (f64 for f64 inputs).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let acc = if kind == Kind::Double { Kind::Double } else { Kind::Float };
        let xf = x.to_kind(acc);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, acc); // [.., 1]
        let normed = (xf * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

/// Rotary position embedding (RoPE, "default" or Llama 3.1's "llama3" frequencies, rotate-half convention).
#[derive(Debug)]
pub struct RotaryEmbedding {
    /// [D/2], f32
    inv_freq: Tensor,
}

impl RotaryEmbedding {
    pub fn new(cfg: &Config, device: Device) -> Self {
        let d = cfg.head_dim;
        // inv_freq[i] = 1 / theta^(2i/D), computed in f32 like transformers.
        let exponents = Tensor::arange_start_step(0, d, 2, (Kind::Int64, device)).to_kind(Kind::Float) / (d as f64);
        let mut inv_freq = Tensor::pow_scalar(cfg.rope_theta, &exponents).reciprocal(); // [D/2]
        if let Some(l) = &cfg.rope_llama3 {
            let mut v = Vec::<f32>::try_from(&inv_freq).expect("f32 inv_freq");
            l.apply(&mut v);
            inv_freq = Tensor::from_slice(&v).to_device(device);
        }
        RotaryEmbedding { inv_freq }
    }

    /// positions: [B, T] (int64) → (cos, sin), each [B, 1, T, D] in `kind` (broadcast over heads).
    pub fn forward(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]); // [B, T, D/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // [B, T, D]
        let cos = emb.cos().to_kind(kind).unsqueeze(1); // [B, 1, T, D]
        let sin = emb.sin().to_kind(kind).unsqueeze(1); // [B, 1, T, D]
        (cos, sin)
    }
}

/// x: [B, n, T, D] → x * cos + rotate_half(x) * sin
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half); // [B, n, T, D/2]
    let x2 = x.narrow(3, half, half); // [B, n, T, D/2]
    let rotated = Tensor::cat(&[&x2.neg(), &x1], 3); // [B, n, T, D]
    x * cos + rotated * sin
}

/// SwiGLU feed-forward: down(silu(gate(x)) * up(x)).
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn new(cfg: &Config, vs: nn::Path) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&vs / "gate_proj", h, i, false),
            up_proj: Linear::new(&vs / "up_proj", h, i, false),
            down_proj: Linear::new(&vs / "down_proj", i, h, false),
        }
    }
    /// x: [B, T, C] → [B, T, C] (via [B, T, I])
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let g = self.gate_proj.forward(x).silu(); // [B, T, I]
        let u = self.up_proj.forward(x); // [B, T, I]
        self.down_proj.forward(&(g * u)) // [B, T, C]
    }
}

/// How keys are masked in attention for one forward call.
#[derive(Debug)]
pub enum AttnMask {
    /// No mask: every query sees every key (single-token decode without padding).
    None,
    /// Plain causal mask with no offset (prefill without padding): SDPA `is_causal`.
    Causal,
    /// Explicit boolean mask [B, 1, T, S], true = attend.
    Explicit(Tensor),
}

/// Multi-head attention with grouped-query K/V heads, RoPE and (Qwen3) q/k RMSNorm.
#[derive(Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
    scale: f64,
}

impl Attention {
    pub fn new(cfg: &Config, vs: nn::Path) -> Self {
        let (c, h, k, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::new(&vs / "q_norm", d, cfg.rms_norm_eps)),
                Some(RmsNorm::new(&vs / "k_norm", d, cfg.rms_norm_eps)),
            )
        } else {
            (None, None)
        };
        Attention {
            q_proj: Linear::new(&vs / "q_proj", c, h * d, cfg.qkv_bias),
            k_proj: Linear::new(&vs / "k_proj", c, k * d, cfg.qkv_bias),
            v_proj: Linear::new(&vs / "v_proj", c, k * d, cfg.qkv_bias),
            o_proj: Linear::new(&vs / "o_proj", h * d, c, cfg.o_bias),
            q_norm,
            k_norm,
            n_heads: h,
            n_kv_heads: k,
            head_dim: d,
            scale: 1.0 / (d as f64).sqrt(),
        }
    }

    /// x: [B, T, C]; cos/sin: [B, 1, T, D]; `cache`: this layer's (k, v) slot.
    /// Returns [B, T, C].
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (h, k, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let (q, kx, v) = self.project(x, cos, sin);
        let (keys, values) = match cache {
            Some((c, layer)) => c.append(layer, &kx, &v), // each [B, K, S, D]
            None => (kx, v),
        };
        // Grouped-query attention: repeat each K/V head n_rep times → [B, H, S, D].
        // (SDPA's enable_gqa only takes the fused path on CUDA without a mask; elsewhere
        // transformers repeats explicitly too, so we do the same for identical numerics.)
        let n_rep = h / k;
        let use_gqa = n_rep > 1 && x.device().is_cuda() && !matches!(mask, AttnMask::Explicit(_));
        if t == 1 && n_rep > 1 && !use_gqa {
            // One decode token: grouped, so the cache is not repeated per head (the profile showed
            // that copy at 13% of a CPU decode step).
            let m = match mask {
                AttnMask::Explicit(m) => Some(m), // [B, 1, 1, S]
                AttnMask::None | AttnMask::Causal => None,
            };
            return self.decode_attention(&q, &keys, &values, m);
        }
        let (keys, values) =
            if n_rep == 1 || use_gqa { (keys, values) } else { (repeat_kv(&keys, n_rep), repeat_kv(&values, n_rep)) };
        let attn = match mask {
            AttnMask::None => Tensor::scaled_dot_product_attention(
                &q,
                &keys,
                &values,
                None::<Tensor>,
                0.0,
                false,
                self.scale,
                use_gqa,
            ),
            AttnMask::Causal => Tensor::scaled_dot_product_attention(
                &q,
                &keys,
                &values,
                None::<Tensor>,
                0.0,
                t > 1,
                self.scale,
                use_gqa,
            ),
            AttnMask::Explicit(m) => {
                Tensor::scaled_dot_product_attention(&q, &keys, &values, Some(m), 0.0, false, self.scale, use_gqa)
            }
        }; // [B, H, T, D]
        let attn = attn.transpose(1, 2).reshape([b, t, h * d]); // [B, T, H*D]
        self.o_proj.forward(&attn) // [B, T, C]
    }
}

impl Attention {
    /// q [B, H, T, D], k and v [B, K, T, D]: projected, q/k-normed (Qwen3) and rotated.
    fn project(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (h, k, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self.q_proj.forward(x).view([b, t, h, d]); // [B, T, H, D]
        let kx = self.k_proj.forward(x).view([b, t, k, d]); // [B, T, K, D]
        let v = self.v_proj.forward(x).view([b, t, k, d]).transpose(1, 2); // [B, K, T, D]
        let q = match &self.q_norm {
            Some(n) => n.forward(&q),
            None => q,
        }
        .transpose(1, 2); // [B, H, T, D]
        let kx = match &self.k_norm {
            Some(n) => n.forward(&kx),
            None => kx,
        }
        .transpose(1, 2); // [B, K, T, D]
        (apply_rotary(&q, cos, sin), apply_rotary(&kx, cos, sin), v)
    }

    /// One decode token per row over a slot cache (`crate::model::static_decode`), with static
    /// shapes: x [B, 1, C]; the new key/value go to position `at` of each row ([B, K, 1, D]
    /// int64 indices) of `slots` ([B, K, M, D] each, written in place), and attention covers the
    /// M positions under `mask` [B, 1, 1, M] (true = attend), query heads grouped
    /// ([`Attention::decode_attention`]). Returns [B, 1, C].
    pub fn forward_slots(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        slots: (&Tensor, &Tensor),
        at: &Tensor,
    ) -> Tensor {
        let (q, kx, v) = self.project(x, cos, sin); // q [B, H, 1, D]
        let _ = slots.0.shallow_clone().scatter_(2, at, &kx);
        let _ = slots.1.shallow_clone().scatter_(2, at, &v);
        self.decode_attention(&q, slots.0, slots.1, Some(mask))
    }

    /// Attention of one decode token per row, q [B, H, 1, D], over keys/values [B, K, S, D] under
    /// `mask` [B, 1, 1, S], through `o_proj` → [B, 1, C]. The n_rep query heads that share a K/V head
    /// are the query axis of one attention over that head's cache ([B, K, n_rep, D]; head k·n_rep + r
    /// is query r of group k), so the cache is read once, never repeated per query head.
    fn decode_attention(&self, q: &Tensor, keys: &Tensor, values: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let b = q.size()[0];
        let (h, k, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = q.reshape([b, k, h / k, d]);
        let attn = Tensor::scaled_dot_product_attention(&q, keys, values, mask, 0.0, false, self.scale, false);
        self.o_proj.forward(&attn.reshape([b, 1, h * d]))
    }
}

/// [B, K, S, D] → [B, K*n_rep, S, D] (each kv head repeated n_rep times, adjacent).
fn repeat_kv(x: &Tensor, n_rep: i64) -> Tensor {
    let s = x.size();
    let (b, k, sl, d) = (s[0], s[1], s[2], s[3]);
    x.unsqueeze(2) // [B, K, 1, S, D]
        .expand([b, k, n_rep, sl, d], false) // [B, K, n_rep, S, D]
        .reshape([b, k * n_rep, sl, d]) // [B, H, S, D]
}

/// Pre-norm transformer block.
#[derive(Debug)]
pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub fn new(cfg: &Config, vs: nn::Path) -> Self {
        DecoderLayer {
            self_attn: Attention::new(cfg, &vs / "self_attn"),
            mlp: Mlp::new(cfg, &vs / "mlp"),
            input_layernorm: RmsNorm::new(&vs / "input_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
            post_attention_layernorm: RmsNorm::new(&vs / "post_attention_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
        }
    }
    /// x: [B, T, C] → [B, T, C]
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor {
        let h = x + self.self_attn.forward(&self.input_layernorm.forward(x), cos, sin, mask, cache);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}

impl DecoderLayer {
    /// [`DecoderLayer::forward`] for one decode token over a slot cache (see
    /// [`Attention::forward_slots`]).
    pub fn forward_slots(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        slots: (&Tensor, &Tensor),
        at: &Tensor,
    ) -> Tensor {
        let h = x + self.self_attn.forward_slots(&self.input_layernorm.forward(x), cos, sin, mask, slots, at);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}

/// Embedding + decoder stack + final norm (HF prefix `model.`).
#[derive(Debug)]
pub struct Model {
    pub embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rotary: RotaryEmbedding,
}

impl Model {
    pub fn new(cfg: &Config, vs: nn::Path) -> Self {
        let embed_tokens = param(&(&vs / "embed_tokens"), "weight", &[cfg.vocab_size, cfg.hidden_size]);
        let layers_vs = &vs / "layers";
        let layers = (0..cfg.num_hidden_layers).map(|i| DecoderLayer::new(cfg, &layers_vs / i)).collect();
        Model {
            embed_tokens,
            layers,
            norm: RmsNorm::new(&vs / "norm", cfg.hidden_size, cfg.rms_norm_eps),
            rotary: RotaryEmbedding::new(cfg, vs.device()),
        }
    }

    /// Like [`Model::forward`] (no KV cache) with per-layer gradient checkpointing: every decoder
    /// layer runs without autograd and only its input is kept; the returned hidden states [B, T, C]
    /// hang off a leaf at the last layer's output. After back-propagating into them, call
    /// [`LayerTape::backward`], which recomputes each layer from its kept input, top to bottom,
    /// with autograd, and back-propagates through it (`(y · ∂L/∂y).sum().backward()` is the
    /// layer's vector-Jacobian product), ending in the embedding.
    pub fn forward_checkpointed(&self, input_ids: &Tensor, positions: &Tensor, mask: AttnMask) -> (Tensor, LayerTape) {
        let emb = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false); // [B, T, C]
        let (cos, sin) = self.rotary.forward(positions, emb.kind()); // [B, 1, T, D] each
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = emb.detach();
        tch::no_grad(|| {
            for layer in &self.layers {
                let y = layer.forward(&x, &cos, &sin, &mask, None); // [B, T, C]
                inputs.push(std::mem::replace(&mut x, y));
            }
        });
        let top = x.set_requires_grad(true); // [B, T, C] leaf
        let out = self.norm.forward(&top); // [B, T, C]
        (out, LayerTape { emb: Some(emb), inputs, top: Some(top), cos, sin, mask })
    }

    /// One decode token per row over slot caches (`crate::model::static_decode`): input_ids
    /// [B, 1], positions [B, 1] (each row's cache length, where its token goes), `slots` per
    /// layer ([B, K, M, D] key and value, written in place), `mask` [B, 1, 1, M]. Every shape
    /// is fixed for a given B and M (what CUDA-graph capture needs). Returns [B, 1, C].
    pub fn forward_slots(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        slots: &[(Tensor, Tensor)],
    ) -> Tensor {
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false); // [B, 1, C]
        let (cos, sin) = self.rotary.forward(positions, x.kind()); // [B, 1, 1, D] each
        let s = slots[0].0.size();
        let at = positions.view([s[0], 1, 1, 1]).expand([s[0], s[1], 1, s[3]], false); // [B, K, 1, D]
        for (layer, (k, v)) in self.layers.iter().zip(slots) {
            x = layer.forward_slots(&x, &cos, &sin, mask, (k, v), &at);
        }
        self.norm.forward(&x) // [B, 1, C]
    }

    /// input_ids: [B, T] int64; positions: [B, T] int64. Returns final hidden states [B, T, C].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: &AttnMask,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false); // [B, T, C]
        let (cos, sin) = self.rotary.forward(positions, x.kind()); // [B, 1, T, D] each
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, &cos, &sin, mask, c); // [B, T, C]
        }
        if let Some(c) = cache {
            c.advance(input_ids.size()[1]);
        }
        self.norm.forward(&x) // [B, T, C]
    }
}

/// What [`Model::forward_checkpointed`] keeps for the backward pass: each layer's input (no
/// activations inside layers), the RoPE tables and the mask. `Plain` tapes (no checkpointing)
/// have nothing to do.
#[derive(Debug)]
pub struct LayerTape {
    /// The embedding output, with autograd (None for a plain tape).
    emb: Option<Tensor>,
    /// Input of layer l, detached.
    inputs: Vec<Tensor>,
    /// The last layer's output as a leaf (None for a plain tape).
    top: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
    mask: AttnMask,
}

impl LayerTape {
    /// A tape for a forward that kept its whole graph (nothing left to do).
    pub fn plain() -> LayerTape {
        LayerTape { emb: None, inputs: vec![], top: None, cos: Tensor::new(), sin: Tensor::new(), mask: AttnMask::None }
    }

    /// Finishes the backward pass below the last layer (see [`Model::forward_checkpointed`]):
    /// call once, after every backward into the returned hidden states. A no-op for a plain tape
    /// or when nothing reached the top (no gradient flowed).
    pub fn backward(self, model: &Qwen) -> Result<()> {
        let Some(top) = self.top else { return Ok(()) };
        let mut grad = top.grad(); // ∂L/∂x_L, [B, T, C]
        if !grad.defined() {
            return Ok(());
        }
        for (layer, x) in model.model.layers.iter().zip(&self.inputs).rev() {
            let xin = x.detach().set_requires_grad(true); // [B, T, C] leaf
            let y = layer.forward(&xin, &self.cos, &self.sin, &self.mask, None); // recomputed, with autograd
            let acc = if y.kind() == Kind::Double { Kind::Double } else { Kind::Float };
            (y * &grad).sum(acc).f_backward()?;
            grad = xin.grad();
        }
        if let Some(emb) = self.emb {
            if emb.requires_grad() {
                let acc = if emb.kind() == Kind::Double { Kind::Double } else { Kind::Float };
                (emb * &grad).sum(acc).f_backward()?;
            }
        }
        Ok(())
    }
}

/// `Qwen2ForCausalLM` / `Qwen3ForCausalLM`: [`Model`] + LM head (tied to the embedding
/// when `tie_word_embeddings`).
#[derive(Debug)]
pub struct Qwen {
    pub cfg: Config,
    pub model: Model,
    /// `None` when the head is tied to `model.embed_tokens.weight`.
    lm_head: Option<Linear>,
    /// Per-layer gradient checkpointing in [`Qwen::forward_hidden_tape`] (training paths).
    pub gradient_checkpointing: bool,
}

impl Qwen {
    /// Creates all parameters (zeros) in `vs` under HF names; `vs` should be the root path.
    pub fn new(cfg: &Config, vs: nn::Path) -> Self {
        let model = Model::new(cfg, &vs / "model");
        let lm_head =
            (!cfg.tie_word_embeddings).then(|| Linear::new(&vs / "lm_head", cfg.hidden_size, cfg.vocab_size, false));
        Qwen { cfg: cfg.clone(), model, lm_head, gradient_checkpointing: false }
    }

    pub fn device(&self) -> Device {
        self.model.embed_tokens.device()
    }
    pub fn kind(&self) -> Kind {
        self.model.embed_tokens.kind()
    }

    /// Full forward.
    ///
    /// * `input_ids`: [B, T] int64.
    /// * `attention_mask`: optional [B, P+T] (1 = real token, 0 = padding), covering the cached
    ///   tokens plus the new ones. Left padding is expected for prompts. Positions are
    ///   derived from it (`cumsum(mask) - 1`), so a padded row matches its unpadded version.
    /// * `cache`: optional KV cache; new keys/values are appended and it is advanced by T.
    ///
    /// Returns logits [B, T, V] in the model dtype.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, attention_mask, cache)?; // [B, T, C]
        Ok(self.lm_head(&hidden)) // [B, T, V]
    }

    /// hidden: [.., C] → logits [.., V]
    pub fn lm_head(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(l) => l.forward(hidden),
            None => hidden.linear(&self.model.embed_tokens, None::<Tensor>),
        }
    }

    /// The training forward: final-norm hidden states [B, T, C] and the tape that finishes their
    /// backward pass. With `gradient_checkpointing` the layers keep only their inputs and
    /// [`LayerTape::backward`] recomputes them; otherwise the whole graph is kept (plain tape).
    pub fn forward_hidden_tape(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<(Tensor, LayerTape)> {
        if !self.gradient_checkpointing {
            return Ok((self.forward_hidden(input_ids, attention_mask, None)?, LayerTape::plain()));
        }
        let (ids, positions, mask) = self.prepare(input_ids, attention_mask, 0)?;
        Ok(self.model.forward_checkpointed(&ids, &positions, mask))
    }

    /// Like [`Qwen::forward`] but returns the final-norm hidden states [B, T, C] (lets callers
    /// apply the LM head in chunks to bound the memory of [B, T, V] logits).
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let (input_ids, positions, mask) = self.prepare(input_ids, attention_mask, past)?;
        Ok(self.model.forward(&input_ids, &positions, &mask, cache))
    }

    /// Checks the inputs and derives positions [B, T] and the attention mask for T new tokens
    /// after `past` cached ones. Returns (input_ids on the model's device, positions, mask).
    fn prepare(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        past: i64,
    ) -> Result<(Tensor, Tensor, AttnMask)> {
        let size = input_ids.size();
        if size.len() != 2 || size[1] == 0 {
            return Err(ModelError::BadInput(format!("input_ids must be [B, T] with T > 0, got {size:?}")));
        }
        if input_ids.kind() != Kind::Int64 {
            return Err(ModelError::BadInput(format!("input_ids must be int64, got {:?}", input_ids.kind())));
        }
        let (b, t) = (size[0], size[1]);
        let dev = self.device();
        let input_ids = input_ids.to_device(dev);
        let (positions, mask) = match attention_mask {
            None => {
                let positions =
                    Tensor::arange_start(past, past + t, (Kind::Int64, dev)).unsqueeze(0).expand([b, t], false); // [B, T]
                let mask = if t == 1 {
                    AttnMask::None
                } else if past == 0 {
                    AttnMask::Causal
                } else {
                    AttnMask::Explicit(build_mask(&Tensor::ones([b, past + t], (Kind::Bool, dev)), past, t))
                };
                (positions, mask)
            }
            Some(m) => {
                let ms = m.size();
                if ms != [b, past + t] {
                    return Err(ModelError::BadInput(format!(
                        "attention_mask must be [B, past+T] = [{b}, {}], got {ms:?}",
                        past + t
                    )));
                }
                let m = m.to_device(dev).to_kind(Kind::Int64); // [B, S]
                let valid = m.ne(0); // [B, S] bool
                                     // position of each token = number of real tokens before it (pads get 1, unused).
                let pos_all = (m.cumsum(1, Kind::Int64) - 1).masked_fill(&valid.logical_not(), 1); // [B, S]
                let positions = pos_all.narrow(1, past, t); // [B, T]
                let has_padding = i64::try_from(m.min()).unwrap_or(0) == 0;
                let mask = if !has_padding && t == 1 {
                    AttnMask::None
                } else if !has_padding && past == 0 {
                    AttnMask::Causal
                } else {
                    AttnMask::Explicit(build_mask(&valid, past, t))
                };
                (positions, mask)
            }
        };
        Ok((input_ids, positions, mask))
    }
}

/// Boolean attention mask [B, 1, T, S] (true = attend) for T new queries after `past`
/// cached keys: causal ∧ key-is-real, plus the diagonal so that padding queries always
/// attend to themselves (keeps every softmax row finite; their outputs are ignored).
fn build_mask(valid: &Tensor, past: i64, t: i64) -> Tensor {
    let dev = valid.device();
    let s = past + t;
    let q_pos = Tensor::arange_start(past, s, (Kind::Int64, dev)).view([t, 1]); // [T, 1]
    let k_pos = Tensor::arange(s, (Kind::Int64, dev)).view([1, s]); // [1, S]
    let causal = k_pos.le_tensor(&q_pos); // [T, S]
    let diag = k_pos.eq_tensor(&q_pos); // [T, S]
    let key_ok = valid.view([-1, 1, 1, s]); // [B, 1, 1, S]
    causal.unsqueeze(0).unsqueeze(0).logical_and(&key_ok).logical_or(&diag.view([1, 1, t, s]))
    // [B, 1, T, S]
}

/// log p(target) per position. logits: [B, T, V] (any float dtype), targets: [B, T] int64
/// → [B, T] f32 (softmax computed in f32).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits
        .log_softmax(-1, Kind::Float) // [B, T, V]
        .gather(-1, &targets.unsqueeze(-1), false) // [B, T, 1]
        .squeeze_dim(-1) // [B, T]
}

/// Entropy of the predictive distribution per position. logits: [B, T, V] → [B, T] f32.
pub fn entropy(logits: &Tensor) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float); // [B, T, V]
    -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float) // [B, T]
}

/// For teacher-forced training on sequences: runs the model on `input_ids` [B, T] and
/// returns (log p(x_{t+1} | x_{≤t}), entropy at t), both [B, T-1] f32. Positions where
/// the *target* is padding carry garbage and must be masked by the caller
/// (`attention_mask[:, 1:]`).
pub fn shifted_logprobs_and_entropy(
    model: &Qwen,
    input_ids: &Tensor,
    attention_mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let t = input_ids.size()[1];
    if t < 2 {
        return Err(ModelError::BadInput("need at least 2 tokens for shifted log-probs".into()));
    }
    let logits = model.forward(input_ids, attention_mask, None)?; // [B, T, V]
    let logits = logits.narrow(1, 0, t - 1); // [B, T-1, V]
    let targets = input_ids.to_device(logits.device()).narrow(1, 1, t - 1); // [B, T-1]
    let logp_all = logits.log_softmax(-1, Kind::Float); // [B, T-1, V]
    let logp = logp_all.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1); // [B, T-1]
    let ent = -(logp_all.exp() * &logp_all).sum_dim_intlist(-1, false, Kind::Float); // [B, T-1]
    Ok((logp, ent))
}
