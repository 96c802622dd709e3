//! The samples folder: a [`crate::rundir`] run folder whose result files are chunks
//! `chunk-NNNNNN.jsonl`, each holding the records of one generation batch.
//!
//! What the run-folder contract gives here: one process at a time (`.lock`), `settings.json`
//! compared on every resume (a different model, dataset content, tokenizer or sampling setting
//! is refused, naming what differs), and every chunk checked against `manifest.jsonl` (record
//! count and sha256) — on resume a chunk that fails is moved to `rejected/` and drawn again; in
//! [`SampleStore::read_verified`] (evaluation) it is an error.

use super::{Result, SampleError};
use crate::data::DatasetName;
use crate::eval::verify::{Mode, Tolerance};
use crate::prompt::Template;
use crate::rundir::{self, Layout, RunDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use crate::rundir::SETTINGS_FILE;
const CHUNK_PREFIX: &str = "chunk-";
const CHUNK_SUFFIX: &str = ".jsonl";

/// Which generation backend drew the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// ONNX Runtime over an export (`rlvr-decomp export`).
    Ort,
    /// libtorch over an HF checkpoint.
    Tch,
}

/// How verdicts were decided (training rewards use strict extraction, evaluation lenient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierSettings {
    pub mode: Mode,
    pub tolerance: Tolerance,
}

/// Everything that determines the samples of a run. Two runs with equal settings produce
/// byte-identical chunk files (on the same backend and machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    pub dataset: DatasetName,
    /// Problems used (the first `num_problems` of the dataset, `--limit`).
    pub num_problems: usize,
    /// sha256 over every selected problem's id, rendered prompt and gold answer, in order
    /// ([`super::selection_sha256`]): an edited problem or answer changes it.
    pub selection_sha256: String,
    /// Samples per problem.
    pub k: usize,
    /// Rows per generation batch (= per chunk); fixes batch composition, so it is part of the
    /// settings (float results may depend on the batch shape).
    pub batch: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub template: Template,
    /// sha256 of the tokenizer.json used for prompts and decoding.
    pub tokenizer_sha256: String,
    pub stop_ids: Vec<i64>,
    pub pad_id: i64,
    pub backend: BackendKind,
    /// The model's content fingerprint: `onnx:<sha256>` (export) or `hf:<sha256>` (checkpoint).
    pub model: String,
    pub verifier: VerifierSettings,
}

/// Why a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    /// Emitted a stop token (kept in `token_ids`).
    Stop,
    /// Reached `max_new_tokens`.
    Length,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub problem_id: String,
    pub sample_index: u64,
    /// Decoded response (special tokens removed).
    pub text: String,
    /// Extracted answer, if any (the settings' verifier mode).
    pub answer: Option<String>,
    /// Verdict against `gold` (the settings' verifier).
    pub correct: bool,
    pub gold: String,
    /// Generated tokens, including the stop token if one was emitted.
    pub num_tokens: u64,
    pub finish_reason: FinishReason,
    /// The generated token ids (prompt excluded), so log-probs can be recomputed exactly.
    pub token_ids: Vec<i64>,
}

pub struct SampleStore {
    pub dir: PathBuf,
    pub settings: SampleSettings,
    run: RunDir,
}

/// Writes `bytes` to `path` durably (see [`crate::durable::write`]).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::durable::write(path, bytes).map_err(super::io_err(path))
}

pub fn chunk_name(c: usize) -> String {
    format!("{CHUNK_PREFIX}{c:06}{CHUNK_SUFFIX}")
}

fn chunk_index(name: &str) -> Option<usize> {
    name.strip_prefix(CHUNK_PREFIX)?.strip_suffix(CHUNK_SUFFIX)?.parse().ok()
}

/// The samples folder's layout for [`crate::rundir`].
pub const LAYOUT: Layout = Layout { is_result: |n| chunk_index(n).is_some() };

fn parse_records(path: &Path, bytes: &[u8]) -> Result<Vec<SampleRecord>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| SampleError::BadFile { path: path.to_path_buf(), msg: format!("not UTF-8: {e}") })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| SampleError::BadFile { path: path.to_path_buf(), msg: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

impl SampleStore {
    /// Opens `dir` for a run with `settings` under the run-folder contract: takes the lock,
    /// creates or checks `settings.json`, verifies committed chunks (moving failures aside).
    pub fn open_or_create(dir: &Path, settings: SampleSettings) -> Result<SampleStore> {
        let run = RunDir::open(dir, &settings, LAYOUT)?;
        Ok(SampleStore { dir: dir.to_path_buf(), settings, run })
    }

    /// Indices of the verified, committed chunks.
    pub fn committed_chunks(&self) -> BTreeSet<usize> {
        self.run.entries().keys().filter_map(|n| chunk_index(n)).collect()
    }

    /// Warnings raised while opening (chunks moved aside, …).
    pub fn warnings(&self) -> &[String] {
        &self.run.warnings
    }

    /// Durably writes chunk `c` and records it in the manifest.
    pub fn commit_chunk(&mut self, c: usize, records: &[SampleRecord]) -> Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("serializable");
            buf.push(b'\n');
        }
        Ok(self.run.commit(&chunk_name(c), &buf, records.len() as u64)?)
    }

    /// Reads a samples folder without writing to it (for evaluation): its settings and every
    /// committed record, each chunk checked against its manifest entry (sha256 and record count).
    /// A chunk that fails is an error; chunks not yet committed are skipped with a warning.
    pub fn read_verified(dir: &Path) -> Result<(SampleSettings, Vec<SampleRecord>)> {
        let v = rundir::read_verified::<SampleSettings>(dir, LAYOUT)?;
        for n in &v.uncommitted {
            tracing::warn!("{}: not committed (a run was interrupted); ignored", dir.join(n).display());
        }
        let mut out = Vec::new();
        for e in &v.entries {
            let path = dir.join(&e.name);
            let bytes = rundir::read_entry(dir, e)?;
            let recs = parse_records(&path, &bytes)?;
            if recs.len() as u64 != e.records {
                return Err(rundir::RunDirError::Tampered {
                    path,
                    msg: format!("{} records, the manifest says {}", recs.len(), e.records),
                }
                .into());
            }
            out.extend(recs);
        }
        Ok((v.settings, out))
    }
}
