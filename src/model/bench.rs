//! Forward+backward step timing (the `bench-model` subcommand and `scripts/bench_model.py`).
//!
//! One step = forward on random tokens [batch, seq], next-token cross-entropy in f32,
//! backward, gradients zeroed. No optimizer (it is not part of the model).
//! The PyTorch side in `scripts/bench_model.py` does exactly the same with transformers.

use super::checkpoint::load_model;
use super::{DType, Result};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Result of [`bench_train_step_on`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub seconds_per_step: f64,
    pub step_seconds: Vec<f64>,
    pub tokens_per_second: f64,
    pub warmup: usize,
    pub final_loss: f64,
}

/// Seconds per forward+backward step on CPU in f32 with `threads` intra-op threads.
pub fn bench_train_step(model_dir: &Path, batch: i64, seq: i64, iters: usize, threads: i32) -> Result<f64> {
    Ok(bench_train_step_on(model_dir, batch, seq, iters, 2, threads, Device::Cpu, DType::F32)?.seconds_per_step)
}

/// General form: device / dtype / warmup selectable. `threads <= 0` keeps libtorch's default.
#[allow(clippy::too_many_arguments)]
pub fn bench_train_step_on(
    model_dir: &Path,
    batch: i64,
    seq: i64,
    iters: usize,
    warmup: usize,
    threads: i32,
    device: Device,
    dtype: DType,
) -> Result<BenchResult> {
    if threads > 0 {
        tch::set_num_threads(threads);
    }
    let lm = load_model(model_dir, device, dtype)?;
    tch::manual_seed(0);
    let ids = Tensor::randint(lm.cfg.vocab_size, [batch, seq], (Kind::Int64, device)); // [B, T]
    let targets = ids.narrow(1, 1, seq - 1).reshape([-1]); // [B*(T-1)]
    let params = lm.vs.trainable_variables();
    let sync = || {
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
    };
    let mut times = Vec::new();
    let mut final_loss = f64::NAN;
    for i in 0..warmup + iters {
        sync();
        let t0 = Instant::now();
        let logits = lm.model.forward(&ids, None, None)?; // [B, T, V]
        let v = logits.size()[2];
        let loss = logits
            .narrow(1, 0, seq - 1) // [B, T-1, V]
            .reshape([-1, v]) // [B*(T-1), V]
            .to_kind(Kind::Float)
            .cross_entropy_for_logits(&targets); // []
        loss.backward();
        for p in &params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        sync();
        let dt = t0.elapsed().as_secs_f64();
        final_loss = loss.double_value(&[]);
        if i >= warmup {
            times.push(dt);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    Ok(BenchResult {
        seconds_per_step: mean,
        step_seconds: times,
        tokens_per_second: (batch * seq) as f64 / mean,
        warmup,
        final_loss,
    })
}
