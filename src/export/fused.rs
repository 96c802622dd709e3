//! The fused decoder stack (`export --graph fused`): ONNX Runtime's contrib ops, the way
//! onnxruntime-genai's model builder wires them, over a cache the sampler pre-allocates.
//!
//! Per layer: `SimplifiedLayerNormalization` (RMSNorm; the residual add fused in
//! `SkipSimplifiedLayerNormalization` after the first), one packed q/k/v `MatMul`, Qwen3's q/k
//! norms (`SimplifiedLayerNormalization` per head), and `GroupQueryAttention` with the rotary
//! embedding inside (`do_rotary`, cos/sin tables [max_position_embeddings, D/2] as weights).
//!
//! `GroupQueryAttention` keeps each row's cache at positions `[0, seqlens_k[b] + 1)` of a buffer
//! `[B, K, M, D]` and writes the new tokens in place when the sampler binds the same buffer as
//! `past_key_values.{i}.*` and `present.{i}.*` (ONNX Runtime then shares them): no concatenation,
//! no copy of the cache per step. Positions follow from `seqlens_k`: a prefill (empty cache, rows
//! right-padded to S) puts row b's tokens at 0..; a decode step (S = 1) puts its token at
//! `seqlens_k[b]`. So every row behaves as if alone, without masks or position inputs.

use super::onnx::{attr_f, attr_i, inv_freq, Builder, WeightFn, MS_DOMAIN};
use super::Result;
use crate::model::Config;
use tch::{Device, Kind, Tensor};

/// The decoder stack on the embedded tokens `x` [B, S, C]; returns the final-normed hidden
/// states [B, S, C].
pub(super) fn decoder(g: &mut Builder, cfg: &Config, w: &WeightFn, x: String) -> Result<String> {
    let (c, h, k, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (inter, nl) = (cfg.intermediate_size, cfg.num_hidden_layers as usize);
    let eps = cfg.rms_norm_eps as f32;

    // RoPE tables [P, D/2]: cos/sin(position · inv_freq) in f32 (the tch model's numbers), stored
    // in the model dtype as the standard graph casts them.
    let inv = Tensor::from_slice(&inv_freq(cfg)).unsqueeze(0);
    let pos = Tensor::arange(cfg.max_position_embeddings, (Kind::Float, Device::Cpu)).unsqueeze(1);
    let freqs = pos * inv;
    let cos = g.weight("rotary.cos_cache", &freqs.cos(), false)?;
    let sin = g.weight("rotary.sin_cache", &freqs.sin(), false)?;

    let norm = |g: &mut Builder, x: &str, wt: &str| {
        let y = g.fresh("SimplifiedLayerNormalization");
        let attrs = vec![attr_i("axis", -1), attr_f("epsilon", eps), attr_i("stash_type", 1)];
        g.node("", "SimplifiedLayerNormalization", &[x, wt], attrs, &[&y]);
        y
    };
    // (norm(x + skip), x + skip)
    let skip_norm = |g: &mut Builder, x: &str, skip: &str, wt: &str, want_sum: bool| {
        let (y, sum) = (g.fresh("SkipSimplifiedLayerNormalization"), g.fresh("residual"));
        let outs: Vec<&str> = if want_sum { vec![&y, "", "", &sum] } else { vec![&y] };
        g.node(MS_DOMAIN, "SkipSimplifiedLayerNormalization", &[x, skip, wt], vec![attr_f("epsilon", eps)], &outs);
        (y, sum)
    };
    let norm_w = |g: &mut Builder, name: &str, n: i64| -> Result<String> { g.weight(name, &w(name, &[n])?, false) };

    let ln1 = norm_w(g, "model.layers.0.input_layernorm.weight", c)?;
    let mut hn = norm(g, &x, &ln1);
    let mut resid = x;
    for i in 0..nl {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        // q, k, v as one GEMM: [C, (H + 2K)·D]
        let rows = [("q_proj", h * d), ("k_proj", k * d), ("v_proj", k * d)];
        let ws: Vec<Tensor> =
            rows.iter().map(|(n, o)| w(&format!("{a}.{n}.weight"), &[*o, c])).collect::<Result<_>>()?;
        let wqkv = g.weight(&format!("{a}.qkv_proj.weight"), &Tensor::cat(&ws, 0), true)?;
        let bqkv = if cfg.qkv_bias {
            let bs: Vec<Tensor> =
                rows.iter().map(|(n, o)| w(&format!("{a}.{n}.bias"), &[*o])).collect::<Result<_>>()?;
            Some(g.weight(&format!("{a}.qkv_proj.bias"), &Tensor::cat(&bs, 0), false)?)
        } else {
            None
        };
        let qkv = g.linear(&hn, &wqkv, bqkv.as_deref()); // [B, S, (H + 2K)·D]
        let (q, kx, vx) = if cfg.qk_norm {
            let split = g.c_i64(&[3], &[h * d, k * d, k * d]);
            let (shape_q, flat_q) = (g.c_i64(&[4], &[0, 0, h, d]), g.c_i64(&[3], &[0, 0, h * d]));
            let (shape_k, flat_k) = (g.c_i64(&[4], &[0, 0, k, d]), g.c_i64(&[3], &[0, 0, k * d]));
            let (q, kx, vx) = (g.fresh("q"), g.fresh("k"), g.fresh("v"));
            g.node("", "Split", &[&qkv, &split], vec![attr_i("axis", -1)], &[&q, &kx, &vx]);
            let qn = norm_w(g, &format!("{a}.q_norm.weight"), d)?;
            let kn = norm_w(g, &format!("{a}.k_norm.weight"), d)?;
            let q4 = g.op("Reshape", &[&q, &shape_q], vec![]); // [B, S, H, D]
            let q4 = norm(g, &q4, &qn);
            let q = g.op("Reshape", &[&q4, &flat_q], vec![]);
            let k4 = g.op("Reshape", &[&kx, &shape_k], vec![]);
            let k4 = norm(g, &k4, &kn);
            let kx = g.op("Reshape", &[&k4, &flat_k], vec![]);
            (q, kx, vx)
        } else {
            (qkv, String::new(), String::new()) // packed q/k/v
        };
        let attn = g.fresh("GroupQueryAttention");
        let (pk, pv) = (format!("present.{i}.key"), format!("present.{i}.value"));
        let (ik, iv) = (format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value"));
        let attrs = vec![
            attr_i("num_heads", h),
            attr_i("kv_num_heads", k),
            attr_i("do_rotary", 1),
            attr_i("rotary_interleaved", 0),
            attr_f("scale", 1.0 / (d as f32).sqrt()),
        ];
        let inputs = [q.as_str(), &kx, &vx, &ik, &iv, "seqlens_k", "total_sequence_length", &cos, &sin];
        g.node(MS_DOMAIN, "GroupQueryAttention", &inputs, attrs, &[&attn, &pk, &pv]);
        let bo = if cfg.o_bias { Some(norm_w(g, &format!("{a}.o_proj.bias"), c)?) } else { None };
        let wo = g.weight(&format!("{a}.o_proj.weight"), &w(&format!("{a}.o_proj.weight"), &[c, h * d])?, true)?;
        let o = g.linear(&attn, &wo, bo.as_deref());
        let ln2 = norm_w(g, &format!("{p}.post_attention_layernorm.weight"), c)?;
        let (h2, r2) = skip_norm(g, &o, &resid, &ln2, true);

        let down = g.mlp(&h2, &format!("{p}.mlp"), inter, c, w)?;
        let last = i + 1 == nl;
        let next_w = if last {
            norm_w(g, "model.norm.weight", c)?
        } else {
            norm_w(g, &format!("model.layers.{}.input_layernorm.weight", i + 1), c)?
        };
        let (y, r) = skip_norm(g, &down, &r2, &next_w, !last);
        hn = y;
        resid = r;
    }
    Ok(hn)
}
