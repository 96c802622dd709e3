//! PPO's critic: a copy of the policy's base model with a scalar value head on the final hidden
//! state (verl: `AutoModelForTokenClassification(num_labels=1)` initialised from the base model,
//! its `score` head newly initialised N(0, 0.02²), bias 0), trained by its own AdamW.
//!
//! The value of response token j is read at the hidden state that predicts it (verl's
//! `values[:, -response_length - 1 : -1]`), the same rows [`crate::rl::logprob`] uses.

use super::logprob::{pack, response_hidden, response_hidden_tape};
use super::rollout::Rollout;
use super::{Result, RlError};
use crate::model::LayerTape;
use crate::model::{self, DType, LoadedModel};
use rand::{Rng, SeedableRng};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

pub const HEAD_FILE: &str = "value_head.safetensors";

pub struct Critic {
    /// The body (an HF-layout model; its LM head is unused).
    pub body: LoadedModel,
    /// `score.weight` [1, C], `score.bias` [1].
    pub head_vs: nn::VarStore,
    weight: Tensor,
    bias: Tensor,
}

/// `n` draws of N(0, std²) from a seeded stream (Box–Muller), for initialising new heads without a
/// global RNG.
fn normal(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

impl Critic {
    /// A critic whose body is the checkpoint in `dir`; a fresh head seeded by `seed`.
    pub fn init(dir: &Path, device: Device, dtype: DType, seed: u64) -> Result<Critic> {
        let body = model::load_model(dir, device, dtype)?;
        let c = body.cfg.hidden_size;
        let mut head_vs = nn::VarStore::new(device);
        let score = head_vs.root().sub("score");
        let weight = score.var("weight", &[1, c], nn::Init::Const(0.0));
        let bias = score.var("bias", &[1], nn::Init::Const(0.0));
        let init = Tensor::from_slice(&normal(c as usize, 0.02, seed)).view([1, c]);
        tch::no_grad(|| weight.shallow_clone().copy_(&init));
        head_vs.set_kind(dtype.kind());
        Ok(Critic { body, weight, bias, head_vs })
    }

    /// Restores a critic saved by [`Critic::save`].
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Critic> {
        let mut c = Critic::init(dir, device, dtype, 0)?;
        let path = dir.join(HEAD_FILE);
        let tensors =
            Tensor::read_safetensors(&path).map_err(|e| RlError::Checkpoint(format!("{}: {e}", path.display())))?;
        let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (name, dst) in [("score.weight", &mut c.weight), ("score.bias", &mut c.bias)] {
                let src =
                    map.get(name).ok_or_else(|| RlError::Checkpoint(format!("{} has no {name}", path.display())))?;
                dst.f_copy_(src)?;
            }
            Ok(())
        })?;
        Ok(c)
    }

    /// Writes the body in HF layout into `dir` and the head beside it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.body.save(dir, &Default::default())?;
        let path = dir.join(HEAD_FILE);
        let tensors = [
            ("score.weight", self.weight.detach().to_kind(Kind::Float)),
            ("score.bias", self.bias.detach().to_kind(Kind::Float)),
        ];
        Tensor::write_safetensors(&tensors, &path)
            .map_err(|e| RlError::Checkpoint(format!("{}: {e}", path.display())))?;
        Ok(())
    }

    /// Every trainable tensor (body and head), named.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.body.vs.variables().into_iter().collect();
        v.push(("score.weight".into(), self.weight.shallow_clone()));
        v.push(("score.bias".into(), self.bias.shallow_clone()));
        v
    }

    /// Values of every response token of `rows`: [N] f32 (with autograd when enabled).
    pub fn values(&self, rows: &[&Rollout], pad: i64) -> Result<Tensor> {
        let p = pack(rows, pad, self.body.model.device());
        let h = response_hidden(&self.body.model, &p)?; // [N, C]
        Ok(h.linear(&self.weight, Some(&self.bias)).squeeze_dim(-1).to_kind(Kind::Float))
        // [N]
    }

    /// [`Critic::values`] for training: run the tape after the backward (gradient checkpointing).
    pub fn values_tape(&self, rows: &[&Rollout], pad: i64) -> Result<(Tensor, LayerTape)> {
        let p = pack(rows, pad, self.body.model.device());
        let (h, tape) = response_hidden_tape(&self.body.model, &p)?; // [N, C]
        Ok((h.linear(&self.weight, Some(&self.bias)).squeeze_dim(-1).to_kind(Kind::Float), tape))
        // [N]
    }
}
