//! Evaluation: answer verification (extraction + math equivalence) and the unbiased pass@k estimator.

pub mod pass_at_k;
pub mod verify;
