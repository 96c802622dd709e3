//! Reinforcement learning with verifiable rewards: the paper's five objectives trained through
//! tch on Qwen2/Qwen3 models.
//!
//! * [`objective`] — PPO, GRPO, PSR, NSR, W-REINFORCE as one closed enum; advantages (outcome,
//!   group-normalised, GAE, whitening) as pure `f32` code.
//! * [`optim`]     — AdamW with checkpointable f32 state, gradient-norm clipping.
//! * [`rollout`]   — rollouts (prompt, response, reward): generated from a [`task::Task`] with the
//!   seeded tch sampler, or read from a JSONL file (`train-step`).
//! * [`logprob`]   — teacher-forced response log-probs and entropies over response positions only,
//!   with the LM head applied in chunks (never a `[B, T, V]` log-softmax).
//! * [`loss`]      — the clipped surrogate, entropy bonus, k3 KL and value loss, accumulated per
//!   mini-batch with a chunked backward through the LM head.
//! * [`critic`]    — PPO's value model (the policy's body plus a scalar head).
//! * [`update`]    — one rollout batch → mini-batches → optimizer steps (shared by `train` and
//!   `train-step`).
//! * [`task`]      — what is trained on: prompts, gold answers, the reward (MATH datasets now).
//! * [`config`]    — the experiment TOML (`deny_unknown_fields`, `--set` overrides).
//! * [`metrics`]   — per-step metrics (`metrics.jsonl`, `metrics.parquet`).
//! * [`trainer`]   — the loop: rollouts, update, held-out eval, crash-safe checkpoints, resume.
//! * [`gradient`]  — the token-level gradient analysis w.r.t. logits (paper §4.2, Appendix A).

pub mod config;
pub mod critic;
pub mod gradient;
pub mod logprob;
pub mod loss;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod rollout;
pub mod task;
pub mod trainer;
pub mod update;

pub use config::TrainConfig;
pub use objective::{LossNorm, ObjectiveConfig, ObjectiveKind};
pub use optim::{AdamW, OptimConfig};
pub use rollout::Rollout;

use std::path::PathBuf;

/// Errors of training; every message is one line and names the file, key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum RlError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] crate::prompt::TokenizerError),
    #[error(transparent)]
    RunDir(#[from] crate::rundir::RunDirError),
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("{path}, line {line}: {msg}")]
    BadRollout { path: PathBuf, line: usize, msg: String },
    #[error("invalid input: {0}")]
    BadInput(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("parquet: {0}")]
    Parquet(String),
    #[error("libtorch error: {0}")]
    Torch(String),
    #[error("data-parallel: {0}")]
    Dist(String),
}

impl From<tch::TchError> for RlError {
    fn from(e: tch::TchError) -> Self {
        RlError::Torch(e.to_string().lines().next().unwrap_or("").to_string())
    }
}

pub type Result<T, E = RlError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RlError + '_ {
    move |source| RlError::Io { path: path.to_path_buf(), source }
}
