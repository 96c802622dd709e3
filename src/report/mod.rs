//! The report stage: Table 1 and the figures, regenerated from a run folder's eval and training
//! files (`rlvr-decomp report --run results/<run>`), into `results/<run>/report/`.
//!
//! * [`tables`]  — Table 1 analogue (polars): `table1.csv` (long: method, seed, tier, k,
//!   pass_at_k) and `table1.md` (wide, like the paper's, mean over seeds).
//! * [`figures`] — plotters, PNG (the embedded DejaVu font, so the pixels do not depend on the
//!   machine's fonts) and SVG, no timestamps: pass@k per tier (Fig. 2/3 analogues) and the
//!   training dynamics (Fig. 4a–d analogues).
//!
//! Inputs, as `scripts/reproduce.sh` lays them out: `eval/<method>/seed<S>/passk.json` (the
//! `eval` stage) and `rl/<method>/seed<S>/{metrics,eval_metrics}.jsonl` (the trainer).

pub mod claims;
pub mod figures;
pub mod paper;
pub mod tables;

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The methods in the paper's order (the base model first).
pub const METHODS: [&str; 6] = ["base", "ppo", "grpo", "psr", "nsr", "w-reinforce"];
/// Display names.
pub fn method_label(m: &str) -> &str {
    match m {
        "base" => "Base",
        "ppo" => "PPO",
        "grpo" => "GRPO",
        "psr" => "PSR",
        "nsr" => "NSR",
        "w-reinforce" => "W-REINFORCE",
        other => other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{0} holds no evaluations (eval/<method>/seed<S>/passk.json); run the eval stage first")]
    NothingToReport(PathBuf),
    #[error("table: {0}")]
    Table(String),
    #[error("figure {path}: {msg}")]
    Figure { path: PathBuf, msg: String },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// One pass@k value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassRow {
    pub method: String,
    pub seed: u64,
    pub tier: String,
    pub k: u64,
    pub pass_at_k: f64,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| ReportError::BadFile { path: path.to_path_buf(), msg: e.to_string() })
}

/// `seed<S>` folders of `dir`, as (S, path), sorted.
fn seed_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("seed").and_then(|s| s.parse().ok()).map(|s| (s, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Tier order: the paper's MATH, AMC23, AIME25 analogues first, then any other dataset by name.
pub fn tier_rank(t: &str) -> (usize, String) {
    let r = ["math", "amc", "aime"].iter().position(|x| *x == t).unwrap_or(3);
    (r, t.to_string())
}

pub fn method_rank(m: &str) -> (usize, String) {
    (METHODS.iter().position(|x| *x == m).unwrap_or(METHODS.len()), m.to_string())
}

/// Every pass@k value of the run, sorted by method, seed, tier, k; an error when there is none.
pub fn collect_pass_at_k(run: &Path) -> Result<Vec<PassRow>> {
    let rows = pass_rows(run)?;
    if rows.is_empty() {
        return Err(ReportError::NothingToReport(run.to_path_buf()));
    }
    Ok(rows)
}

/// Every pass@k value under `run/eval/<method>/seed<S>/passk.json` (possibly none), sorted.
pub fn pass_rows(run: &Path) -> Result<Vec<PassRow>> {
    let mut rows = vec![];
    let eval = run.join("eval");
    for m in method_dirs(&eval) {
        for (seed, dir) in seed_dirs(&eval.join(&m)) {
            let path = dir.join("passk.json");
            if !path.is_file() {
                continue;
            }
            let v = read_json(&path)?;
            let ds = v
                .get("datasets")
                .and_then(|d| d.as_object())
                .ok_or_else(|| ReportError::BadFile { path: path.clone(), msg: "no datasets object".into() })?;
            for (name, d) in ds {
                let tier = paper::tier_of_benchmark(name);
                let curve = d.pointer("/report/pass_at_k").and_then(|c| c.as_object()).ok_or_else(|| {
                    ReportError::BadFile { path: path.clone(), msg: format!("{name}: no report.pass_at_k") }
                })?;
                for (k, val) in curve {
                    let (Ok(k), Some(p)) = (k.parse::<u64>(), val.as_f64()) else {
                        return Err(ReportError::BadFile { path: path.clone(), msg: format!("{name}: bad pass@{k}") });
                    };
                    rows.push(PassRow { method: m.clone(), seed, tier: tier.clone(), k, pass_at_k: p });
                }
            }
        }
    }
    rows.sort_by(|a, b| {
        (method_rank(&a.method), a.seed, tier_rank(&a.tier), a.k).cmp(&(
            method_rank(&b.method),
            b.seed,
            tier_rank(&b.tier),
            b.k,
        ))
    });
    Ok(rows)
}

/// One training run's logs.
#[derive(Debug, Clone)]
pub struct TrainingRun {
    pub method: String,
    pub seed: u64,
    /// metrics.jsonl rows.
    pub steps: Vec<serde_json::Value>,
    /// eval_metrics.jsonl rows.
    pub evals: Vec<serde_json::Value>,
}

fn jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Sub-folders of `dir`, by name, in the paper's method order.
fn method_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|m| method_rank(m));
    names
}

/// Every training run under `run/rl/<method>/seed<S>/`.
pub fn collect_training(run: &Path) -> Result<Vec<TrainingRun>> {
    let rl = run.join("rl");
    let mut out = vec![];
    for m in method_dirs(&rl) {
        for (seed, dir) in seed_dirs(&rl.join(&m)) {
            let steps = jsonl(&dir.join("metrics.jsonl"))?;
            let evals = jsonl(&dir.join("eval_metrics.jsonl"))?;
            if !steps.is_empty() {
                out.push(TrainingRun { method: m.clone(), seed, steps, evals });
            }
        }
    }
    Ok(out)
}

/// The experiments of a run (`experiments/<name>/`, in name order) that have evaluations.
pub fn experiments(run: &Path) -> Result<Vec<(String, PathBuf, Vec<PassRow>)>> {
    let dir = run.join("experiments");
    let mut out = vec![];
    // Experiment names rank after the methods, so `method_dirs` returns them by name.
    for n in method_dirs(&dir) {
        let p = dir.join(&n);
        let rows = pass_rows(&p)?;
        if !rows.is_empty() {
            out.push((n, p, rows));
        }
    }
    Ok(out)
}

/// What `report` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub out: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Writes Table 1, the experiments table and every figure whose inputs exist (or only those whose
/// name starts with `only`), into `run/report/`.
pub fn run(run: &Path, only: Option<&str>) -> Result<ReportSummary> {
    let out = run.join("report");
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let rows = collect_pass_at_k(run)?;
    let training = collect_training(run)?;
    let paper = paper::PaperData::load(&crate::paths::project_root())?;
    let exps = experiments(run)?;
    // The run's name in titles; a trailing slash or `.` still names the folder.
    let run_name = std::fs::canonicalize(run)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    let mut files = vec![];
    let want = |name: &str| only.is_none_or(|o| name.starts_with(o));
    if want("table1") {
        files.extend(tables::write_table1(&rows, &out)?);
    }
    if want("table_experiments") && !exps.is_empty() {
        let e: Vec<(String, Vec<PassRow>)> = exps.iter().map(|(n, _, r)| (n.clone(), r.clone())).collect();
        files.extend(tables::write_experiments(&e, &out)?);
    }
    if want("fig2") {
        files.extend(figures::pass_at_k_figures(&rows, &paper, &run_name, &out)?);
    }
    if want("fig4") && !training.is_empty() {
        files.extend(figures::dynamics_figure(&training, &paper, &run_name, &out)?);
    }
    let mut grads: Vec<PathBuf> = std::fs::read_dir(run.join("gradient"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    grads.sort();
    if want("fig5") && !grads.is_empty() {
        files.extend(figures::gradient_figure(&grads, &out)?);
    }
    if let Some((_, dir, ab_rows)) = exps.iter().find(|(n, _, _)| n == "ablations") {
        if want("fig6") && ab_rows.iter().any(|r| r.method.starts_with("lambda-")) {
            files.extend(figures::lambda_figure(&rows, ab_rows, &out)?);
        }
        if want("fig7") {
            let ab_runs = collect_training(dir)?;
            files.extend(figures::ablations_figure(&training, &rows, &ab_runs, ab_rows, &out)?);
        }
    }
    Ok(ReportSummary { out, files })
}
