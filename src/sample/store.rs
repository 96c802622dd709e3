//! The samples directory: `settings.json` (what was drawn, and how) and chunk files
//! `chunk-NNNNNN.jsonl`, each holding the records of one generation batch.
//!
//! A chunk is written to a temporary name, fsynced, renamed into place, and the directory is
//! fsynced; a `kill -9` at any moment leaves either the whole chunk or nothing (plus perhaps a
//! stray temporary file, removed on the next open). Resuming regenerates exactly the missing
//! chunks. Opening a directory whose `settings.json` differs from the requested settings fails.

use super::{io_err, Result, SampleError};
use crate::prompt::Template;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const SETTINGS_FILE: &str = "settings.json";
const CHUNK_PREFIX: &str = "chunk-";
const CHUNK_SUFFIX: &str = ".jsonl";

/// Everything that determines the samples of a run. Two runs with equal settings produce
/// byte-identical chunk files (on the same backend and machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSettings {
    pub dataset: String,
    /// Problems used (the first `num_problems` of the dataset, `--limit`).
    pub num_problems: usize,
    /// sha256 over the problem ids in order (guards against a changed dataset file).
    pub problems_sha256: String,
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
    pub stop_ids: Vec<i64>,
    pub pad_id: i64,
    /// "ort" | "tch"
    pub backend: String,
    /// Identifies the model: export.json / config.json digest.
    pub model: String,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub problem_id: String,
    pub sample_index: u64,
    /// Decoded response (special tokens removed).
    pub text: String,
    /// Extracted answer (lenient extraction), if any.
    pub answer: Option<String>,
    /// Verdict against `gold` (math-verify tolerance).
    pub correct: bool,
    pub gold: String,
    /// Generated tokens, including the stop token if one was emitted.
    pub num_tokens: u64,
    /// "stop" (emitted a stop token) or "length" (hit max_new_tokens).
    pub finish_reason: String,
}

pub struct SampleStore {
    pub dir: PathBuf,
    pub settings: SampleSettings,
}

fn chunk_name(c: usize) -> String {
    format!("{CHUNK_PREFIX}{c:06}{CHUNK_SUFFIX}")
}

/// Writes `bytes` to `path` durably (see [`crate::durable::write`]).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::durable::write(path, bytes).map_err(io_err(path))
}

fn diff(a: &SampleSettings, b: &SampleSettings) -> String {
    let (va, vb) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let (Some(oa), Some(ob)) = (va.as_object(), vb.as_object()) else { return "unreadable".into() };
    let mut out = vec![];
    for (k, x) in oa {
        let y = ob.get(k).cloned().unwrap_or_default();
        if *x != y {
            out.push(format!("{k}: stored {x}, requested {y}"));
        }
    }
    out.join("; ")
}

impl SampleStore {
    /// Opens `dir` for a run with `settings`: creates it (writing settings.json) or checks that
    /// the stored settings are equal. Removes stray temporary files of killed runs.
    pub fn open_or_create(dir: &Path, settings: SampleSettings) -> Result<SampleStore> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(SETTINGS_FILE);
        if path.is_file() {
            let stored = Self::read_settings(dir)?;
            if stored != settings {
                return Err(SampleError::SettingsMismatch { dir: dir.to_path_buf(), diff: diff(&stored, &settings) });
            }
        } else {
            let text = serde_json::to_string_pretty(&settings).expect("serializable") + "\n";
            write_durable(&path, text.as_bytes())?;
        }
        let store = SampleStore { dir: dir.to_path_buf(), settings };
        store.remove_temp_files()?;
        Ok(store)
    }

    /// Opens an existing samples directory (for evaluation).
    pub fn open(dir: &Path) -> Result<SampleStore> {
        Ok(SampleStore { dir: dir.to_path_buf(), settings: Self::read_settings(dir)? })
    }

    fn read_settings(dir: &Path) -> Result<SampleSettings> {
        let path = dir.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| SampleError::BadFile { path, msg: e.to_string() })
    }

    fn remove_temp_files(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let p = e.map_err(io_err(&self.dir))?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.starts_with('.') && n.ends_with(".tmp") {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// Indices of the chunks already on disk.
    pub fn committed_chunks(&self) -> Result<BTreeSet<usize>> {
        let mut out = BTreeSet::new();
        for e in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let p = e.map_err(io_err(&self.dir))?.path();
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(num) = n.strip_prefix(CHUNK_PREFIX).and_then(|r| r.strip_suffix(CHUNK_SUFFIX)) {
                if let Ok(c) = num.parse::<usize>() {
                    out.insert(c);
                }
            }
        }
        Ok(out)
    }

    /// Durably writes chunk `c`.
    pub fn commit_chunk(&self, c: usize, records: &[SampleRecord]) -> Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("serializable");
            buf.push(b'\n');
        }
        write_durable(&self.dir.join(chunk_name(c)), &buf)
    }

    /// Every record on disk, in chunk order.
    pub fn read_all(&self) -> Result<Vec<SampleRecord>> {
        let mut out = Vec::new();
        for c in self.committed_chunks()? {
            let path = self.dir.join(chunk_name(c));
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                out.push(
                    serde_json::from_str(line).map_err(|e| SampleError::BadFile {
                        path: path.clone(),
                        msg: format!("line {}: {e}", i + 1),
                    })?,
                );
            }
        }
        Ok(out)
    }
}
