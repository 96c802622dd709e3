//! The experiment config: one TOML file per run, every key documented, unknown keys refused,
//! any key overridable from the command line (`--set section.key=value`); the resolved config is
//! saved in the run folder (`config.toml`).
//!
//! ```toml
//! [model]      path, config, device, dtype, threads
//! [task]       kind = "math", dataset, template, eval_datasets, …   (see `task::MathTaskConfig`)
//! [rollout]    prompts_per_step, n, temperature, top_p, top_k, max_new_tokens, batch
//! [objective]  kind, lambda, clip_eps, entropy_coef, kl_coef, loss_norm
//! [optim]      lr, beta1, beta2, eps, weight_decay, grad_clip
//! [critic]     lr, value_clip, gamma, lam                             (PPO only)
//! [train]      steps, seed, mini_batches, micro_batch, shuffle
//! [eval]       every, before_train, n, temperature, top_p, top_k, max_new_tokens, batch
//! [checkpoint] every, keep
//! ```

use super::objective::ObjectiveConfig;
use super::optim::OptimConfig;
use super::task::MathTaskConfig;
use super::update::CriticConfig;
use super::{io_err, Result, RlError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub task: TaskSection,
    #[serde(default)]
    pub rollout: RolloutSection,
    pub objective: ObjectiveConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default)]
    pub critic: CriticConfig,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
}

/// `[model]`: the base policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF-layout model folder (config.json + safetensors): the initial policy (and PPO's critic
    /// body, and the reference policy of GRPO/PPO).
    pub path: PathBuf,
    /// A config.json to plan memory with (`--dry-run`) when `path` is not on this machine yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// cpu | cuda | cuda:N.
    #[serde(default = "d_device")]
    pub device: String,
    /// Compute dtype of the policy: f32, or bf16 (f32 master weights and optimizer state).
    #[serde(default = "d_dtype")]
    pub dtype: String,
    /// Intra-op threads (0 = libtorch's default). Part of the settings: float results can depend on it.
    #[serde(default)]
    pub threads: usize,
}

fn d_device() -> String {
    "cpu".into()
}
fn d_dtype() -> String {
    "f32".into()
}

/// `[task]`: what is trained on, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskSection {
    /// MATH-style datasets with `\boxed{}` answers (see [`MathTaskConfig`]).
    Math(MathTaskConfig),
    /// The embedded mini task (see [`crate::mini::MiniConfig`]); the tokenizer is the model folder's.
    Mini(crate::mini::MiniConfig),
}

/// `[rollout]`: sampling the training batch from the current policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Prompts per training step (paper 1,024).
    #[serde(default = "d_pps")]
    pub prompts_per_step: usize,
    /// Samples per prompt (paper 8).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Sampling temperature (paper 1.0), top-p (1.0 = off), top-k (0 = off).
    #[serde(default = "d_one")]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default)]
    pub top_k: usize,
    /// Response length limit (paper 3,072 for Qwen2.5-Math-7B, 31,744 for Qwen3-4B).
    #[serde(default = "d_resp")]
    pub max_new_tokens: usize,
    /// Rows per generation call.
    #[serde(default = "d_gen_batch")]
    pub batch: usize,
    /// The tch decode loop for rollouts and held-out evaluation: "dynamic" (the window grows a
    /// position a step), "static" (fixed-shape step, tokens drawn on the device) or "cuda-graph"
    /// (that step captured as CUDA graphs: CUDA builds). Same seeds, same tokens.
    #[serde(default)]
    pub decode: crate::model::static_decode::TchDecode,
}

fn d_pps() -> usize {
    1024
}
fn d_n() -> usize {
    8
}
fn d_one() -> f64 {
    1.0
}
fn d_resp() -> usize {
    3072
}
fn d_gen_batch() -> usize {
    64
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            prompts_per_step: d_pps(),
            n: d_n(),
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: d_resp(),
            batch: d_gen_batch(),
            decode: Default::default(),
        }
    }
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Training steps (one rollout batch each). Paper: 20 epochs of ⌊7,500 / 1,024⌋ = 140.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Run seed: data order and every rollout's sampling stream derive from it.
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps per rollout batch: the batch is cut into this many mini-batches
    /// (paper 4; 1 = on-policy).
    #[serde(default = "d_mini")]
    pub mini_batches: usize,
    /// Samples per forward/backward inside a mini-batch (memory only; results do not depend on
    /// it beyond float rounding).
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    /// Shuffle the training prompts each epoch (seeded); else take them in file order.
    #[serde(default = "d_true")]
    pub shuffle: bool,
    /// Per-decoder-layer gradient checkpointing: keep each layer's input only and recompute the
    /// layer in the backward pass (memory only; gradients equal the plain path's up to rounding).
    /// Not part of a run's settings: a resume may switch it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gradient_checkpointing: bool,
    /// Data-parallel runs (torchrun / srun): shard the AdamW state (f32 master weights and both
    /// moments) across the ranks, ZeRO stage 1. Checkpoints then hold one optimizer file per rank.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero1: bool,
}

fn d_steps() -> usize {
    140
}
fn d_mini() -> usize {
    4
}
fn d_micro() -> usize {
    8
}
fn d_true() -> bool {
    true
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: d_steps(),
            seed: 0,
            mini_batches: d_mini(),
            micro_batch: d_micro(),
            shuffle: true,
            gradient_checkpointing: false,
            zero1: false,
        }
    }
}

/// `[eval]`: held-out validation during training (the paper's Fig. 4a/4b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Every N steps (paper 7); 0 = never.
    #[serde(default = "d_every")]
    pub every: usize,
    /// Also before the first step (paper: yes).
    #[serde(default = "d_true")]
    pub before_train: bool,
    /// Generations per problem.
    #[serde(default = "d_eval_n")]
    pub n: usize,
    /// Paper: greedy (0) for Qwen2.5-Math-7B; T 0.7, top-p 0.8, top-k 20 for Qwen3-4B.
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "d_one")]
    pub top_p: f64,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "d_resp")]
    pub max_new_tokens: usize,
    #[serde(default = "d_gen_batch")]
    pub batch: usize,
}

fn d_every() -> usize {
    7
}
fn d_eval_n() -> usize {
    1
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every: d_every(),
            before_train: true,
            n: 1,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: d_resp(),
            batch: d_gen_batch(),
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Every N steps (and after the last); 0 = only after the last.
    #[serde(default = "d_every")]
    pub every: usize,
    /// Keep the newest N checkpoints (0 = all).
    #[serde(default = "d_keep")]
    pub keep: usize,
}

fn d_keep() -> usize {
    2
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every: d_every(), keep: d_keep() }
    }
}

/// Parses a `--set` value as a TOML value (number, bool, string, array); a bare word that is not
/// valid TOML is taken as a string.
fn parse_value(s: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {s}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(s.to_string())),
        Err(_) => toml::Value::String(s.to_string()),
    }
}

/// Applies `section.key=value` overrides to a parsed TOML table.
pub fn apply_overrides(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for s in sets {
        let (key, value) =
            s.split_once('=').ok_or_else(|| RlError::Config(format!("--set {s:?}: expected section.key=value")))?;
        let parts: Vec<&str> = key.trim().split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(RlError::Config(format!("--set {s:?}: empty key part")));
        }
        let mut cur = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            cur = entry.as_table_mut().ok_or_else(|| RlError::Config(format!("--set {s:?}: {p} is not a section")))?;
        }
        cur.insert(parts[parts.len() - 1].to_string(), parse_value(value.trim()));
    }
    Ok(())
}

impl TrainConfig {
    /// Reads `path`, applies `sets`, checks every value. Relative paths in the file stay
    /// relative to the working directory (the project root for the presets).
    pub fn load(path: &Path, sets: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_toml(&text, sets).map_err(|e| match e {
            RlError::Config(m) => RlError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_toml(text: &str, sets: &[String]) -> Result<TrainConfig> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| RlError::Config(one_line(&e.to_string())))?;
        apply_overrides(&mut table, sets)?;
        let mut cfg: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| RlError::Config(one_line(&e.to_string())))?;
        cfg.objective.resolve();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML (every key, defaults filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// Samples per mini-batch: prompts_per_step × n / mini_batches.
    pub fn mini_batch_size(&self) -> usize {
        self.rollout.prompts_per_step * self.rollout.n / self.train.mini_batches.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RlError::Config(m));
        self.objective.validate().map_err(RlError::Config)?;
        self.optim.validate("optim").map_err(RlError::Config)?;
        let r = &self.rollout;
        if r.prompts_per_step == 0 || r.n == 0 || r.max_new_tokens == 0 || r.batch == 0 {
            return bad("rollout.prompts_per_step, n, max_new_tokens and batch must be positive".into());
        }
        if !(r.temperature.is_finite() && r.temperature >= 0.0 && r.top_p > 0.0 && r.top_p <= 1.0) {
            return bad(format!(
                "rollout.temperature must be >= 0 and rollout.top_p in (0, 1], got {} and {}",
                r.temperature, r.top_p
            ));
        }
        let t = &self.train;
        if t.mini_batches == 0 || t.micro_batch == 0 {
            return bad("train.mini_batches and train.micro_batch must be positive".into());
        }
        let total = r.prompts_per_step * r.n;
        if !total.is_multiple_of(t.mini_batches) {
            return bad(format!(
                "train.mini_batches = {} must divide the rollout batch of {} samples (prompts_per_step × n)",
                t.mini_batches, total
            ));
        }
        let e = &self.eval;
        if e.n == 0 || e.batch == 0 || e.max_new_tokens == 0 {
            return bad("eval.n, eval.batch and eval.max_new_tokens must be positive".into());
        }
        if self.objective.kind == super::ObjectiveKind::Ppo {
            let c = &self.critic;
            OptimConfig { lr: c.lr, ..self.optim.clone() }.validate("critic").map_err(RlError::Config)?;
            if !(c.value_clip > 0.0 && (0.0..=1.0).contains(&c.gamma) && (0.0..=1.0).contains(&c.lam)) {
                return bad("critic.value_clip must be > 0 and critic.gamma, critic.lam in [0, 1]".into());
            }
        }
        self.model.dtype.parse::<crate::model::DType>().map_err(|e| RlError::Config(format!("model.dtype: {e}")))?;
        Ok(())
    }

    /// What must not change between a run and its resume: the config without the keys that only
    /// say how long to go on or what to keep (`train.steps`, `checkpoint.keep`).
    pub fn settings_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        if let Some(o) = v.get_mut("train").and_then(|t| t.as_object_mut()) {
            o.remove("steps");
            o.remove("gradient_checkpointing");
        }
        if let Some(o) = v.get_mut("checkpoint").and_then(|t| t.as_object_mut()) {
            o.remove("keep");
        }
        v
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[model]
path = "m"
[task]
kind = "math"
template = "qwen2.5-math"
[objective]
kind = "nsr"
"#;

    #[test]
    fn defaults_are_the_papers_and_overrides_reach_every_key() {
        let c = TrainConfig::from_toml(BASE, &[]).unwrap();
        assert_eq!((c.rollout.prompts_per_step, c.rollout.n, c.train.mini_batches), (1024, 8, 4));
        assert_eq!((c.optim.lr, c.optim.weight_decay, c.optim.grad_clip), (1e-6, 0.01, 1.0));
        assert_eq!(c.mini_batch_size(), 2048);
        let c = TrainConfig::from_toml(
            BASE,
            &[
                "objective.kind=w-reinforce".into(),
                "objective.lambda=0.5".into(),
                "optim.lr=3e-4".into(),
                "critic.lr=2e-5".into(),
            ],
        )
        .unwrap();
        assert_eq!((c.objective.lambda, c.optim.lr, c.critic.lr), (0.5, 3e-4, 2e-5));
        assert_eq!(c.objective.kind, super::super::ObjectiveKind::WReinforce);
        let back = TrainConfig::from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(back, c, "the saved config reads back as the same config");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = TrainConfig::from_toml(BASE, &["optim.lrr=1".into()]).unwrap_err().to_string();
        assert!(e.contains("lrr"), "{e}");
        let e = TrainConfig::from_toml(BASE, &["task.datset=math500".into()]).unwrap_err().to_string();
        assert!(e.contains("datset"), "{e}");
        let e = TrainConfig::from_toml(BASE, &["train.mini_batches=3".into()]).unwrap_err().to_string();
        assert!(e.contains("must divide"), "{e}");
        let e = TrainConfig::from_toml(BASE, &["objective.kl_coef=0.001".into()]).unwrap_err().to_string();
        assert!(e.contains("uses no KL"), "{e}");
        let e = TrainConfig::from_toml(BASE, &["nonsense".into()]).unwrap_err().to_string();
        assert!(e.contains("section.key=value"), "{e}");
    }
}
