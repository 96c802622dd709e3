//! Qwen2 / Qwen3 / Llama → ONNX (opset 17), weights as external data, in one of two graphs.
//!
//! **Standard** (`--graph standard`, the default; standard ops only, any execution provider).
//! Interface (B batch, S new tokens, P past tokens, K kv heads, D head_dim, V vocab):
//!
//! | name | shape | type |
//! |---|---|---|
//! | in `input_ids` | [B, S] | int64 |
//! | in `attention_mask` | [B, P+S] | int64 (1 real, 0 padding; left padding) |
//! | in `position_ids` | [B, S] | int64 |
//! | in `past_key_values.{i}.key` / `.value` | [B, K, P, D] | model dtype |
//! | in `logits_to_keep` (optional, default 0) | [] | int64: 0 = all positions, n = last n |
//! | in `top_k` (optional, default 1) | [] | int64, 1 ≤ k ≤ V: how many candidates `top_*` keep |
//! | out `logits` | [B·S', V], S' = S or n | float32, rows batch-major (2-D: a 3-D reshape would copy them) |
//! | out `top_logits` / `top_ids` | [B·S', k] | float32 / int64: the k largest logits, descending (ties: lower id first) |
//! | out `logit_sums` | [B·S'] | float32: each row's sum — NaN or +inf iff the row holds NaN or +inf (barring overflow) |
//! | out `present.{i}.key` / `.value` | [B, K, P+S, D] | model dtype |
//!
//! Numerics follow `crate::model::qwen` (itself transformers): RMSNorm in f32, RoPE tables in f32
//! cast to the model dtype, softmax in f32 with an additive mask built from causal ∧ key-is-real,
//! plus the diagonal (so padding queries never see an all-masked row).
//!
//! **Fused** (`--graph fused`, [`super::fused`]; ONNX Runtime's contrib ops, CPU execution
//! provider, head_dim a multiple of 16). Each row's cache lives at positions `[0, len)` of a
//! buffer of M ≥ every row's length, which the sampler binds as both past and present so
//! `GroupQueryAttention` writes the new tokens in place:
//!
//! | name | shape | type |
//! |---|---|---|
//! | in `input_ids` | [B, S] | int64 (a prefill from an empty cache right-pads rows to S; a decode step has S = 1) |
//! | in `seqlens_k` | [B] | int32: the row's cache length after this call, minus 1 (positions follow from it) |
//! | in `total_sequence_length` | [] | int32: max over rows of `seqlens_k` + 1 (= S in a prefill) |
//! | in/out `past_key_values.{i}.*` / `present.{i}.*` | [B, K, M, D] | model dtype, one buffer bound to both |
//! | in `top_k` (optional, default 1) | [] | int64, as above |
//! | out `logits`, `top_logits`, `top_ids`, `logit_sums` | [B, …] | as above, at each row's last token |
//!
//! A sampler that draws from the top k (or greedily, k = 1) asks for `top_*` and `logit_sums`
//! instead of `logits`: ONNX Runtime then runs `TopK` in the graph and only `[B, k]` values cross
//! to the host instead of `[B, V]` (151,936 for Qwen).

use super::proto::{self, data_type as dt, *};
use super::{ExportError, Result};
use crate::fingerprint::{self, Fingerprint, HashingWriter};
use crate::model::checkpoint::{WeightFiles, TOKENIZER_FILES};
use crate::model::Config;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tch::Kind;

pub const ONNX_FILE: &str = "model.onnx";
pub const ONNX_DATA: &str = "model.onnx.data";
pub const MANIFEST: &str = "export.json";
/// External tensors start at multiples of this (lets ORT memory-map them).
const ALIGN: u64 = 4096;
const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
const IR_VERSION: i64 = 8;

/// Storage / compute dtype of the exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportDType {
    #[default]
    F32,
    F16,
}

impl ExportDType {
    fn onnx(self) -> i32 {
        match self {
            ExportDType::F32 => dt::FLOAT,
            ExportDType::F16 => dt::FLOAT16,
        }
    }
    fn kind(self) -> Kind {
        match self {
            ExportDType::F32 => Kind::Float,
            ExportDType::F16 => Kind::Half,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ExportDType::F32 => "f32",
            ExportDType::F16 => "f16",
        }
    }
}

impl std::str::FromStr for ExportDType {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ExportDType::F32),
            "f16" | "float16" | "half" => Ok(ExportDType::F16),
            _ => Err(ExportError::BadDtype(s.to_string())),
        }
    }
}

/// Which graph the export writes (see the module docs for both interfaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphKind {
    /// Standard opset-17 ops; the cache grows by concatenation (any EP, any head_dim).
    #[default]
    Standard,
    /// ONNX Runtime's fused contrib ops (`GroupQueryAttention` with rotary inside,
    /// `SimplifiedLayerNormalization`, `SkipSimplifiedLayerNormalization`) over a pre-allocated
    /// cache that the sampler binds as both past and present (updated in place).
    Fused,
}

impl GraphKind {
    pub fn name(self) -> &'static str {
        match self {
            GraphKind::Standard => "standard",
            GraphKind::Fused => "fused",
        }
    }
}

impl std::str::FromStr for GraphKind {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "standard" => Ok(GraphKind::Standard),
            "fused" => Ok(GraphKind::Fused),
            _ => Err(ExportError::BadGraph(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    pub dtype: ExportDType,
    pub graph: GraphKind,
}

/// ONNX Runtime's CPU `GroupQueryAttention` kernel works on heads of a multiple of 16.
pub const FUSED_HEAD_DIM_MULTIPLE: i64 = 16;

/// `export.json`: what the sampler needs to know without parsing the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    /// "qwen2" | "qwen3" | "llama"
    pub arch: String,
    pub dtype: ExportDType,
    /// Exports made before the fused graph existed are standard.
    #[serde(default)]
    pub graph: GraphKind,
    pub opset: i64,
    pub num_layers: usize,
    pub num_attention_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// The model's context (`max_position_embeddings`); generation stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// The checkpoint directory it was exported from (informational).
    pub source: String,
    /// Fingerprint (sha256) of the source checkpoint's config and weights.
    pub source_fingerprint: String,
    /// Bytes of `model.onnx.data`.
    pub data_bytes: u64,
    pub producer: String,
}

/// Reads `dir/export.json`.
pub fn read_manifest(dir: &Path) -> Result<ExportManifest> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Err(ExportError::NotAnExport(dir.to_path_buf()));
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ExportError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| ExportError::BadManifest { path, msg: e.to_string() })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io { path: path.to_path_buf(), source }
}

/// ONNX Runtime's contrib-op domain (the fused graph's `GroupQueryAttention`, …).
pub(super) const MS_DOMAIN: &str = "com.microsoft";

/// Builds the graph node by node; weights stream into the external-data file as they are added.
pub(super) struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    n: usize,
    consts: HashMap<String, String>,
    data: HashingWriter<BufWriter<File>>,
    data_path: PathBuf,
    offset: u64,
    pub(super) dtype: ExportDType,
}

pub(super) fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: proto::attr_type::FLOAT, ..Default::default() }
}
pub(super) fn attr_i(name: &str, i: impl Into<i64>) -> AttributeProto {
    AttributeProto { name: name.into(), i: i.into(), r#type: proto::attr_type::INT, ..Default::default() }
}
pub(super) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: ints.to_vec(), r#type: proto::attr_type::INTS, ..Default::default() }
}

fn tensor_type(elem: i32, dims: &[&str]) -> TypeProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => DimValue::DimValue(v),
                Err(_) => DimValue::DimParam((*d).to_string()),
            }),
        })
        .collect();
    TypeProto { tensor_type: Some(TypeProtoTensor { elem_type: elem, shape: Some(TensorShapeProto { dim }) }) }
}

fn value_info(name: &str, elem: i32, dims: &[&str]) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), r#type: Some(tensor_type(elem, dims)), ..Default::default() }
}

impl Builder {
    /// Adds a node of `domain` with the given output names ("" for an optional output left out).
    pub(super) fn node(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[&str],
    ) {
        self.n += 1;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op}_{}", self.n),
            op_type: op.into(),
            attribute: attrs,
            domain: domain.into(),
            ..Default::default()
        });
    }

    /// A fresh value name for an output of `op`.
    pub(super) fn fresh(&mut self, op: &str) -> String {
        self.n += 1;
        format!("{}_{}", op.to_ascii_lowercase(), self.n)
    }

    /// Adds a node with one output; returns the output name.
    pub(super) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.n += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.n);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op}_{}", self.n),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Like [`Builder::op`] with a chosen output name.
    pub(super) fn op_named(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.n += 1;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("{op}_{}", self.n),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn inline(&mut self, key: String, t: TensorProto) -> String {
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!("const_{}", self.consts.len());
        self.inits.push(TensorProto { name: name.clone(), ..t });
        self.consts.insert(key, name.clone());
        name
    }

    pub(super) fn c_i64(&mut self, dims: &[i64], vals: &[i64]) -> String {
        let t =
            TensorProto { dims: dims.to_vec(), data_type: dt::INT64, int64_data: vals.to_vec(), ..Default::default() };
        self.inline(format!("i64{dims:?}{vals:?}"), t)
    }
    pub(super) fn c_f32(&mut self, dims: &[i64], vals: &[f32]) -> String {
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = TensorProto { dims: dims.to_vec(), data_type: dt::FLOAT, raw_data: raw, ..Default::default() };
        self.inline(format!("f32{dims:?}{:?}", vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>()), t)
    }
    /// Writes a weight (converted to the model dtype, transposed if asked) to the data file
    /// and registers it as an external initializer named `name`.
    pub(super) fn weight(&mut self, name: &str, t: &tch::Tensor, transpose: bool) -> Result<String> {
        let t = if transpose { t.f_transpose(0, 1)? } else { t.shallow_clone() };
        let t = t.f_to_kind(self.dtype.kind())?.f_contiguous()?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * self.dtype.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
        if pad > 0 {
            self.data.write_all(&vec![0u8; pad as usize]).map_err(io(&self.data_path))?;
            self.offset += pad;
        }
        self.data.write_all(&bytes).map_err(io(&self.data_path))?;
        let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
        self.inits.push(TensorProto {
            name: name.into(),
            dims: t.size(),
            data_type: self.dtype.onnx(),
            data_location: proto::DATA_LOCATION_EXTERNAL,
            external_data: vec![
                entry("location", ONNX_DATA.into()),
                entry("offset", self.offset.to_string()),
                entry("length", bytes.len().to_string()),
            ],
            ..Default::default()
        });
        self.offset += bytes.len() as u64;
        Ok(name.to_string())
    }

    /// RMSNorm over the last axis, in f32, cast back, times `w`.
    fn rms_norm(&mut self, x: &str, w: &str, eps: f64) -> String {
        let f16 = self.dtype == ExportDType::F16;
        let xf = if f16 { self.op("Cast", &[x], vec![attr_i("to", dt::FLOAT)]) } else { x.to_string() };
        let sq = self.op("Mul", &[&xf, &xf], vec![]);
        let var = self.op("ReduceMean", &[&sq], vec![attr_ints("axes", &[-1]), attr_i("keepdims", 1)]);
        let eps_c = self.c_f32(&[], &[eps as f32]);
        let ve = self.op("Add", &[&var, &eps_c], vec![]);
        let sd = self.op("Sqrt", &[&ve], vec![]);
        let r = self.op("Reciprocal", &[&sd], vec![]);
        let n = self.op("Mul", &[&xf, &r], vec![]);
        let n = if f16 { self.op("Cast", &[&n], vec![attr_i("to", dt::FLOAT16)]) } else { n };
        self.op("Mul", &[w, &n], vec![])
    }

    /// x [B, n, S, D] → x·cos + rotate_half(x)·sin
    fn rope(&mut self, x: &str, cos: &str, sin: &str, half: i64) -> String {
        let split = self.c_i64(&[2], &[half, half]);
        self.n += 1;
        let (x1, x2) = (format!("split_{}_a", self.n), format!("split_{}_b", self.n));
        self.nodes.push(NodeProto {
            input: vec![x.into(), split],
            output: vec![x1.clone(), x2.clone()],
            name: format!("Split_{}", self.n),
            op_type: "Split".into(),
            attribute: vec![attr_i("axis", 3)],
            ..Default::default()
        });
        let nx2 = self.op("Neg", &[&x2], vec![]);
        let rot = self.op("Concat", &[&nx2, &x1], vec![attr_i("axis", 3)]);
        let a = self.op("Mul", &[x, cos], vec![]);
        let b = self.op("Mul", &[&rot, sin], vec![]);
        self.op("Add", &[&a, &b], vec![])
    }

    /// The SwiGLU MLP of layer prefix `m` (`{m}.gate_proj` …) on `h` [.., C]: down(silu(gate(h)) · up(h)).
    pub(super) fn mlp(&mut self, h: &str, m: &str, inter: i64, c: i64, w: &WeightFn) -> Result<String> {
        let mut proj = |n: &str, dims: &[i64]| -> Result<String> {
            let name = format!("{m}.{n}.weight");
            self.weight(&name, &w(&name, dims)?, true) // stored [in, out]
        };
        let (wg, wu, wd) =
            (proj("gate_proj", &[inter, c])?, proj("up_proj", &[inter, c])?, proj("down_proj", &[c, inter])?);
        let gt = self.op("MatMul", &[h, &wg], vec![]);
        let sg = self.op("Sigmoid", &[&gt], vec![]);
        let act = self.op("Mul", &[&gt, &sg], vec![]);
        let up = self.op("MatMul", &[h, &wu], vec![]);
        let prod = self.op("Mul", &[&act, &up], vec![]);
        Ok(self.op("MatMul", &[&prod, &wd], vec![]))
    }

    pub(super) fn linear(&mut self, x: &str, w: &str, b: Option<&str>) -> String {
        let y = self.op("MatMul", &[x, w], vec![]);
        match b {
            Some(b) => self.op("Add", &[&y, b], vec![]),
            None => y,
        }
    }
}

/// RoPE's inverse frequencies [D/2] in f32 (as the tch model), Llama 3.1's scaling applied.
pub(super) fn inv_freq(cfg: &Config) -> Vec<f32> {
    let d = cfg.head_dim;
    let mut inv: Vec<f32> =
        (0..d / 2).map(|i| 1.0f32 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32)).collect();
    if let Some(l) = &cfg.rope_llama3 {
        l.apply(&mut inv);
    }
    inv
}

/// Reads a checkpoint tensor by name and shape (checked finite).
pub(super) type WeightFn<'a> = dyn Fn(&str, &[i64]) -> Result<tch::Tensor> + 'a;

/// The standard decoder stack on the embedded tokens `x` [B, S, C]: RoPE from `position_ids`,
/// an additive mask from `attention_mask`, past/present caches by concatenation. Returns the
/// final-normed hidden states [B, S, C].
fn standard_decoder(g: &mut Builder, cfg: &Config, w: &WeightFn, mut x: String) -> Result<String> {
    let (c, h, k, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let (inter, nl) = (cfg.intermediate_size, cfg.num_hidden_layers as usize);
    let rep = h / k;
    let eps = cfg.rms_norm_eps;
    let ax_last = g.c_i64(&[1], &[-1]);
    let ax1 = g.c_i64(&[1], &[1]);
    // ---- RoPE tables: cos/sin [B, 1, S, D] ----
    let inv = g.c_f32(&[d / 2], &inv_freq(cfg));
    let posf = g.op("Cast", &["position_ids"], vec![attr_i("to", dt::FLOAT)]);
    let posu = g.op("Unsqueeze", &[&posf, &ax_last], vec![]); // [B, S, 1]
    let freqs = g.op("Mul", &[&posu, &inv], vec![]); // [B, S, D/2]
    let emb = g.op("Concat", &[&freqs, &freqs], vec![attr_i("axis", -1)]); // [B, S, D]
    let mut cos = g.op("Cos", &[&emb], vec![]);
    let mut sin = g.op("Sin", &[&emb], vec![]);
    if g.dtype == ExportDType::F16 {
        cos = g.op("Cast", &[&cos], vec![attr_i("to", dt::FLOAT16)]);
        sin = g.op("Cast", &[&sin], vec![attr_i("to", dt::FLOAT16)]);
    }
    let cos = g.op("Unsqueeze", &[&cos, &ax1], vec![]);
    let sin = g.op("Unsqueeze", &[&sin, &ax1], vec![]);

    // ---- additive attention bias [B, 1, 1, S, T] (f32) ----
    let sh_ids = g.op("Shape", &["input_ids"], vec![]);
    let sh_am = g.op("Shape", &["attention_mask"], vec![]);
    let one_s = g.c_i64(&[], &[1]);
    let zero_s = g.c_i64(&[], &[0]);
    let s_len = g.op("Gather", &[&sh_ids, &one_s], vec![attr_i("axis", 0)]); // scalar S
    let t_len = g.op("Gather", &[&sh_am, &one_s], vec![attr_i("axis", 0)]); // scalar T
    let p_len = g.op("Sub", &[&t_len, &s_len], vec![]);
    let kpos = g.op("Range", &[&zero_s, &t_len, &one_s], vec![]); // [T]
    let qpos = g.op("Range", &[&p_len, &t_len, &one_s], vec![]); // [S]
    let qpos = g.op("Unsqueeze", &[&qpos, &ax_last], vec![]); // [S, 1]
    let causal = g.op("LessOrEqual", &[&kpos, &qpos], vec![]); // [S, T]
    let diag = g.op("Equal", &[&kpos, &qpos], vec![]); // [S, T]
    let valid = g.op("Cast", &["attention_mask"], vec![attr_i("to", dt::BOOL)]); // [B, T]
    let ax123 = g.c_i64(&[3], &[1, 2, 3]);
    let valid = g.op("Unsqueeze", &[&valid, &ax123], vec![]); // [B, 1, 1, 1, T]
    let allowed = g.op("And", &[&causal, &valid], vec![]); // [B, 1, 1, S, T]
    let allowed = g.op("Or", &[&allowed, &diag], vec![]);
    let zero_f = g.c_f32(&[], &[0.0]);
    let neg_f = g.c_f32(&[], &[f32::MIN]);
    let bias = g.op("Where", &[&allowed, &zero_f, &neg_f], vec![]); // [B, 1, 1, S, T]
    let scale = g.c_f32(&[], &[1.0 / (d as f32).sqrt()]);

    let shape_q = g.c_i64(&[4], &[0, 0, h, d]);
    let shape_kv = g.c_i64(&[4], &[0, 0, k, d]);
    let shape_q5 = g.c_i64(&[5], &[0, k, rep, -1, d]);
    let shape_o4 = g.c_i64(&[4], &[0, h, -1, d]);
    let shape_o3 = g.c_i64(&[3], &[0, 0, h * d]);
    let ax2 = g.c_i64(&[1], &[2]);

    for i in 0..nl {
        let p = format!("model.layers.{i}");
        let ln1 =
            g.weight(&format!("{p}.input_layernorm.weight"), &w(&format!("{p}.input_layernorm.weight"), &[c])?, false)?;
        let ln2 = g.weight(
            &format!("{p}.post_attention_layernorm.weight"),
            &w(&format!("{p}.post_attention_layernorm.weight"), &[c])?,
            false,
        )?;
        let a = format!("{p}.self_attn");
        let lin = |g: &mut Builder, name: &str, out: i64, inp: i64, bias: bool| -> Result<(String, Option<String>)> {
            let wn = format!("{a}.{name}.weight");
            let wt = g.weight(&wn, &w(&wn, &[out, inp])?, true)?; // stored [in, out]
            let b = if bias {
                let bn = format!("{a}.{name}.bias");
                Some(g.weight(&bn, &w(&bn, &[out])?, false)?)
            } else {
                None
            };
            Ok((wt, b))
        };
        let (wq, bq) = lin(g, "q_proj", h * d, c, cfg.qkv_bias)?;
        let (wk, bk) = lin(g, "k_proj", k * d, c, cfg.qkv_bias)?;
        let (wv, bv) = lin(g, "v_proj", k * d, c, cfg.qkv_bias)?;
        let (wo, bo) = lin(g, "o_proj", c, h * d, cfg.o_bias)?;
        let norms = if cfg.qk_norm {
            let qn = format!("{a}.q_norm.weight");
            let kn = format!("{a}.k_norm.weight");
            Some((g.weight(&qn, &w(&qn, &[d])?, false)?, g.weight(&kn, &w(&kn, &[d])?, false)?))
        } else {
            None
        };

        let hn = g.rms_norm(&x, &ln1, eps); // [B, S, C]
        let q = g.linear(&hn, &wq, bq.as_deref());
        let q = g.op("Reshape", &[&q, &shape_q], vec![]); // [B, S, H, D]
        let kx = g.linear(&hn, &wk, bk.as_deref());
        let kx = g.op("Reshape", &[&kx, &shape_kv], vec![]); // [B, S, K, D]
        let vx = g.linear(&hn, &wv, bv.as_deref());
        let vx = g.op("Reshape", &[&vx, &shape_kv], vec![]);
        let (q, kx) = match &norms {
            Some((qn, kn)) => (g.rms_norm(&q, qn, eps), g.rms_norm(&kx, kn, eps)),
            None => (q, kx),
        };
        let perm = attr_ints("perm", &[0, 2, 1, 3]);
        let q = g.op("Transpose", &[&q], vec![perm.clone()]); // [B, H, S, D]
        let kx = g.op("Transpose", &[&kx], vec![perm.clone()]); // [B, K, S, D]
        let vx = g.op("Transpose", &[&vx], vec![perm.clone()]); // [B, K, S, D]
        let q = g.rope(&q, &cos, &sin, d / 2);
        let kx = g.rope(&kx, &cos, &sin, d / 2);
        let pk = format!("present.{i}.key");
        let pv = format!("present.{i}.value");
        g.op_named("Concat", &[&format!("past_key_values.{i}.key"), &kx], vec![attr_i("axis", 2)], &pk); // [B, K, T, D]
        g.op_named("Concat", &[&format!("past_key_values.{i}.value"), &vx], vec![attr_i("axis", 2)], &pv);
        // Grouped-query attention by broadcasting: q [B, K, rep, S, D] against k/v [B, K, 1, T, D].
        let q5 = g.op("Reshape", &[&q, &shape_q5], vec![]);
        let kt = g.op("Transpose", &[&pk], vec![attr_ints("perm", &[0, 1, 3, 2])]); // [B, K, D, T]
        let kt5 = g.op("Unsqueeze", &[&kt, &ax2], vec![]); // [B, K, 1, D, T]
        let v5 = g.op("Unsqueeze", &[&pv, &ax2], vec![]); // [B, K, 1, T, D]
        let mut sc = g.op("MatMul", &[&q5, &kt5], vec![]); // [B, K, rep, S, T]
        if g.dtype == ExportDType::F16 {
            sc = g.op("Cast", &[&sc], vec![attr_i("to", dt::FLOAT)]);
        }
        let sc = g.op("Mul", &[&sc, &scale], vec![]);
        let sc = g.op("Add", &[&sc, &bias], vec![]);
        let mut pr = g.op("Softmax", &[&sc], vec![attr_i("axis", -1)]);
        if g.dtype == ExportDType::F16 {
            pr = g.op("Cast", &[&pr], vec![attr_i("to", dt::FLOAT16)]);
        }
        let o = g.op("MatMul", &[&pr, &v5], vec![]); // [B, K, rep, S, D]
        let o = g.op("Reshape", &[&o, &shape_o4], vec![]); // [B, H, S, D]
        let o = g.op("Transpose", &[&o], vec![perm]); // [B, S, H, D]
        let o = g.op("Reshape", &[&o, &shape_o3], vec![]); // [B, S, H*D]
        let o = g.linear(&o, &wo, bo.as_deref());
        x = g.op("Add", &[&x, &o], vec![]);

        let h2 = g.rms_norm(&x, &ln2, eps);
        let down = g.mlp(&h2, &format!("{p}.mlp"), inter, c, w)?;
        x = g.op("Add", &[&x, &down], vec![]);
    }

    // ---- final norm ----
    let nw = g.weight("model.norm.weight", &w("model.norm.weight", &[c])?, false)?;
    Ok(g.rms_norm(&x, &nw, eps))
}

/// The files of an export that make its identity (and are listed in `fingerprint.json`).
pub const IDENTITY_FILES: [&str; 3] = [ONNX_FILE, ONNX_DATA, MANIFEST];

/// Checks an export folder's files against its `fingerprint.json` (required: an export without
/// one is incomplete) and returns the fingerprint.
pub fn verify_fingerprint(dir: &Path) -> Result<Fingerprint> {
    if !dir.join(MANIFEST).is_file() {
        return Err(ExportError::NotAnExport(dir.to_path_buf()));
    }
    let names: Vec<String> = IDENTITY_FILES.iter().map(|s| s.to_string()).collect();
    Ok(fingerprint::verify(dir, &names, Some("export"))?)
}

/// Exports the HF checkpoint in `model_dir` to the folder `out_dir`, crash-safely: everything is
/// written into a staging folder beside it and swapped in place of `out_dir` as a whole when
/// complete (a previous export there stays usable until then). `fingerprint.json` records the
/// sha256 of the graph, the weights and the manifest; the source checkpoint's fingerprint is
/// kept in the manifest. Every weight must be finite.
pub fn export(model_dir: &Path, out_dir: &Path, opts: &ExportOptions) -> Result<ExportManifest> {
    let cfg = Config::from_path(model_dir)?;
    if opts.graph == GraphKind::Fused && cfg.head_dim % FUSED_HEAD_DIM_MULTIPLE != 0 {
        return Err(ExportError::Unsupported(format!(
            "the fused graph needs head_dim a multiple of {FUSED_HEAD_DIM_MULTIPLE} (ONNX Runtime's CPU GroupQueryAttention); {} has head_dim {}: export with --graph standard",
            model_dir.display(),
            cfg.head_dim
        )));
    }
    let weights = WeightFiles::open(model_dir)?;
    let source_fp = fingerprint::verify(model_dir, &crate::model::checkpoint::identity_files(&weights), None)?;
    let stage = crate::durable::staging_dir(out_dir).map_err(io(out_dir))?;
    let manifest = write_export(model_dir, &cfg, &weights, &source_fp, &stage, opts)?;
    crate::durable::replace_dir(&stage, out_dir).map_err(io(out_dir))?;
    Ok(manifest)
}

fn write_export(
    model_dir: &Path,
    cfg: &Config,
    weights: &WeightFiles,
    source_fp: &Fingerprint,
    out_dir: &Path,
    opts: &ExportOptions,
) -> Result<ExportManifest> {
    let data_path = out_dir.join(ONNX_DATA);
    let data = HashingWriter::new(BufWriter::with_capacity(1 << 22, File::create(&data_path).map_err(io(&data_path))?));
    let mut g = Builder {
        nodes: vec![],
        inits: vec![],
        n: 0,
        consts: HashMap::new(),
        data,
        data_path: data_path.clone(),
        offset: 0,
        dtype: opts.dtype,
    };
    let mdt = opts.dtype.onnx();
    let (c, k, d) = (cfg.hidden_size, cfg.num_key_value_heads, cfg.head_dim);
    let (v, nl) = (cfg.vocab_size, cfg.num_hidden_layers as usize);
    let fused = opts.graph == GraphKind::Fused;
    let w = |name: &str, dims: &[i64]| -> Result<tch::Tensor> {
        let t = weights.read(name, dims)?;
        crate::model::checkpoint::check_finite(name, &t, model_dir)?;
        Ok(t)
    };

    let mut inputs = vec![value_info("input_ids", dt::INT64, &["batch", "seq"])];
    let (past_seq, present_seq) = if fused {
        inputs.push(value_info("seqlens_k", dt::INT32, &["batch"]));
        inputs.push(value_info("total_sequence_length", dt::INT32, &[]));
        ("max_seq", "max_seq")
    } else {
        inputs.push(value_info("attention_mask", dt::INT64, &["batch", "total_seq"]));
        inputs.push(value_info("position_ids", dt::INT64, &["batch", "seq"]));
        ("past_seq", "total_seq")
    };
    let kv_dims = ["batch", &k.to_string(), past_seq, &d.to_string()].map(|s| s.to_string());
    let kv_dims: Vec<&str> = kv_dims.iter().map(String::as_str).collect();
    let pres_dims = ["batch", &k.to_string(), present_seq, &d.to_string()].map(|s| s.to_string());
    let pres_dims: Vec<&str> = pres_dims.iter().map(String::as_str).collect();
    for i in 0..nl {
        inputs.push(value_info(&format!("past_key_values.{i}.key"), mdt, &kv_dims));
        inputs.push(value_info(&format!("past_key_values.{i}.value"), mdt, &kv_dims));
    }
    // Optional inputs with a default: an initializer of the same name (IR >= 4).
    if !fused {
        inputs.push(value_info("logits_to_keep", dt::INT64, &[]));
        g.inits.push(TensorProto {
            name: "logits_to_keep".into(),
            data_type: dt::INT64,
            int64_data: vec![0],
            ..Default::default()
        });
    }
    inputs.push(value_info("top_k", dt::INT64, &[]));
    g.inits.push(TensorProto { name: "top_k".into(), data_type: dt::INT64, int64_data: vec![1], ..Default::default() });
    // One row per kept position: B·S' (standard; row-major over batch then position) or B (fused).
    let rows = if fused { "batch" } else { "logit_rows" };
    let mut outputs = vec![
        value_info("logits", dt::FLOAT, &[rows, &v.to_string()]),
        value_info("top_logits", dt::FLOAT, &[rows, "top_k"]),
        value_info("top_ids", dt::INT64, &[rows, "top_k"]),
        value_info("logit_sums", dt::FLOAT, &[rows]),
    ];
    for i in 0..nl {
        outputs.push(value_info(&format!("present.{i}.key"), mdt, &pres_dims));
        outputs.push(value_info(&format!("present.{i}.value"), mdt, &pres_dims));
    }

    // ---- embedding, decoder stack, final norm ----
    let emb_w = g.weight("model.embed_tokens.weight", &w("model.embed_tokens.weight", &[v, c])?, false)?;
    let x = g.op("Gather", &[&emb_w, "input_ids"], vec![attr_i("axis", 0)]); // [B, S, C]
    let xn = if fused { super::fused::decoder(&mut g, cfg, &w, x)? } else { standard_decoder(&mut g, cfg, &w, x)? };

    // ---- LM head (Gemm, transB) on the kept positions ----
    let head = if cfg.tie_word_embeddings {
        emb_w.clone()
    } else {
        g.weight("lm_head.weight", &w("lm_head.weight", &[v, c])?, false)?
    };
    let ax0 = g.c_i64(&[1], &[0]);
    let ax1 = g.c_i64(&[1], &[1]);
    // [N, C] → logits [N, V] (f32). Kept 2-D: a Reshape of the [N, V] product to 3-D was a copy of
    // the whole logits every step (14% of a batch-256 decode step in ONNX Runtime's profile).
    let lm_head = |g: &mut Builder, x2: &str| {
        if g.dtype == ExportDType::F16 {
            // Logits in the model dtype, then f32 (as the tch model and transformers). On the CPU
            // EP, ONNX Runtime runs an f16 Gemm in f32 between inserted casts and would cancel them
            // against this Cast (unrounded logits); the Reshape keeps the f16 rounding.
            let l2 = g.op("Gemm", &[x2, &head], vec![attr_i("transB", 1)]);
            let rows_v = g.c_i64(&[2], &[-1, v]);
            let l2 = g.op("Reshape", &[&l2, &rows_v], vec![]);
            g.op_named("Cast", &[&l2], vec![attr_i("to", dt::FLOAT)], "logits");
        } else {
            g.op_named("Gemm", &[x2, &head], vec![attr_i("transB", 1)], "logits");
        }
    };
    if fused {
        // Rows are right-padded in a prefill: row b's last token is at min(seqlens_k[b], S - 1)
        // (a prefill starts from an empty cache; a decode step has S = 1). ONNX Runtime runs every
        // node whatever is fetched, so there is no all-positions head (a second LM-head GEMM per
        // step): every-position logits come from teacher-forced steps.
        let sh_ids = g.op("Shape", &["input_ids"], vec![]);
        let two = g.c_i64(&[1], &[2]);
        let s_len = g.op("Slice", &[&sh_ids, &ax1, &two], vec![]); // [1] = S
        let one = g.c_i64(&[1], &[1]);
        let s_last = g.op("Sub", &[&s_len, &one], vec![]);
        let sk = g.op("Cast", &["seqlens_k"], vec![attr_i("to", dt::INT64)]); // [B]
        let idx = g.op("Min", &[&sk, &s_last], vec![]);
        let idx = g.op("Unsqueeze", &[&idx, &ax1], vec![]); // [B, 1]
        let last = g.op("GatherND", &[&xn, &idx], vec![attr_i("batch_dims", 1)]); // [B, C]
        lm_head(&mut g, &last);
    } else {
        // keep the last `logits_to_keep` positions (0: all)
        let keep1 = g.op("Unsqueeze", &["logits_to_keep", &ax0], vec![]); // [1]
        let start = g.op("Neg", &[&keep1], vec![]);
        let end = g.c_i64(&[1], &[i64::MAX]);
        let xs = g.op("Slice", &[&xn, &start, &end, &ax1], vec![]); // [B, S', C]
        let flat_shape = g.c_i64(&[2], &[-1, c]);
        let x2 = g.op("Reshape", &[&xs, &flat_shape], vec![]); // [B*S', C]
        lm_head(&mut g, &x2);
    }
    // ---- the k best logits of each kept position, and each row's sum (finiteness check) ----
    let k1 = g.op("Unsqueeze", &["top_k", &ax0], vec![]); // [1]
    g.n += 1;
    g.nodes.push(NodeProto {
        input: vec!["logits".into(), k1],
        output: vec!["top_logits".into(), "top_ids".into()],
        name: format!("TopK_{}", g.n),
        op_type: "TopK".into(),
        attribute: vec![attr_i("axis", -1), attr_i("largest", 1), attr_i("sorted", 1)],
        ..Default::default()
    });
    let last = g.c_i64(&[1], &[-1]);
    g.op_named("ReduceSum", &["logits", &last], vec![attr_i("keepdims", 0)], "logit_sums");

    // ---- finish the data file and write the model ----
    let data_bytes = g.offset;
    let (buffered, data_digest) = g.data.finish();
    let mut file =
        buffered.into_inner().map_err(|e| ExportError::Io { path: data_path.clone(), source: e.into_error() })?;
    file.flush().map_err(io(&data_path))?;
    file.sync_all().map_err(io(&data_path))?;
    let graph = GraphProto {
        node: g.nodes,
        name: format!("{}-decoder", cfg.arch.hf_name()),
        initializer: g.inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "rlvr-decomp".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        opset_import: if opts.graph == GraphKind::Fused {
            vec![
                OperatorSetIdProto { domain: String::new(), version: OPSET },
                OperatorSetIdProto { domain: MS_DOMAIN.into(), version: 1 },
            ]
        } else {
            vec![OperatorSetIdProto { domain: String::new(), version: OPSET }]
        },
        ..Default::default()
    };
    let onnx_path = out_dir.join(ONNX_FILE);
    let onnx_bytes = model.encode_to_vec();
    std::fs::write(&onnx_path, &onnx_bytes).map_err(io(&onnx_path))?;

    // ---- config, tokenizer, manifest ----
    for f in ["config.json", "generation_config.json"].iter().chain(TOKENIZER_FILES) {
        let (from, to) = (model_dir.join(f), out_dir.join(f));
        if from.is_file() && from != to {
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    let manifest = ExportManifest {
        arch: cfg.arch.short_name().into(),
        dtype: opts.dtype,
        graph: opts.graph,
        opset: OPSET,
        num_layers: nl,
        num_attention_heads: cfg.num_attention_heads as usize,
        num_kv_heads: k as usize,
        head_dim: d as usize,
        hidden_size: c as usize,
        vocab_size: v as usize,
        max_position_embeddings: Some(cfg.max_position_embeddings as usize),
        eos_token_ids: cfg.eos_token_ids.clone(),
        pad_token_id: cfg.pad_token_id,
        source: model_dir.display().to_string(),
        source_fingerprint: source_fp.sha256.clone(),
        data_bytes,
        producer: format!("rlvr-decomp {}", env!("CARGO_PKG_VERSION")),
    };
    let mpath = out_dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).expect("serializable") + "\n";
    std::fs::write(&mpath, &text).map_err(io(&mpath))?;
    let files = [
        (ONNX_FILE.to_string(), fingerprint::digest_bytes(&onnx_bytes)),
        (ONNX_DATA.to_string(), data_digest),
        (MANIFEST.to_string(), fingerprint::digest_bytes(text.as_bytes())),
    ];
    fingerprint::write(out_dir, &Fingerprint::from_files(files.into_iter().collect()))?;
    Ok(manifest)
}
