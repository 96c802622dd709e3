//! Model configuration parsed from a Hugging Face `config.json`.
//!
//! Accepts both the transformers 4.x layout (`rope_theta`, `rope_scaling`, `torch_dtype`)
//! and the 5.x layout (`rope_parameters: {rope_theta, rope_type}`, `dtype`).
//! Options we do not implement (sliding-window attention, RoPE scaling other than Llama 3.1's
//! `llama3`, a non-SiLU activation) are rejected with [`ModelError::UnsupportedOption`] instead of being
//! silently ignored.

use super::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5 (e.g. Qwen2.5-Math-7B): bias on q/k/v, no q/k norm.
    Qwen2,
    /// Qwen3 (e.g. Qwen3-4B): RMSNorm on q and k per head, explicit head_dim,
    /// bias on q/k/v/o only if `attention_bias`.
    Qwen3,
    /// Llama (e.g. SmolLM2, Llama-3.x without RoPE scaling): Qwen2's block without q/k/v biases
    /// (q/k/v/o biases only if `attention_bias`), no q/k norm, head_dim from the config.
    Llama,
}

impl Arch {
    pub fn hf_name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }

    /// Short name, as in `export.json` ("qwen2", "qwen3", "llama").
    pub fn short_name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rope_theta: f64,
    /// Llama 3.1's RoPE frequency scaling (`rope_type: "llama3"`), if configured.
    pub rope_llama3: Option<Llama3Rope>,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: i64,
    /// Bias on q/k/v projections (always true for Qwen2; `attention_bias` otherwise).
    pub qkv_bias: bool,
    /// Bias on the output projection (Qwen3 / Llama with `attention_bias`).
    pub o_bias: bool,
    /// Per-head RMSNorm on q and k (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: Option<i64>,
    /// `torch_dtype` / `dtype` from the file, if any (e.g. "bfloat16").
    pub torch_dtype: Option<String>,
    /// The whole JSON object, written back verbatim (modulo dtype) when saving.
    pub raw: Value,
}

fn get_i64(v: &Value, key: &str, path: &Path) -> Result<i64> {
    match v.get(key) {
        Some(x) => x.as_i64().ok_or_else(|| ModelError::InvalidConfig {
            path: path.into(),
            msg: format!("field {key} must be an integer, got {x}"),
        }),
        None => Err(ModelError::InvalidConfig { path: path.into(), msg: format!("missing field {key}") }),
    }
}

fn opt_f64(v: &Value, key: &str, path: &Path) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or_else(|| ModelError::InvalidConfig {
            path: path.into(),
            msg: format!("field {key} must be a number, got {x}"),
        }),
    }
}

fn opt_bool(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// `eos_token_id` may be an int, a list of ints or null.
fn id_list(v: Option<&Value>) -> Vec<i64> {
    match v {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
        _ => vec![],
    }
}

impl Config {
    /// Reads and validates `dir/config.json` (or a path to a JSON file).
    pub fn from_path(path: &Path) -> Result<Config> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|source| ModelError::Io { path: file.clone(), source })?;
        Self::from_json_str(&text, &file)
    }

    /// Parses config text; `origin` is only used in error messages.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Config> {
        let raw: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::InvalidJson { path: origin.into(), msg: e.to_string() })?;
        if !raw.is_object() {
            return Err(ModelError::InvalidConfig {
                path: origin.into(),
                msg: "top-level value is not an object".into(),
            });
        }
        let p = origin;
        let arch_name = raw
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| raw.get("model_type").and_then(Value::as_str).map(|m| format!("model_type={m}")))
            .unwrap_or_else(|| "<none>".into());
        let arch = match arch_name.as_str() {
            "Qwen2ForCausalLM" | "model_type=qwen2" => Arch::Qwen2,
            "Qwen3ForCausalLM" | "model_type=qwen3" => Arch::Qwen3,
            "LlamaForCausalLM" | "model_type=llama" => Arch::Llama,
            other => return Err(ModelError::UnknownArchitecture(other.to_string())),
        };

        // ---- options we do not implement: fail loudly ----
        if opt_bool(&raw, "use_sliding_window") == Some(true) {
            return Err(ModelError::UnsupportedOption("use_sliding_window=true (sliding-window attention)".into()));
        }
        if let Some(lt) = raw.get("layer_types").and_then(Value::as_array) {
            if let Some(bad) = lt.iter().filter_map(Value::as_str).find(|t| *t != "full_attention") {
                return Err(ModelError::UnsupportedOption(format!(
                    "layer_types contains {bad:?} (only full_attention)"
                )));
            }
        }
        let mut rope_llama3 = None;
        match raw.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(v) if is_default_rope(v) => {}
            Some(v) => match Llama3Rope::parse(v, "rope_scaling", p)? {
                Some(l) => rope_llama3 = Some(l),
                None => {
                    return Err(ModelError::UnsupportedOption(format!(
                        "rope_scaling={v} (only null or rope_type=llama3 is supported)"
                    )))
                }
            },
        }
        let mut rope_theta = opt_f64(&raw, "rope_theta", p)?;
        if let Some(rp) = raw.get("rope_parameters").filter(|v| !v.is_null()) {
            if !is_default_rope(rp) {
                match Llama3Rope::parse(rp, "rope_parameters", p)? {
                    Some(l) => rope_llama3 = Some(l),
                    None => {
                        return Err(ModelError::UnsupportedOption(format!(
                            "rope_parameters={rp} (only rope_type=default or llama3)"
                        )))
                    }
                }
            }
            if let Some(t) = opt_f64(rp, "rope_theta", p)? {
                rope_theta = Some(t);
            }
        }
        if opt_bool(&raw, "mlp_bias") == Some(true) {
            return Err(ModelError::UnsupportedOption("mlp_bias=true (biases on the MLP projections)".into()));
        }
        if let Some(act) = raw.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(ModelError::UnsupportedOption(format!("hidden_act={act:?} (only silu)")));
            }
        }

        let hidden_size = get_i64(&raw, "hidden_size", p)?;
        let num_attention_heads = get_i64(&raw, "num_attention_heads", p)?;
        let num_key_value_heads = match raw.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            Some(_) => get_i64(&raw, "num_key_value_heads", p)?,
        };
        let head_dim = match (arch, raw.get("head_dim")) {
            (_, Some(v)) if !v.is_null() => get_i64(&raw, "head_dim", p)?,
            _ => {
                if num_attention_heads <= 0 || hidden_size % num_attention_heads != 0 {
                    return Err(ModelError::InvalidConfig {
                        path: p.into(),
                        msg: format!(
                            "hidden_size {hidden_size} not divisible by num_attention_heads {num_attention_heads}"
                        ),
                    });
                }
                hidden_size / num_attention_heads
            }
        };
        let attention_bias = opt_bool(&raw, "attention_bias").unwrap_or(false);
        let cfg = Config {
            arch,
            vocab_size: get_i64(&raw, "vocab_size", p)?,
            hidden_size,
            intermediate_size: get_i64(&raw, "intermediate_size", p)?,
            num_hidden_layers: get_i64(&raw, "num_hidden_layers", p)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rope_theta: rope_theta.unwrap_or(10000.0),
            rope_llama3,
            rms_norm_eps: opt_f64(&raw, "rms_norm_eps", p)?.unwrap_or(1e-6),
            tie_word_embeddings: opt_bool(&raw, "tie_word_embeddings").unwrap_or(false),
            max_position_embeddings: raw.get("max_position_embeddings").and_then(Value::as_i64).unwrap_or(32768),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                Arch::Qwen3 | Arch::Llama => attention_bias,
            },
            o_bias: arch != Arch::Qwen2 && attention_bias,
            qk_norm: arch == Arch::Qwen3,
            bos_token_id: raw.get("bos_token_id").and_then(Value::as_i64),
            eos_token_ids: id_list(raw.get("eos_token_id")),
            pad_token_id: raw.get("pad_token_id").and_then(Value::as_i64),
            torch_dtype: raw
                .get("torch_dtype")
                .or_else(|| raw.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
            raw,
        };
        cfg.validate(p)?;
        Ok(cfg)
    }

    fn validate(&self, p: &Path) -> Result<()> {
        let bad = |msg: String| Err(ModelError::InvalidConfig { path: p.into(), msg });
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v <= 0 {
                return bad(format!("{k} must be positive, got {v}"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return bad(format!(
                "num_attention_heads {} not divisible by num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }

    /// Query heads per key/value head (GQA group size).
    pub fn n_rep(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The dtype recorded in config.json, if it is one we support.
    pub fn checkpoint_dtype(&self) -> Option<super::DType> {
        self.torch_dtype.as_deref().and_then(|s| s.parse().ok())
    }
}

/// Llama 3.1's RoPE scaling (`rope_type: "llama3"`): long wavelengths divided by `factor`, short ones
/// kept, the band between interpolated — transformers' `_compute_llama3_parameters`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

impl Llama3Rope {
    /// `Some` for a `rope_type: "llama3"` object (every field required, no unknown ones), `None` for
    /// another type.
    fn parse(v: &Value, field: &str, p: &Path) -> Result<Option<Llama3Rope>> {
        let t = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str);
        if t != Some("llama3") {
            return Ok(None);
        }
        const KEYS: [&str; 4] = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"];
        if let Some(o) = v.as_object() {
            if let Some(k) = o
                .keys()
                .find(|k| !KEYS.contains(&k.as_str()) && !matches!(k.as_str(), "rope_type" | "type" | "rope_theta"))
            {
                return Err(ModelError::UnsupportedOption(format!("{field}.{k} with rope_type=llama3")));
            }
        }
        let num = |k: &str| -> Result<f64> {
            opt_f64(v, k, p)?.ok_or_else(|| ModelError::InvalidConfig {
                path: p.into(),
                msg: format!("{field} with rope_type=llama3 needs {k}"),
            })
        };
        let l = Llama3Rope {
            factor: num(KEYS[0])?,
            low_freq_factor: num(KEYS[1])?,
            high_freq_factor: num(KEYS[2])?,
            original_max_position_embeddings: num(KEYS[3])?,
        };
        if !(l.factor > 0.0 && l.high_freq_factor > l.low_freq_factor && l.low_freq_factor > 0.0) {
            return Err(ModelError::InvalidConfig {
                path: p.into(),
                msg: format!("{field}: invalid llama3 scaling {v}"),
            });
        }
        Ok(Some(l))
    }

    /// Rescales RoPE inverse frequencies in place.
    pub fn apply(&self, inv_freq: &mut [f32]) {
        let old = self.original_max_position_embeddings;
        let (low_wavelen, high_wavelen) = (old / self.low_freq_factor, old / self.high_freq_factor);
        for f in inv_freq.iter_mut() {
            let x = *f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / x;
            let y = if wavelen < high_wavelen {
                x
            } else if wavelen > low_wavelen {
                x / self.factor
            } else {
                let smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor);
                (1.0 - smooth) * x / self.factor + smooth * x
            };
            *f = y as f32;
        }
    }
}

fn is_default_rope(v: &Value) -> bool {
    let t = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str);
    matches!(t, None | Some("default"))
        && v.as_object().is_some_and(|o| {
            o.keys().all(|k| matches!(k.as_str(), "rope_type" | "type" | "rope_theta" | "partial_rotary_factor"))
        })
        && v.get("partial_rotary_factor").and_then(Value::as_f64).is_none_or(|f| f == 1.0)
}
