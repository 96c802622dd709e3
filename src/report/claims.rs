//! The paper's claims as checks over a run's results (`paper/claims.toml`,
//! `rlvr-decomp claims --run results/<run>`).
//!
//! A claim compares two quantities of the run — pass@k of a method on a tier, or the held-out
//! entropy / accuracy / training-batch correct ratio at the end of its training — per seed, and
//! passes when the comparison holds on the **mean over seeds**; how many seeds it holds on and
//! each side's seed-to-seed spread are reported beside it. A claim whose inputs are missing is
//! `not-run`, never `pass`. Nothing is tuned here: thresholds live in the claims file, with the
//! statement they test, and a failed claim is reported as failed.
//!
//! Comparison semantics, with `d = lhs − rhs` and the tolerance `tol` (the claim's `tolerance`,
//! raised to the larger side's seed spread when `noise = true`):
//!
//! | op | holds when | reads |
//! |---|---|---|
//! | `>`  | `d > tol`   | lhs is higher by more than the tolerance |
//! | `>=` | `d >= −tol` | lhs is not lower by more than the tolerance (higher or tied) |
//! | `<`  | `d < −tol`  | lhs is lower by more than the tolerance |
//! | `<=` | `d <= tol`  | lhs is not higher by more than the tolerance |
//! | `within` | `|d| <= tol` | the two are within the tolerance |
//!
//! A claim over several tiers holds when it holds on every one of them.

use super::{io_err, ReportError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a claim is, for the reader of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A claim of the paper.
    #[default]
    Claim,
    /// A sceptical reading of the paper's results (a reviewer's alternative).
    Sceptic,
    /// An experiment reported, not asserted (e.g. claim (b) on design H, the ablations).
    Experiment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "within")]
    Within,
}

impl Op {
    fn holds(self, d: f64, tol: f64) -> bool {
        match self {
            Op::Gt => d > tol,
            Op::Ge => d >= -tol,
            Op::Lt => d < -tol,
            Op::Le => d <= tol,
            Op::Within => d.abs() <= tol,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Within => "≈",
        }
    }
}

/// Which number of a (method, seed) a quantity reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Unbiased pass@k on a tier (`eval/<method>/seed<S>/passk.json`; needs `k`).
    PassAtK,
    /// Held-out mean token entropy on a tier at the last evaluation of training
    /// (`rl/<method>/seed<S>/eval_metrics.jsonl`); for `base`, the evaluation before training.
    FinalEntropy,
    /// Held-out accuracy on a tier at the last evaluation of training (base: before training).
    FinalAccuracy,
    /// Share of correct rollouts per training batch, mean over the last 10% of steps
    /// (`rl/<method>/seed<S>/metrics.jsonl`; no tier).
    FinalCorrectRatio,
}

impl Metric {
    /// Whether the metric is read per tier.
    fn tiered(self) -> bool {
        self != Metric::FinalCorrectRatio
    }
}

/// One or several methods; several are combined per seed by `agg`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Methods {
    One(String),
    Many(Vec<String>),
}

impl Methods {
    fn list(&self) -> Vec<String> {
        match self {
            Methods::One(m) => vec![m.clone()],
            Methods::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agg {
    Max,
    Min,
    Mean,
}

/// One side of a comparison: a number measured on the run, or a fixed value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Value { value: f64 },
    Measured(Measured),
}

/// A number measured on the run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub metric: Metric,
    pub method: Methods,
    /// How several methods combine per seed (required when `method` is a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg: Option<Agg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u64>,
    /// The sub-run `experiments/<name>/` of the run, instead of the run itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
}

/// One claim of `paper/claims.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    pub id: String,
    pub statement: String,
    #[serde(default)]
    pub role: Role,
    /// The tiers the comparison is made on (every one must hold). Ignored by tier-less metrics.
    #[serde(default)]
    pub tiers: Vec<String>,
    pub lhs: Quantity,
    pub op: Op,
    pub rhs: Quantity,
    #[serde(default)]
    pub tolerance: f64,
    /// Raise the tolerance to the seed-to-seed spread (max − min over seeds) of either side.
    #[serde(default)]
    pub noise: bool,
    /// Where the claim comes from / why this threshold (shown in `claims.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsFile {
    claim: Vec<ClaimSpec>,
}

/// Reads and checks a claims file: unique ids, `k` with pass@k, `agg` with several methods.
pub fn load_claims(path: &Path) -> Result<Vec<ClaimSpec>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |msg: String| ReportError::BadFile { path: path.to_path_buf(), msg };
    let file: ClaimsFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut ids = std::collections::HashSet::new();
    for c in &file.claim {
        if !ids.insert(c.id.as_str()) {
            return Err(bad(format!("claim id {:?} appears twice", c.id)));
        }
        for (side, q) in [("lhs", &c.lhs), ("rhs", &c.rhs)] {
            let Quantity::Measured(q) = q else { continue };
            if (q.metric == Metric::PassAtK) != q.k.is_some() {
                return Err(bad(format!("claim {:?}: {side}: `k` goes with metric pass-at-k, and only with it", c.id)));
            }
            if matches!(q.method, Methods::Many(_)) && q.agg.is_none() {
                return Err(bad(format!("claim {:?}: {side}: several methods need `agg` (max, min, mean)", c.id)));
            }
            if q.metric.tiered() && c.tiers.is_empty() {
                return Err(bad(format!("claim {:?}: `tiers` is empty", c.id)));
            }
        }
        if c.tolerance < 0.0 || !c.tolerance.is_finite() {
            return Err(bad(format!("claim {:?}: tolerance must be ≥ 0", c.id)));
        }
    }
    Ok(file.claim)
}

/// The numbers of one run folder (or experiment sub-run) that claims read, loaded on demand.
struct RunNumbers {
    dir: PathBuf,
    /// (method, seed, tier) → pass@k curve.
    pass: BTreeMap<(String, u64, String), BTreeMap<u64, f64>>,
    /// (method, seed) → eval_metrics rows / metrics rows.
    evals: BTreeMap<(String, u64), Vec<serde_json::Value>>,
    steps: BTreeMap<(String, u64), Vec<serde_json::Value>>,
}

impl RunNumbers {
    fn load(dir: &Path) -> Result<Self> {
        let mut pass = BTreeMap::new();
        for r in super::pass_rows(dir)? {
            pass.entry((r.method, r.seed, r.tier)).or_insert_with(BTreeMap::new).insert(r.k, r.pass_at_k);
        }
        let (mut evals, mut steps) = (BTreeMap::new(), BTreeMap::new());
        for t in super::collect_training(dir)? {
            evals.insert((t.method.clone(), t.seed), t.evals);
            steps.insert((t.method, t.seed), t.steps);
        }
        Ok(RunNumbers { dir: dir.to_path_buf(), pass, evals, steps })
    }

    /// Seeds for which `method` has numbers of `metric`.
    fn seeds(&self, method: &str, metric: Metric) -> Vec<u64> {
        let mut s: Vec<u64> = match metric {
            Metric::PassAtK => self.pass.keys().filter(|(m, _, _)| m == method).map(|k| k.1).collect(),
            // The base's held-out numbers are the step-0 evaluation of any run of that seed.
            Metric::FinalEntropy | Metric::FinalAccuracy if method == "base" => {
                self.evals.keys().map(|k| k.1).collect()
            }
            Metric::FinalEntropy | Metric::FinalAccuracy => {
                self.evals.keys().filter(|(m, _)| m == method).map(|k| k.1).collect()
            }
            Metric::FinalCorrectRatio => self.steps.keys().filter(|(m, _)| m == method).map(|k| k.1).collect(),
        };
        s.sort_unstable();
        s.dedup();
        s
    }

    fn value(&self, method: &str, seed: u64, metric: Metric, tier: &str, k: Option<u64>) -> Option<f64> {
        let eval_at = |rows: &[serde_json::Value], field: &str, last: bool| -> Option<f64> {
            let on_tier = rows.iter().filter(|e| e.get("dataset").and_then(|d| d.as_str()) == Some(tier));
            let row = if last {
                on_tier.max_by_key(|e| e.get("step").and_then(|s| s.as_u64()).unwrap_or(0))
            } else {
                on_tier.filter(|e| e.get("step").and_then(|s| s.as_u64()) == Some(0)).last()
            }?;
            row.get(field)?.as_f64()
        };
        match metric {
            Metric::PassAtK => self.pass.get(&(method.to_string(), seed, tier.to_string()))?.get(&k?).copied(),
            Metric::FinalEntropy | Metric::FinalAccuracy => {
                let field = if metric == Metric::FinalEntropy { "entropy" } else { "accuracy" };
                if method == "base" {
                    self.evals.iter().filter(|((_, s), _)| *s == seed).find_map(|(_, rows)| eval_at(rows, field, false))
                } else {
                    eval_at(self.evals.get(&(method.to_string(), seed))?, field, true)
                }
            }
            Metric::FinalCorrectRatio => {
                let rows = self.steps.get(&(method.to_string(), seed))?;
                let vals: Vec<f64> =
                    rows.iter().filter_map(|r| r.get("correct_ratio").and_then(|v| v.as_f64())).collect();
                let tail = (vals.len() / 10).max(1);
                (!vals.is_empty()).then(|| vals[vals.len() - tail..].iter().sum::<f64>() / tail as f64)
            }
        }
    }
}

/// One side of one comparison: per-seed values and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub label: String,
    pub per_seed: BTreeMap<u64, f64>,
    pub mean: f64,
    /// max − min over seeds (0 with one seed).
    pub spread: f64,
}

/// One tier's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub tier: Option<String>,
    pub lhs: Side,
    pub rhs: Side,
    pub tolerance: f64,
    pub holds: bool,
    /// Seeds on which the comparison holds, of the seeds both sides have.
    pub seeds_holding: usize,
    pub seeds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Fail,
    NotRun,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotRun => "NOT-RUN",
        }
    }
}

/// A checked claim (one element of `claims.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ClaimResult {
    pub id: String,
    pub statement: String,
    pub role: Role,
    pub status: Status,
    pub numbers: ClaimNumbers,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimNumbers {
    pub op: Op,
    pub comparisons: Vec<Comparison>,
    /// Why the claim could not be checked (`not-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn side_label(q: &Measured, tier: Option<&str>) -> String {
    let metric = match q.metric {
        Metric::PassAtK => format!("pass@{}", q.k.unwrap_or(0)),
        Metric::FinalEntropy => "entropy".into(),
        Metric::FinalAccuracy => "accuracy".into(),
        Metric::FinalCorrectRatio => "correct ratio (last 10%)".into(),
    };
    let methods = match (&q.method, q.agg) {
        (Methods::One(m), _) => m.clone(),
        (Methods::Many(v), Some(a)) => format!("{:?}({})", a, v.join(",")).to_lowercase(),
        (Methods::Many(v), None) => v.join(","),
    };
    let exp = q.experiment.as_deref().map(|e| format!("[{e}] ")).unwrap_or_default();
    match tier {
        Some(t) => format!("{exp}{methods} {metric} on {t}"),
        None => format!("{exp}{methods} {metric}"),
    }
}

/// Loads every experiment a claim set touches, once.
struct Numbers {
    run: PathBuf,
    runs: BTreeMap<Option<String>, Option<RunNumbers>>,
}

impl Numbers {
    fn get(&mut self, exp: &Option<String>) -> Result<Option<&RunNumbers>> {
        if !self.runs.contains_key(exp) {
            let dir = match exp {
                Some(e) => self.run.join("experiments").join(e),
                None => self.run.clone(),
            };
            let loaded = if dir.is_dir() { Some(RunNumbers::load(&dir)?) } else { None };
            self.runs.insert(exp.clone(), loaded);
        }
        Ok(self.runs[exp].as_ref())
    }
}

/// Per-seed values of one side on one tier, or what is missing.
fn side(nums: &mut Numbers, q: &Quantity, tier: Option<&str>) -> Result<std::result::Result<Side, String>> {
    let q = match q {
        Quantity::Value { value } => {
            return Ok(Ok(Side { label: format!("{value}"), per_seed: BTreeMap::new(), mean: *value, spread: 0.0 }))
        }
        Quantity::Measured(q) => q,
    };
    let run = nums.run.clone();
    let Some(rn) = nums.get(&q.experiment)? else {
        let dir = q.experiment.as_deref().map(|e| format!("experiments/{e}/")).unwrap_or_default();
        return Ok(Err(format!("{dir} has not run")));
    };
    let methods = q.method.list();
    // Seeds that every method of the side has.
    let mut seeds: Option<Vec<u64>> = None;
    for m in &methods {
        let s = rn.seeds(m, q.metric);
        seeds = Some(match seeds {
            None => s,
            Some(prev) => prev.into_iter().filter(|x| s.contains(x)).collect(),
        });
    }
    let seeds = seeds.unwrap_or_default();
    let t = tier.unwrap_or("");
    let mut per_seed = BTreeMap::new();
    for seed in seeds {
        let vals: Option<Vec<f64>> = methods.iter().map(|m| rn.value(m, seed, q.metric, t, q.k)).collect();
        let Some(vals) = vals else { continue };
        let v = match q.agg {
            None | Some(Agg::Mean) => vals.iter().sum::<f64>() / vals.len() as f64,
            Some(Agg::Max) => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Some(Agg::Min) => vals.iter().copied().fold(f64::INFINITY, f64::min),
        };
        per_seed.insert(seed, v);
    }
    if per_seed.is_empty() {
        // Relative to the run, so that the message (and claims.json) does not depend on where it is.
        let dir = rn.dir.strip_prefix(&run).unwrap_or(&rn.dir);
        return Ok(Err(format!("no numbers for {} in {}/", side_label(q, tier), dir.display())));
    }
    let mean = per_seed.values().sum::<f64>() / per_seed.len() as f64;
    let lo = per_seed.values().copied().fold(f64::INFINITY, f64::min);
    let hi = per_seed.values().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(Ok(Side { label: side_label(q, tier), per_seed, mean, spread: hi - lo }))
}

/// Checks every claim against `run`.
pub fn check(run: &Path, claims: &[ClaimSpec]) -> Result<Vec<ClaimResult>> {
    let mut nums = Numbers { run: run.to_path_buf(), runs: BTreeMap::new() };
    let mut out = vec![];
    for c in claims {
        let tiered = [&c.lhs, &c.rhs].iter().any(|q| matches!(q, Quantity::Measured(m) if m.metric.tiered()));
        let tiers: Vec<Option<&str>> =
            if tiered { c.tiers.iter().map(|t| Some(t.as_str())).collect() } else { vec![None] };
        let mut comparisons = vec![];
        let mut missing = None;
        for tier in tiers {
            let (l, r) = match (side(&mut nums, &c.lhs, tier)?, side(&mut nums, &c.rhs, tier)?) {
                (Ok(l), Ok(r)) => (l, r),
                (Err(e), _) | (_, Err(e)) => {
                    missing = Some(e);
                    break;
                }
            };
            let tol = if c.noise { c.tolerance.max(l.spread).max(r.spread) } else { c.tolerance };
            let holds = c.op.holds(l.mean - r.mean, tol);
            // A fixed value stands for every seed.
            let at = |x: &Side, s: u64| if x.per_seed.is_empty() { Some(x.mean) } else { x.per_seed.get(&s).copied() };
            let mut all: Vec<u64> = l.per_seed.keys().chain(r.per_seed.keys()).copied().collect();
            all.sort_unstable();
            all.dedup();
            let common: Vec<(f64, f64)> = all.iter().filter_map(|&s| Some((at(&l, s)?, at(&r, s)?))).collect();
            let seeds_holding = common.iter().filter(|(a, b)| c.op.holds(a - b, tol)).count();
            comparisons.push(Comparison {
                tier: tier.map(str::to_string),
                lhs: l,
                rhs: r,
                tolerance: tol,
                holds,
                seeds_holding,
                seeds: common.len(),
            });
        }
        let status = if missing.is_some() {
            Status::NotRun
        } else if comparisons.iter().all(|x| x.holds) {
            Status::Pass
        } else {
            Status::Fail
        };
        out.push(ClaimResult {
            id: c.id.clone(),
            statement: c.statement.clone(),
            role: c.role,
            status,
            numbers: ClaimNumbers { op: c.op, comparisons, missing, note: c.note.clone() },
        });
    }
    Ok(out)
}

fn fmt_side(s: &Side) -> String {
    if s.per_seed.is_empty() {
        return s.label.clone();
    }
    if s.per_seed.len() > 1 {
        let vals: Vec<String> = s.per_seed.values().map(|v| format!("{v:.3}")).collect();
        format!("{}: {:.3} (seeds {})", s.label, s.mean, vals.join("/"))
    } else {
        format!("{}: {:.3}", s.label, s.mean)
    }
}

/// The claims table as text: one block per claim, PASS / FAIL / NOT-RUN with its numbers.
pub fn render(results: &[ClaimResult]) -> String {
    let mut s = String::new();
    for role in [Role::Claim, Role::Sceptic, Role::Experiment] {
        let rows: Vec<&ClaimResult> = results.iter().filter(|r| r.role == role).collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(match role {
            Role::Claim => "The paper's claims\n",
            Role::Sceptic => "Sceptical readings (PASS = the sceptic's reading holds here)\n",
            Role::Experiment => "Experiments (reported, not asserted)\n",
        });
        for r in rows {
            s.push_str(&format!("  {:<8} {:<34} {}\n", r.status.label(), r.id, r.statement));
            if let Some(m) = &r.numbers.missing {
                s.push_str(&format!("           not run: {m}\n"));
            }
            for c in &r.numbers.comparisons {
                let seeds = if c.seeds > 1 {
                    format!(", holds on {}/{} seeds", c.seeds_holding, c.seeds)
                } else {
                    String::new()
                };
                s.push_str(&format!(
                    "           {} {} {} {}  [tol {:.3}{}]\n",
                    if c.holds { "✓" } else { "✗" },
                    fmt_side(&c.lhs),
                    r.numbers.op.symbol(),
                    fmt_side(&c.rhs),
                    c.tolerance,
                    seeds
                ));
            }
        }
        s.push('\n');
    }
    let count = |st: Status| results.iter().filter(|r| r.status == st).count();
    s.push_str(&format!(
        "{} pass, {} fail, {} not run\n",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::NotRun)
    ));
    s
}

/// Checks the claims file against the run and writes `report/claims.json` and `report/claims.md`.
pub fn run(run: &Path, claims_file: &Path) -> Result<(Vec<ClaimResult>, Vec<PathBuf>)> {
    let claims = load_claims(claims_file)?;
    let results = check(run, &claims)?;
    let out = run.join("report");
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let json_path = out.join("claims.json");
    let json = serde_json::to_vec_pretty(&results).expect("serializable");
    crate::durable::write(&json_path, &json).map_err(io_err(&json_path))?;
    let md_path = out.join("claims.md");
    let md = format!(
        "# Claims checked on {}\n\nFrom `{}`; regenerate with `rlvr-decomp claims --run {}`.\n\n```text\n{}```\n",
        run.display(),
        claims_file.display(),
        run.display(),
        render(&results)
    );
    crate::durable::write(&md_path, md.as_bytes()).map_err(io_err(&md_path))?;
    Ok((results, vec![json_path, md_path]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_read_as_documented() {
        assert!(Op::Gt.holds(0.2, 0.1) && !Op::Gt.holds(0.1, 0.1));
        assert!(Op::Ge.holds(-0.05, 0.1) && !Op::Ge.holds(-0.2, 0.1));
        assert!(Op::Lt.holds(-0.2, 0.1) && !Op::Lt.holds(-0.05, 0.1));
        assert!(Op::Le.holds(0.05, 0.1) && !Op::Le.holds(0.2, 0.1));
        assert!(Op::Within.holds(-0.1, 0.1) && !Op::Within.holds(0.11, 0.1));
    }
}
