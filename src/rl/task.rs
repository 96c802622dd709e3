//! What a run trains on: a [`Task`] gives the training prompts, the held-out sets, the tokenizer
//! rules (stop and pad ids, decoding) and the reward. The MATH datasets are one task
//! ([`MathTask`]); the embedded mini task plugs in the same way.

use super::{Result, RlError};
use crate::data::{self, DataRoots, Dataset, Problem};
use crate::eval::verify::{verify, Mode, Tolerance};
use crate::prompt::{QwenTokenizer, Template};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One prompt of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskItem {
    /// Stable id (`dataset/…`), also the rollout group.
    pub id: String,
    /// Seeds the item's sampling streams (independent of its position in the file).
    pub seed_id: u64,
    pub prompt_ids: Vec<i64>,
    pub gold: String,
}

/// A trainable, verifiable task.
pub trait Task {
    /// The items RL samples prompts from, in a fixed order.
    fn train_items(&self) -> &[TaskItem];
    /// Held-out sets by name (validation during training).
    fn eval_sets(&self) -> &[(String, Vec<TaskItem>)];
    /// Outcome reward of a response (generated token ids): 1 correct, 0 otherwise.
    fn reward(&self, item: &TaskItem, response: &[i64]) -> Result<f32>;
    /// Token ids that end a response.
    fn stop_ids(&self) -> Vec<i64>;
    /// A valid id for padding (never attended).
    fn pad_id(&self) -> i64;
    /// The response as text (special tokens removed).
    fn decode(&self, ids: &[i64]) -> Result<String>;
    /// A sha256 over everything that determines the task's prompts and rewards (the run's
    /// settings record it, so a resume on edited data is refused).
    fn fingerprint(&self) -> String;
    /// Task-specific per-step metrics of a rollout batch (e.g. the mini task's strategy shares).
    fn rollout_metrics(&self, _rollouts: &[super::Rollout]) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// The class of response position `t` for per-class entropy logging (e.g. "strategy" for
    /// the mini task's first token), or `None` when the task does not split positions.
    fn position_class(&self, _response: &[i64], _t: usize) -> Option<&'static str> {
        None
    }
}

/// The `[task]` section for `kind = "math"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathTaskConfig {
    /// Training problems (the paper: `math-train`, 7,500 problems).
    #[serde(default = "d_train")]
    pub dataset: Dataset,
    /// Use only the first N training problems.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Held-out sets evaluated every `eval.every` steps (the paper: MATH test, AIME25, AMC23).
    #[serde(default)]
    pub eval_datasets: Vec<Dataset>,
    /// Use only the first N problems of each held-out set.
    #[serde(default)]
    pub eval_limit: Option<usize>,
    pub template: Template,
    /// Prompts longer than this (tokens) are left out, as verl's `filter_overlong_prompts`
    /// (paper: 1,024).
    #[serde(default = "d_max_prompt")]
    pub max_prompt_tokens: usize,
    /// Reward extraction: strict (the last `\boxed{}`, as the reference reward) or lenient.
    #[serde(default = "d_mode")]
    pub verifier_mode: Mode,
    /// Reward equivalence: `paper` (the reference's `math_equal`) or `math-verify`.
    #[serde(default = "d_tol")]
    pub tolerance: Tolerance,
    /// tokenizer.json (default: the model folder's, else the project's Qwen tokenizer).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Dataset folders (default: the project's; see README "Data").
    #[serde(default)]
    pub math_dir: Option<PathBuf>,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

fn d_train() -> Dataset {
    Dataset::MathTrain
}
fn d_max_prompt() -> usize {
    1024
}
fn d_mode() -> Mode {
    Mode::Strict
}
fn d_tol() -> Tolerance {
    Tolerance::Paper
}

/// MATH-style problems with a `\boxed{}` answer, scored by the verifier.
pub struct MathTask {
    cfg: MathTaskConfig,
    tok: QwenTokenizer,
    train: Vec<TaskItem>,
    evals: Vec<(String, Vec<TaskItem>)>,
    stop: Vec<i64>,
    fingerprint: String,
}

fn items(
    ds: Dataset,
    problems: &[Problem],
    template: Template,
    tok: &QwenTokenizer,
    max_tokens: usize,
) -> Result<(Vec<TaskItem>, usize)> {
    let prompts: Vec<String> = problems.iter().map(|p| template.render(&p.problem)).collect();
    let enc = tok.encode_batch(&prompts)?;
    let mut out = vec![];
    let mut dropped = 0;
    for (p, ids) in problems.iter().zip(enc) {
        if ids.len() > max_tokens {
            dropped += 1;
            continue;
        }
        out.push(TaskItem {
            id: p.id.clone(),
            seed_id: crate::sample::problem_seed_id(ds.name(), &p.id),
            prompt_ids: ids.into_iter().map(i64::from).collect(),
            gold: p.answer.clone(),
        });
    }
    Ok((out, dropped))
}

impl MathTask {
    /// Loads the datasets and tokenizes every prompt. `model_dir`: where to look for a
    /// tokenizer.json first; `model_eos`: the model's own eos ids (added to the stop ids).
    pub fn new(cfg: &MathTaskConfig, model_dir: &Path, model_eos: &[i64]) -> Result<MathTask> {
        let tok_path = match &cfg.tokenizer {
            Some(p) => p.clone(),
            None if model_dir.join("tokenizer.json").is_file() => model_dir.join("tokenizer.json"),
            None => crate::paths::tokenizer_path(None),
        };
        let tok = QwenTokenizer::from_file(&tok_path)?;
        let roots = DataRoots::resolve(cfg.math_dir.as_deref(), cfg.data_dir.as_deref());
        let load = |ds: Dataset, limit: Option<usize>| -> Result<Vec<Problem>> {
            let mut p = data::load(ds, &roots)?;
            if let Some(n) = limit {
                p.truncate(n);
            }
            Ok(p)
        };
        let train_problems = load(cfg.dataset, cfg.limit)?;
        let (train, dropped) = items(cfg.dataset, &train_problems, cfg.template, &tok, cfg.max_prompt_tokens)?;
        if dropped > 0 {
            tracing::warn!("{dropped} training prompts longer than {} tokens left out", cfg.max_prompt_tokens);
        }
        if train.is_empty() {
            return Err(RlError::Config(format!("no training prompts of {} fit max_prompt_tokens", cfg.dataset)));
        }
        let mut selection: Vec<Problem> = train_problems;
        let mut evals = vec![];
        for &ds in &cfg.eval_datasets {
            let p = load(ds, cfg.eval_limit)?;
            let (it, _) = items(ds, &p, cfg.template, &tok, usize::MAX)?;
            evals.push((ds.name().to_string(), it));
            selection.extend(p);
        }
        let tok_sha = crate::fingerprint::digest_file(&tok_path)?.sha256;
        let sel = crate::sample::selection_sha256(&selection, cfg.template);
        let cfg_json =
            serde_json::to_string(&(cfg.verifier_mode, cfg.tolerance, cfg.max_prompt_tokens)).unwrap_or_default();
        let fingerprint = crate::rundir::sha256_hex(format!("math\n{sel}\n{tok_sha}\n{cfg_json}").as_bytes());
        let stop = crate::sample::stop_ids(&tok, model_eos, false);
        Ok(MathTask { cfg: cfg.clone(), tok, train, evals, stop, fingerprint })
    }
}

impl Task for MathTask {
    fn train_items(&self) -> &[TaskItem] {
        &self.train
    }
    fn eval_sets(&self) -> &[(String, Vec<TaskItem>)] {
        &self.evals
    }
    fn reward(&self, item: &TaskItem, response: &[i64]) -> Result<f32> {
        let text = self.decode(response)?;
        Ok(verify(&item.gold, &text, self.cfg.verifier_mode, self.cfg.tolerance).correct as u8 as f32)
    }
    fn stop_ids(&self) -> Vec<i64> {
        self.stop.clone()
    }
    fn pad_id(&self) -> i64 {
        crate::sample::pad_id(&self.tok)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
        Ok(self.tok.decode(&ids, true)?)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// The embedded mini task ([`crate::mini`]): generated problems, the model folder's own
/// tokenizer, the verifier (strict: the last `\boxed{}`) as the reward.
pub struct MiniTask {
    data: crate::mini::MiniData,
    tok: QwenTokenizer,
    train: Vec<TaskItem>,
    evals: Vec<(String, Vec<TaskItem>)>,
    /// Kind of every item by id (for the per-kind strategy shares).
    kinds: std::collections::HashMap<String, crate::mini::Kind>,
    fingerprint: String,
}

fn mini_items(
    data: &crate::mini::MiniData,
    items: &[crate::mini::Item],
    tok: &QwenTokenizer,
    split: &str,
) -> Result<Vec<TaskItem>> {
    let prompts: Vec<String> = items.iter().map(|i| i.problem.prompt()).collect();
    let enc = tok.encode_batch(&prompts)?;
    Ok(items
        .iter()
        .zip(enc)
        .map(|(it, ids)| TaskItem {
            id: format!("mini-{}/{split}/{}", data.cfg.design.name(), it.problem.id()),
            seed_id: crate::sample::problem_seed_id(&format!("mini-{}", data.cfg.design.name()), &it.problem.id()),
            prompt_ids: ids.into_iter().map(i64::from).collect(),
            gold: it.gold.clone(),
        })
        .collect())
}

impl MiniTask {
    /// Generates the task's data and tokenizes it with `tokenizer` (the model folder's).
    pub fn new(cfg: &crate::mini::MiniConfig, tokenizer: &Path) -> Result<MiniTask> {
        let data = crate::mini::MiniData::generate(cfg);
        let tok = QwenTokenizer::from_file(tokenizer)?;
        let train = mini_items(&data, &data.rl_pool, &tok, "train")?;
        let mut kinds: std::collections::HashMap<String, crate::mini::Kind> =
            train.iter().zip(&data.rl_pool).map(|(t, i)| (t.id.clone(), i.kind)).collect();
        let mut evals = vec![];
        for (tier, items) in &data.tiers {
            let it = mini_items(&data, items, &tok, tier.name())?;
            kinds.extend(it.iter().zip(items).map(|(t, i)| (t.id.clone(), i.kind)));
            evals.push((tier.name().to_string(), it));
        }
        let tok_sha = crate::fingerprint::digest_file(tokenizer)?.sha256;
        let cfg_json = serde_json::to_string(cfg).unwrap_or_default();
        let fingerprint = crate::rundir::sha256_hex(format!("mini\n{cfg_json}\n{tok_sha}").as_bytes());
        Ok(MiniTask { data, tok, train, evals, kinds, fingerprint })
    }

    pub fn data(&self) -> &crate::mini::MiniData {
        &self.data
    }
}

impl Task for MiniTask {
    fn train_items(&self) -> &[TaskItem] {
        &self.train
    }
    fn eval_sets(&self) -> &[(String, Vec<TaskItem>)] {
        &self.evals
    }
    fn reward(&self, item: &TaskItem, response: &[i64]) -> Result<f32> {
        let text = self.decode(response)?;
        Ok(verify(&item.gold, &text, Mode::Strict, Tolerance::MathVerify).correct as u8 as f32)
    }
    fn stop_ids(&self) -> Vec<i64> {
        crate::sample::stop_ids(&self.tok, &[], false)
    }
    fn pad_id(&self) -> i64 {
        crate::sample::pad_id(&self.tok)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
        Ok(self.tok.decode(&ids, true)?)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    /// The share of rollouts taking strategy 2 (`$`, or design B's slow chain), overall and on
    /// the prompts where each heuristic is right.
    fn rollout_metrics(&self, rollouts: &[super::Rollout]) -> BTreeMap<String, f64> {
        use crate::mini::{strategy_of, Kind};
        let design = self.data.cfg.design;
        let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in rollouts {
            let text = self.decode(&r.response_ids).unwrap_or_default();
            let s2 = (strategy_of(design, &text) == 2) as usize;
            let kind = match self.kinds.get(&r.group) {
                Some(Kind::Easy) => "s2_share_easy",
                Some(Kind::Hard) => "s2_share_hard",
                None => "s2_share_unknown",
            };
            for key in ["s2_share", kind] {
                let c = counts.entry(key).or_default();
                c.0 += s2;
                c.1 += 1;
            }
        }
        counts.into_iter().map(|(k, (s, n))| (k.to_string(), s as f64 / n.max(1) as f64)).collect()
    }
    fn position_class(&self, _response: &[i64], t: usize) -> Option<&'static str> {
        Some(if t == 0 { "strategy" } else { "answer" })
    }
}
