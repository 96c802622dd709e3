//! Per-step training metrics and held-out evaluation metrics.
//!
//! `metrics.jsonl` gets one line per step (appended and fsynced as the step ends, so `tail -f`
//! follows a run) and `metrics.parquet` the same table (rewritten at every checkpoint and at the
//! end); `eval_metrics.jsonl` / `.parquet` hold one row per (step, held-out set). Columns whose
//! name starts with `time_` are wall-clock measurements; every other column is a deterministic
//! function of the config on a given machine (a resumed run reproduces them exactly).

use super::update::UpdateStats;
use super::{io_err, Result, RlError};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const METRICS_JSONL: &str = "metrics.jsonl";
pub const METRICS_PARQUET: &str = "metrics.parquet";
pub const EVAL_JSONL: &str = "eval_metrics.jsonl";
pub const EVAL_PARQUET: &str = "eval_metrics.parquet";

/// One training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub prompts: usize,
    /// Share of rollouts with reward 1 (the paper's Fig. 4c).
    pub correct_ratio: f64,
    /// Share of prompts whose every sample is correct (Fig. 4d) / incorrect.
    pub fully_solved_ratio: f64,
    pub fully_unsolved_ratio: f64,
    pub response_length_mean: f64,
    pub response_length_max: usize,
    /// Share of responses that ended without a stop token (cut at `max_new_tokens` or the context).
    pub truncated_ratio: f64,
    #[serde(flatten)]
    pub update: UpdateStats,
    pub time_rollout_s: f64,
    pub time_rollout_tokens_per_s: f64,
    pub time_update_s: f64,
    pub time_update_tokens_per_s: f64,
    /// Task-specific extras (e.g. the mini task's strategy shares).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, f64>,
}

/// One held-out set at one step (Fig. 4a/4b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub step: usize,
    pub dataset: String,
    pub problems: usize,
    pub samples: usize,
    /// Share of correct validation generations.
    pub accuracy: f64,
    /// Mean over generations of their mean token entropy under the policy (temperature 1).
    pub entropy: f64,
    pub response_length_mean: f64,
    pub time_s: f64,
}

/// Flattens nested JSON objects into `a/b` keys.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}/{k}") };
                flatten(&key, x, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// A table from JSON rows: numbers → f64 columns (null where missing), strings → string columns.
pub fn rows_to_frame(rows: &[serde_json::Value]) -> Result<DataFrame> {
    let flat: Vec<Vec<(String, serde_json::Value)>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![];
            flatten("", r, &mut v);
            v
        })
        .collect();
    let mut keys: Vec<String> = vec![];
    for r in &flat {
        for (k, _) in r {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut cols = vec![];
    for k in &keys {
        let vals: Vec<Option<&serde_json::Value>> =
            flat.iter().map(|r| r.iter().find(|(kk, _)| kk == k).map(|(_, v)| v).filter(|v| !v.is_null())).collect();
        let col = if vals.iter().flatten().all(|v| v.is_string()) && vals.iter().any(|v| v.is_some()) {
            Column::new(
                k.as_str().into(),
                vals.iter().map(|v| v.and_then(|x| x.as_str()).map(str::to_string)).collect::<Vec<_>>(),
            )
        } else {
            let f: Vec<Option<f64>> = vals
                .iter()
                .map(|v| v.and_then(|x| x.as_f64().or_else(|| x.as_bool().map(|b| b as u8 as f64))))
                .collect();
            Column::new(k.as_str().into(), f)
        };
        cols.push(col);
    }
    DataFrame::new_infer_height(cols).map_err(|e| RlError::Parquet(e.to_string()))
}

/// An append-only JSONL log with a parquet twin.
pub struct Log {
    pub jsonl: PathBuf,
    pub parquet: PathBuf,
}

impl Log {
    pub fn new(dir: &Path, jsonl: &str, parquet: &str) -> Log {
        Log { jsonl: dir.join(jsonl), parquet: dir.join(parquet) }
    }

    /// Appends one row and fsyncs it.
    pub fn append(&self, row: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_string(row).expect("metrics serialize");
        line.push('\n');
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.jsonl).map_err(io_err(&self.jsonl))?;
        f.write_all(line.as_bytes()).map_err(io_err(&self.jsonl))?;
        f.sync_data().map_err(io_err(&self.jsonl))
    }

    /// Every row so far (a torn last line, left by a crash, is ignored).
    pub fn rows(&self) -> Result<Vec<serde_json::Value>> {
        let text = match std::fs::read_to_string(&self.jsonl) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err(&self.jsonl)(e)),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Keeps the rows with `step <= last` (a resume rewinds the log to its checkpoint), durably.
    /// Kept lines are copied byte for byte (never re-serialized).
    pub fn truncate_to(&self, last: usize) -> Result<()> {
        self.keep_before(last + 1)
    }

    /// Keeps the rows with `step < bound` (0: none), durably.
    pub fn keep_before(&self, bound: usize) -> Result<()> {
        let text = match std::fs::read_to_string(&self.jsonl) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.jsonl)(e)),
        };
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            let step = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|r| r.get("step").and_then(|s| s.as_u64()));
            if step.is_some_and(|s| (s as usize) < bound) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept != text {
            crate::durable::write(&self.jsonl, kept.as_bytes()).map_err(io_err(&self.jsonl))?;
        }
        Ok(())
    }

    /// Rewrites the parquet twin from the JSONL rows, durably.
    pub fn write_parquet(&self) -> Result<()> {
        let rows = self.rows()?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut df = rows_to_frame(&rows)?;
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf)
            .finish(&mut df)
            .map_err(|e| RlError::Parquet(format!("{}: {e}", self.parquet.display())))?;
        crate::durable::write(&self.parquet, &buf).map_err(io_err(&self.parquet))
    }
}
