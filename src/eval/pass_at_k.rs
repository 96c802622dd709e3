//! Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", Eq. 1):
//!
//! pass@k = E_x[ 1 − C(n−c, k) / C(n, k) ]
//!
//! computed in the numerically stable product form used by human-eval and by the paper's
//! `calculate_metrics.py`: `1 − Π_{i=n−c+1}^{n} (1 − k/i)`. A problem with `n − c < k` has
//! pass@k = 1. pass@k is undefined for `k > n`: [`pass_at_k`] returns `None`, and a dataset mean
//! is reported only when every problem has `n ≥ k` (like human-eval's `(total >= k).all()`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Unbiased pass@k for one problem with `n` samples of which `c` are correct.
/// `None` when `k > n` or `c > n` or `k == 0`.
///
/// ```
/// use rlvr_decomp::eval::pass_at_k::pass_at_k;
/// // human-eval's example_samples.jsonl: 6 samples, 3 correct → prints 0.4999999999999999.
/// assert_eq!(pass_at_k(6, 3, 1), Some(0.4999999999999999));
/// assert_eq!(pass_at_k(3, 3, 4), None);
/// ```
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    Some(1.0 - (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>())
}

/// The paper's k grid: 1, 2, 4, …, up to and including `max_k` (powers of two).
pub fn powers_of_two_up_to(max_k: u64) -> Vec<u64> {
    std::iter::successors(Some(1u64), |k| k.checked_mul(2)).take_while(|&k| k <= max_k).collect()
}

/// Correctness counts for one problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub n: u64,
    pub c: u64,
}

/// pass@k over a dataset: per-problem values and the dataset mean for each k.
#[derive(Clone, Debug, Serialize)]
pub struct PassAtKReport {
    pub n_problems: usize,
    /// Dataset mean for each k (ascending k; JSON keys are the k as strings).
    pub pass_at_k: BTreeMap<u64, f64>,
    /// Per-problem counts and pass@k, by problem id (sorted).
    pub per_problem: BTreeMap<String, ProblemPassAtK>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProblemPassAtK {
    pub n: u64,
    pub c: u64,
    pub pass_at_k: BTreeMap<u64, f64>,
}

/// Why pass@k could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum PassAtKError {
    #[error("k must be a positive integer, got {0:?}")]
    BadK(String),
    #[error("pass@{k} is undefined: problem {problem_id:?} has only n={n} samples (need n >= k)")]
    KExceedsN { k: u64, problem_id: String, n: u64 },
    #[error("no problems to score")]
    Empty,
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, line {line}: {msg}")]
    BadLine { path: PathBuf, line: usize, msg: String },
}

/// Parse a `--k` list such as `1,2,4,256`. Rejects empty items, zero and non-integers.
pub fn parse_k_list(s: &str) -> Result<Vec<u64>, PassAtKError> {
    let mut ks: Vec<u64> = s
        .split(',')
        .map(|t| match t.trim().parse::<u64>() {
            Ok(k) if k > 0 => Ok(k),
            _ => Err(PassAtKError::BadK(t.trim().to_string())),
        })
        .collect::<Result<_, _>>()?;
    ks.sort_unstable();
    ks.dedup();
    Ok(ks)
}

/// Score every problem for every k. Errors if some `k` exceeds some problem's `n`.
pub fn report(counts: &BTreeMap<String, Counts>, ks: &[u64]) -> Result<PassAtKReport, PassAtKError> {
    if counts.is_empty() {
        return Err(PassAtKError::Empty);
    }
    let mut ks = ks.to_vec();
    ks.sort_unstable();
    ks.dedup();
    let mut sums = vec![0.0f64; ks.len()];
    let mut per_problem = BTreeMap::new();
    for (id, cnt) in counts {
        let mut values = BTreeMap::new();
        for (j, &k) in ks.iter().enumerate() {
            let v = pass_at_k(cnt.n, cnt.c, k).ok_or_else(|| PassAtKError::KExceedsN {
                k,
                problem_id: id.clone(),
                n: cnt.n,
            })?;
            sums[j] += v;
            values.insert(k, v);
        }
        per_problem.insert(id.clone(), ProblemPassAtK { n: cnt.n, c: cnt.c, pass_at_k: values });
    }
    let p = counts.len() as f64;
    let pass_at_k = ks.iter().zip(sums).map(|(&k, s)| (k, s / p)).collect();
    Ok(PassAtKReport { n_problems: counts.len(), pass_at_k, per_problem })
}

/// One line of a pass@k input file: either counts or a list of per-sample verdicts. Other fields
/// are ignored, so `verify` output (which keeps its input fields) can be scored directly.
#[derive(Deserialize)]
struct Line {
    problem_id: serde_json::Value,
    n: Option<u64>,
    c: Option<u64>,
    correct: Option<CorrectField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CorrectField {
    Many(Vec<bool>),
    One(bool),
}

/// Read a JSONL file whose lines are `{"problem_id": .., "n": N, "c": C}`,
/// `{"problem_id": .., "correct": [true, false, ..]}` or `{"problem_id": .., "correct": true}`.
/// Lines with the same `problem_id` are merged (their n and c add up), so a file of one line per
/// sample works too.
pub fn read_counts(path: &Path) -> Result<BTreeMap<String, Counts>, PassAtKError> {
    let text = std::fs::read_to_string(path).map_err(|source| PassAtKError::Io { path: path.into(), source })?;
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |msg: String| PassAtKError::BadLine { path: path.into(), line, msg };
        if raw.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(raw).map_err(|e| bad(format!("{e}")))?;
        let id = match l.problem_id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(bad(format!("problem_id must be a string or number, got {other}"))),
        };
        let (n, c) = match (l.n, l.c, l.correct) {
            (Some(n), Some(c), None) if c <= n => (n, c),
            (Some(n), Some(c), None) => return Err(bad(format!("c={c} exceeds n={n}"))),
            (None, None, Some(CorrectField::Many(v))) => (v.len() as u64, v.iter().filter(|&&b| b).count() as u64),
            (None, None, Some(CorrectField::One(b))) => (1, b as u64),
            _ => return Err(bad("expected either \"n\" and \"c\", or \"correct\"".into())),
        };
        let e = counts.entry(id).or_insert(Counts { n: 0, c: 0 });
        e.n += n;
        e.c += c;
    }
    Ok(counts)
}
