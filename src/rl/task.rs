//! What a run trains on: a [`Task`] gives the training prompts, the held-out sets, the tokenizer
//! rules (stop and pad ids, decoding) and the reward. The MATH datasets are one task
//! ([`MathTask`]); the embedded mini task plugs in the same way.

use super::{Result, RlError};
use crate::data::{self, DataRoots, Dataset, Problem};
use crate::eval::verify::{verify, Mode, Tolerance};
use crate::prompt::{QwenTokenizer, Template};
use serde::{Deserialize, Serialize};
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
