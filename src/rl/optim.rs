//! AdamW with its state owned as tensors, so it can be checkpointed and kept in f32 beside
//! bf16 weights (tch's `nn::Optimizer` can do neither; libtorch's fused `_fused_adamw_` is not
//! bound by tch, so the update is written with in-place tensor ops, in PyTorch's order).
//!
//! One step, per parameter p with gradient g (f32 master weights w when p is not f32):
//!
//! ```text
//! w ← w · (1 − lr·wd)                         decoupled weight decay
//! m ← β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! w ← w − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)
//! p ← w (cast)
//! ```
//!
//! Before it, the gradients are clipped to a total L2 norm of `grad_clip` (PyTorch's
//! `clip_grad_norm_`: scale by min(1, clip / (norm + 1e-6))); a non-finite norm skips the step
//! (as verl does) and is reported.

use super::{Result, RlError};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The `[optim]` section. Defaults are the paper's (verl's FSDP worker defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Constant learning rate (paper 1e-6; no warmup, no schedule).
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_b1")]
    pub beta1: f64,
    #[serde(default = "d_b2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Decoupled weight decay (paper / verl 0.01).
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Total gradient L2 norm clip (paper 1.0); 0 disables.
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
}

fn d_lr() -> f64 {
    1e-6
}
fn d_b1() -> f64 {
    0.9
}
fn d_b2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_wd() -> f64 {
    0.01
}
fn d_clip() -> f64 {
    1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: d_lr(),
            beta1: d_b1(),
            beta2: d_b2(),
            eps: d_eps(),
            weight_decay: d_wd(),
            grad_clip: d_clip(),
        }
    }
}

impl OptimConfig {
    pub fn validate(&self, section: &str) -> std::result::Result<(), String> {
        let ok = |k: &str, v: f64, good: bool| {
            if v.is_finite() && good {
                Ok(())
            } else {
                Err(format!("{section}.{k} = {v} is out of range"))
            }
        };
        ok("lr", self.lr, self.lr > 0.0)?;
        ok("beta1", self.beta1, (0.0..1.0).contains(&self.beta1))?;
        ok("beta2", self.beta2, (0.0..1.0).contains(&self.beta2))?;
        ok("eps", self.eps, self.eps > 0.0)?;
        ok("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        ok("grad_clip", self.grad_clip, self.grad_clip >= 0.0)
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Total L2 norm of all gradients, before clipping.
    pub grad_norm: f64,
    /// The step was skipped because the norm was not finite.
    pub skipped: bool,
}

/// AdamW over named parameters.
pub struct AdamW {
    pub cfg: OptimConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    /// f32 master copies when the parameters are stored in another dtype.
    master: Option<Vec<Tensor>>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Optimizer steps taken so far (t of the bias corrections).
    pub step: u64,
}

impl AdamW {
    /// Takes the trainable variables `(name, tensor)` in a fixed (name) order.
    pub fn new(mut vars: Vec<(String, Tensor)>, cfg: OptimConfig) -> Result<AdamW> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let needs_master = vars.iter().any(|(_, t)| t.kind() != Kind::Float);
        let (names, params): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        let zeros = |p: &Tensor| Tensor::zeros(p.size(), (Kind::Float, p.device()));
        let master = if needs_master {
            Some(tch::no_grad(|| params.iter().map(|p| p.detach().to_kind(Kind::Float)).collect()))
        } else {
            None
        };
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        Ok(AdamW { cfg, names, params, master, exp_avg, exp_avg_sq, step: 0 })
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Total L2 norm of the current gradients (0 for parameters without one).
    pub fn grad_norm(&self) -> Result<f64> {
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .filter_map(|p| {
                let g = p.grad();
                g.defined().then(|| g.to_kind(Kind::Float).norm())
            })
            .collect();
        if norms.is_empty() {
            return Ok(0.0);
        }
        Ok(Tensor::stack(&norms, 0).norm().f_double_value(&[])?)
    }

    /// Clips the gradients and takes one AdamW step.
    pub fn step(&mut self) -> Result<StepStats> {
        let grad_norm = self.grad_norm()?;
        if !grad_norm.is_finite() {
            self.zero_grad();
            return Ok(StepStats { grad_norm, skipped: true });
        }
        let scale = if self.cfg.grad_clip > 0.0 { (self.cfg.grad_clip / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
        self.step += 1;
        let c = &self.cfg;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let step_size = c.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        tch::no_grad(|| -> Result<()> {
            for i in 0..self.params.len() {
                let g = self.params[i].grad();
                if !g.defined() {
                    continue;
                }
                let mut g = g.to_kind(Kind::Float);
                if scale < 1.0 {
                    g = g * scale;
                }
                let w = match &self.master {
                    Some(m) => m[i].shallow_clone(),
                    None => self.params[i].shallow_clone(),
                };
                let mut w = w;
                let _ = w.f_mul_scalar_(1.0 - c.lr * c.weight_decay)?;
                let _ = self.exp_avg[i].f_lerp_(&g, 1.0 - c.beta1)?;
                let _ = self.exp_avg_sq[i].f_mul_scalar_(c.beta2)?;
                let _ = self.exp_avg_sq[i].f_addcmul_(&(&g * (1.0 - c.beta2)), &g)?;
                let denom = self.exp_avg_sq[i].f_sqrt()? / bc2_sqrt + c.eps;
                let _ = w.f_addcdiv_(&(&self.exp_avg[i] * -step_size), &denom)?;
                if self.master.is_some() {
                    let _ = self.params[i].f_copy_(&w)?;
                }
            }
            Ok(())
        })?;
        self.zero_grad();
        Ok(StepStats { grad_norm, skipped: false })
    }

    /// The state to checkpoint: `exp_avg.NAME`, `exp_avg_sq.NAME`, `master.NAME` (when kept) and
    /// `step` (a 1-element int64 tensor).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.names.len() + 1);
        for (i, n) in self.names.iter().enumerate() {
            out.push((format!("exp_avg.{n}"), self.exp_avg[i].shallow_clone()));
            out.push((format!("exp_avg_sq.{n}"), self.exp_avg_sq[i].shallow_clone()));
            if let Some(m) = &self.master {
                out.push((format!("master.{n}"), m[i].shallow_clone()));
            }
        }
        out.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
        out
    }

    /// Restores [`AdamW::state`] (names and shapes must match this optimizer's parameters).
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = state.into_iter().collect();
        let get = |k: &str| map.get(k).ok_or_else(|| RlError::Checkpoint(format!("optimizer state has no tensor {k}")));
        tch::no_grad(|| -> Result<()> {
            for (i, n) in self.names.iter().enumerate() {
                for (key, dst) in [("exp_avg", &mut self.exp_avg[i]), ("exp_avg_sq", &mut self.exp_avg_sq[i])] {
                    let src = get(&format!("{key}.{n}"))?;
                    if src.size() != dst.size() {
                        return Err(RlError::Checkpoint(format!(
                            "optimizer tensor {key}.{n} has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src)?;
                }
                if let Some(m) = &mut self.master {
                    m[i].f_copy_(get(&format!("master.{n}"))?)?;
                }
            }
            Ok(())
        })?;
        self.step = get("step")?.int64_value(&[0]) as u64;
        Ok(())
    }
}
