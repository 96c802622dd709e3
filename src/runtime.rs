//! Native runtimes: which libtorch the binary linked, whether CUDA is visible, and loading
//! ONNX Runtime dynamically (`ort`'s `load-dynamic`) from the project venv or `ORT_DYLIB_PATH`.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found in the project venv and ORT_DYLIB_PATH is not set (run `make setup`, or set ORT_DYLIB_PATH to libonnxruntime.so)")]
    OrtMissing,
    #[error("cannot load ONNX Runtime from {path}: {msg} (run `make setup`, or point ORT_DYLIB_PATH at onnxruntime>=1.31's libonnxruntime.so)")]
    OrtLoad { path: PathBuf, msg: String },
}

static ORT: OnceLock<Result<(Environment, PathBuf), RuntimeError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use
/// ([`crate::paths::ort_dylib`]: `ORT_DYLIB_PATH`, else the venv's wheel). ort allows one
/// environment per process, so every session is built on this one; it lives until exit.
pub fn ort_environment() -> Result<(Environment, PathBuf), RuntimeError> {
    ORT.get_or_init(|| {
        let path = crate::paths::ort_dylib().ok_or(RuntimeError::OrtMissing)?;
        if !path.is_file() {
            return Err(RuntimeError::OrtLoad { path, msg: "no such file".into() });
        }
        // ort panics (rather than erroring) on some dlopen failures; keep that a one-line error.
        let p = path.clone();
        let res = std::panic::catch_unwind(move || {
            ort::init_from(&p).map_err(|e| e.to_string())?.with_name("rlvr-decomp").build().map_err(|e| e.to_string())
        });
        match res {
            Ok(Ok(env)) => Ok((env, path)),
            Ok(Err(msg)) => Err(RuntimeError::OrtLoad { path, msg }),
            Err(_) => Err(RuntimeError::OrtLoad { path, msg: "the library could not be opened".into() }),
        }
    })
    .clone()
}

/// Load ONNX Runtime (once per process); returns the library path it came from.
pub fn init_ort() -> Result<PathBuf, RuntimeError> {
    ort_environment().map(|(_, path)| path)
}

/// A one-paragraph description of the native runtimes, for `rlvr-decomp env`.
pub fn describe() -> serde_json::Value {
    let ort = match init_ort() {
        Ok(p) => serde_json::json!({"ok": true, "library": p}),
        Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
    };
    serde_json::json!({
        "rlvr_decomp": env!("CARGO_PKG_VERSION"),
        "project_root": crate::paths::project_root(),
        "libtorch": {
            "cuda_available": tch::Cuda::is_available(),
            "cuda_devices": tch::Cuda::device_count(),
            "cudnn_available": tch::Cuda::cudnn_is_available(),
            "threads": tch::get_num_threads(),
        },
        "onnxruntime": ort,
        "math_dir": crate::paths::math_dir(None),
        "paper_data_dir": crate::paths::paper_data_dir(None),
        "tokenizer": crate::paths::tokenizer_path(None),
    })
}
