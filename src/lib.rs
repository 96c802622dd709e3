//! rlvr-decomp: an end-to-end reproduction harness for *The Surprising Effectiveness of Negative
//! Reinforcement in LLM Reasoning* (Zhu et al., 2025, arXiv 2506.01347).
//!
//! The data flows one way, and the modules follow it:
//! [`data`] + [`prompt`] → [`model`] (tch) → [`rl`] (train) → [`export`] (ONNX) → [`sample`] (ORT) → [`eval`]
//! (verify + pass@k) → report → golden check. [`paths`] says where installed resources live and
//! [`runtime`] loads the native libraries (libtorch, ONNX Runtime).
//!
//! Shared by every stage that writes: [`durable`] (crash-safe files and folders), [`rundir`]
//! (the run-folder contract: lock, settings, checked manifest) and [`fingerprint`] (content
//! identity of checkpoints and exports).

pub mod data;
pub mod dist;
pub mod durable;
pub mod eval;
pub mod export;
pub mod fingerprint;
pub mod golden;
pub mod mini;
pub mod model;
pub mod paths;
pub mod prompt;
pub mod report;
pub mod rl;
pub mod rundir;
pub mod runtime;
pub mod sample;
pub mod sft;
