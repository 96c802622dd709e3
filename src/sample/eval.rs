//! Samples → per-problem correctness counts → pass@k curve, per dataset; written as
//! `passk.json`, `per_problem.parquet` (dataset, problem_id, n, c) and `pass_at_k.parquet`
//! (dataset, k, pass_at_k).

use super::store::SampleStore;
use super::{Result, SampleError};
use crate::data::DatasetName;
use crate::eval::pass_at_k::{powers_of_two_up_to, report, Counts, PassAtKReport};
use polars::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct DatasetEval {
    pub dataset: DatasetName,
    pub samples_dir: PathBuf,
    /// Samples per problem requested by the run.
    pub k_requested: usize,
    /// Smallest number of samples any problem has (pass@k is reported up to this).
    pub min_samples: u64,
    /// Problems in the run's settings / problems with at least one sample.
    pub problems_expected: usize,
    pub problems_with_samples: usize,
    /// True when every problem has all its samples.
    pub complete: bool,
    pub ks: Vec<u64>,
    pub mean_correct_fraction: f64,
    pub report: PassAtKReport,
}

/// Scores one samples directory, every chunk checked against its manifest entry.
/// `ks`: the k grid (default 1, 2, 4, … up to the samples per problem).
pub fn evaluate_dir(dir: &Path, ks: Option<&[u64]>) -> Result<DatasetEval> {
    let (settings, records) = SampleStore::read_verified(dir)?;
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for r in &records {
        if !seen.insert((r.problem_id.clone(), r.sample_index)) {
            return Err(SampleError::BadFile {
                path: dir.to_path_buf(),
                msg: format!("duplicate sample ({}, {})", r.problem_id, r.sample_index),
            });
        }
        let c = counts.entry(r.problem_id.clone()).or_insert(Counts { n: 0, c: 0 });
        c.n += 1;
        c.c += r.correct as u64;
    }
    if counts.is_empty() {
        return Err(SampleError::BadFile { path: dir.to_path_buf(), msg: "no samples yet".into() });
    }
    let min_n = counts.values().map(|c| c.n).min().unwrap_or(0);
    let ks: Vec<u64> = match ks {
        Some(k) => k.to_vec(),
        None => powers_of_two_up_to(min_n),
    };
    let rep = report(&counts, &ks)?;
    let s = &settings;
    let total_n: u64 = counts.values().map(|c| c.n).sum();
    let total_c: u64 = counts.values().map(|c| c.c).sum();
    Ok(DatasetEval {
        dataset: s.dataset.clone(),
        samples_dir: dir.to_path_buf(),
        k_requested: s.k,
        min_samples: min_n,
        problems_expected: s.num_problems,
        problems_with_samples: counts.len(),
        complete: counts.len() == s.num_problems && counts.values().all(|c| c.n as usize == s.k),
        ks,
        mean_correct_fraction: total_c as f64 / total_n.max(1) as f64,
        report: rep,
    })
}

/// Writes `df` as parquet to `path` durably (temp file, fsync, rename).
fn parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(df).map_err(|e| SampleError::Parquet(format!("{}: {e}", path.display())))?;
    super::store::write_durable(path, &buf)
}

/// Scores every directory and writes `passk.json`, `per_problem.parquet`, `pass_at_k.parquet`
/// into `out_dir` (held under its run-folder lock while written). Returns the evaluations.
/// Two folders of one dataset are refused: which one is meant cannot be guessed.
pub fn evaluate(dirs: &[PathBuf], ks: Option<&[u64]>, out_dir: &Path) -> Result<Vec<DatasetEval>> {
    let evals: Vec<DatasetEval> = dirs.iter().map(|d| evaluate_dir(d, ks)).collect::<Result<_>>()?;
    let mut seen: BTreeMap<DatasetName, &Path> = BTreeMap::new();
    for e in &evals {
        if let Some(first) = seen.insert(e.dataset.clone(), &e.samples_dir) {
            return Err(SampleError::BadInput(format!(
                "{} and {} both hold samples of {}; evaluate one folder per dataset",
                first.display(),
                e.samples_dir.display(),
                e.dataset
            )));
        }
    }
    let _lock = crate::rundir::FolderLock::acquire(out_dir)?;
    let json = serde_json::json!({
        "datasets": evals.iter().map(|e| (e.dataset.name(), e)).collect::<BTreeMap<_, _>>(),
    });
    let path = out_dir.join("passk.json");
    let text = serde_json::to_string_pretty(&json).expect("serializable") + "\n";
    super::store::write_durable(&path, text.as_bytes())?;

    let (mut ds, mut pid, mut n, mut c) = (vec![], vec![], vec![], vec![]);
    let (mut ds2, mut kk, mut pk) = (vec![], vec![], vec![]);
    for e in &evals {
        for (id, p) in &e.report.per_problem {
            ds.push(e.dataset.name().to_string());
            pid.push(id.clone());
            n.push(p.n);
            c.push(p.c);
        }
        for (k, v) in &e.report.pass_at_k {
            ds2.push(e.dataset.name().to_string());
            kk.push(*k);
            pk.push(*v);
        }
    }
    let pe = |e: PolarsError| SampleError::Parquet(e.to_string());
    let mut per = DataFrame::new_infer_height(vec![
        Column::new("dataset".into(), ds),
        Column::new("problem_id".into(), pid),
        Column::new("n".into(), n),
        Column::new("c".into(), c),
    ])
    .map_err(pe)?;
    parquet(&mut per, &out_dir.join("per_problem.parquet"))?;
    let mut curve = DataFrame::new_infer_height(vec![
        Column::new("dataset".into(), ds2),
        Column::new("k".into(), kk),
        Column::new("pass_at_k".into(), pk),
    ])
    .map_err(pe)?;
    parquet(&mut curve, &out_dir.join("pass_at_k.parquet"))?;
    Ok(evals)
}
