//! Qwen2 / Qwen3 / Llama causal decoder on tch (libtorch), loaded from Hugging Face checkpoints.
//!
//! Depends on nothing else in the crate but [`crate::fingerprint`] (content identity of a
//! checkpoint) and [`crate::durable`] (crash-safe writes).
//!
//! * [`config`]     — `Config` parsed from HF `config.json`.
//! * [`qwen`]       — the model (one file for Qwen2 / Qwen3 / Llama), built on `nn::VarStore`
//!   with HF parameter names, plus log-prob / entropy helpers.
//! * [`kv_cache`]   — per-layer key/value cache for incremental decoding.
//! * [`sampler`]    — seeded temperature / top-p / top-k / greedy sampling, per-row RNGs.
//! * [`generate`]   — batched generation loop (left padding, KV cache, stop ids).
//! * [`static_decode`] — the same generation with a fixed-shape decode step over slot caches,
//!   captured as a CUDA graph on GPUs ([`cuda_graph`]: the C++ shim over `at::cuda::CUDAGraph`),
//!   its tokens drawn on the device ([`device_draw`]: the sampler's draws as tensor ops).
//! * [`checkpoint`] — memory-mapped safetensors loading (single file or sharded) and
//!   HF-layout saving.
//! * [`gguf`]       — GGUF (llama.cpp) files → HF-layout folders (`import-gguf`), dequantizing.
//! * [`memory`]     — memory plans checked before allocating (parameters, generation).
//! * [`op_profile`] — libtorch's per-operator profiler around decode steps (`generate --profile-ops`).
//! * [`bench`]      — forward+backward step timing used by `bench-model`.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cuda_graph;
pub mod device_draw;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod memory;
pub mod op_profile;
pub mod qwen;
pub mod sampler;
pub mod static_decode;

pub use checkpoint::{load_model, save_checkpoint, LoadedModel, SaveOptions};
pub use config::{Arch, Config};
pub use generate::{generate, GenRequest, Generation};
pub use kv_cache::KvCache;
pub use qwen::{entropy, shifted_logprobs_and_entropy, token_logprobs, LayerTape, Qwen};
pub use sampler::{row_seed, Sampler, SamplingParams};

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Errors from configuration parsing, checkpoint I/O and model construction.
/// Every message is one line and names the offending file / tensor / option.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {msg}")]
    InvalidJson { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    InvalidConfig { path: PathBuf, msg: String },
    #[error("unsupported architecture {0:?} (supported: Qwen2ForCausalLM, Qwen3ForCausalLM)")]
    UnknownArchitecture(String),
    #[error("unsupported config option: {0}")]
    UnsupportedOption(String),
    #[error("no weights in {0}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights(PathBuf),
    #[error("shard {shard} listed in {index} is missing")]
    MissingShard { shard: PathBuf, index: PathBuf },
    #[error("tensor {name} not found in checkpoint {dir}")]
    MissingTensor { name: String, dir: PathBuf },
    #[error("shape mismatch for tensor {name}: checkpoint has {found:?}, model expects {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("tensor {name} in {file} has unsupported dtype {dtype} (supported: F32, BF16, F16)")]
    UnsupportedTensorDtype { name: String, file: PathBuf, dtype: String },
    #[error("dtype {dtype} is not supported on device {device}{hint}")]
    DtypeNotSupported { dtype: DType, device: String, hint: &'static str },
    #[error("device {0} is not available (libtorch reports no CUDA device; built without the cuda feature?)")]
    DeviceUnavailable(String),
    #[error("invalid safetensors file {path}: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("invalid input: {0}")]
    BadInput(String),
    #[error("libtorch error: {0}")]
    Torch(String),
    #[error("{what} needs {need} ({plan}); {avail}")]
    OutOfMemory { what: String, need: String, plan: String, avail: String },
    #[error("tensor {name} in {dir} has non-finite values (NaN or inf): the checkpoint is damaged or diverged")]
    NonFiniteWeights { name: String, dir: PathBuf },
    #[error("non-finite logits (NaN or +inf) at generation step {step}, row {row}: the model's weights or activations overflowed")]
    NonFiniteLogits { step: usize, row: usize },
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
}

impl From<tch::TchError> for ModelError {
    fn from(e: tch::TchError) -> Self {
        // libtorch messages can span many lines (C++ backtraces); keep the first one.
        let s = e.to_string();
        ModelError::Torch(s.lines().next().unwrap_or("").to_string())
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Floating-point compute / storage dtype of the model parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::BF16 => tch::Kind::BFloat16,
            DType::F16 => tch::Kind::Half,
        }
    }
    pub fn from_kind(k: tch::Kind) -> Option<DType> {
        match k {
            tch::Kind::Float => Some(DType::F32),
            tch::Kind::BFloat16 => Some(DType::BF16),
            tch::Kind::Half => Some(DType::F16),
            _ => None,
        }
    }
    /// Name used by HF `config.json` (`torch_dtype` / `dtype`).
    pub fn hf_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        })
    }
}

impl FromStr for DType {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" | "half" => Ok(DType::F16),
            _ => Err(ModelError::BadInput(format!("unknown dtype {s:?} (expected f32, bf16 or f16)"))),
        }
    }
}

/// Parses `cpu`, `cuda` or `cuda:N` and checks that the device exists.
pub fn parse_device(s: &str) -> Result<tch::Device> {
    let dev = match s.to_ascii_lowercase().as_str() {
        "cpu" => tch::Device::Cpu,
        "cuda" | "gpu" => tch::Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => return Err(ModelError::BadInput(format!("unknown device {s:?} (expected cpu, cuda or cuda:N)"))),
        },
    };
    if let tch::Device::Cuda(n) = dev {
        if !tch::Cuda::is_available() || (n as i64) >= tch::Cuda::device_count() {
            return Err(ModelError::DeviceUnavailable(s.to_string()));
        }
    }
    Ok(dev)
}

/// Rejects dtype/device combinations we do not run: f16 on CPU (libtorch CPU half
/// kernels are incomplete and very slow; use bf16 or f32 there).
pub fn check_dtype_device(dtype: DType, device: tch::Device) -> Result<()> {
    if dtype == DType::F16 && device == tch::Device::Cpu {
        return Err(ModelError::DtypeNotSupported { dtype, device: "cpu".into(), hint: " (use f32 or bf16 on CPU)" });
    }
    Ok(())
}

/// Human-readable device name for messages.
pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
