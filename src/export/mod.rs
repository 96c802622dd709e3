//! ONNX export of the Qwen2 / Qwen3 decoder (written from Rust, no Python).
//!
//! * [`proto`] — the subset of `onnx.proto` we write, as `prost` messages.
//! * [`onnx`]  — the graph builder: standard opset-17 ops (Gather, MatMul, Softmax, …) by default,
//!   weights as external data in one `model.onnx.data` file (so models over 2 GB work),
//!   past/present KV-cache inputs/outputs, dynamic batch and sequence axes.
//! * `fused`   — the decoder stack of `--graph fused`: ONNX Runtime's `GroupQueryAttention`
//!   (rotary inside) and `(Skip)SimplifiedLayerNormalization` over a cache updated in place.
//!
//! An export directory holds `model.onnx`, `model.onnx.data`, the source `config.json`,
//! `generation_config.json`, tokenizer files, `export.json` ([`ExportManifest`]) and
//! `fingerprint.json` (sha256 of the graph, the weights and the manifest; checked on load).

mod fused;
pub mod onnx;
pub mod proto;

pub use onnx::{
    export, read_manifest, verify_fingerprint, ExportDType, ExportManifest, ExportOptions, GraphKind, IDENTITY_FILES,
    MANIFEST, ONNX_DATA, ONNX_FILE,
};

use std::path::PathBuf;

/// Why an export failed (or an export directory could not be read).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid export manifest: {msg}")]
    BadManifest { path: PathBuf, msg: String },
    #[error("{0} is not an ONNX export directory (no export.json; run `rlvr-decomp export` first)")]
    NotAnExport(PathBuf),
    #[error("unknown export dtype {0:?} (expected f32 or f16)")]
    BadDtype(String),
    #[error("unknown export graph {0:?} (expected standard or fused)")]
    BadGraph(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("libtorch error while reading weights: {0}")]
    Torch(String),
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
}

impl From<tch::TchError> for ExportError {
    fn from(e: tch::TchError) -> Self {
        ExportError::Torch(e.to_string().lines().next().unwrap_or("").to_string())
    }
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;
