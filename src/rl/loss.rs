//! The policy loss of one mini-batch, accumulated micro-batch by micro-batch.
//!
//! For token t of sample i in the mini-batch's sample set S (N_S response tokens), with
//! ρ = exp(log π − log π_old), advantage A, ε = `clip_eps`:
//!
//! ```text
//! surrogate = max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))        (−A·ρ when ε = 0)
//! k3        = exp(d) − d − 1, d = log π_ref − log π,  clamped to [−10, 10]   (GRPO only)
//! loss      = Σ surrogate / N_S − entropy_coef · Σ H / N_S + kl_coef · Σ k3 / N_S
//! ```
//!
//! verl's `compute_policy_loss` (token-mean, `pg_clipfrac` = share of tokens where the clipped
//! branch is the larger), `kl_penalty(.., "low_var_kl")` and the entropy bonus of
//! `dp_actor.update_policy`. Every term is a sum of per-token terms, so the backward pass can run
//! through the LM head one chunk of tokens at a time: the trunk's output is detached, each chunk's
//! loss is backpropagated into it, and the accumulated gradient is then pushed through the trunk
//! once (`(h · ∂L/∂h).sum().backward()`).

pub use super::logprob::head_chunk_rows;
use super::logprob::{acc_kind, logp_and_entropy, pack, response_hidden_tape};
use super::rollout::Rollout;
use super::Result;
use crate::model::Qwen;
use tch::{Device, Kind, Tensor};

/// Per-token constants of the rows of a micro-batch (flat over their response tokens, in order).
pub struct TokenInputs<'a> {
    pub old_logp: &'a [f32],
    pub advantages: &'a [f32],
    /// Reference-policy log-probs (GRPO's KL loss), when `kl_coef > 0`.
    pub ref_logp: Option<&'a [f32]>,
}

/// Coefficients of the loss.
#[derive(Debug, Clone, Copy)]
pub struct LossCoefs {
    pub clip_eps: f64,
    pub entropy_coef: f64,
    pub kl_coef: f64,
}

/// Sums over the tokens seen (divide by N_S for the token-means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossSums {
    pub tokens: usize,
    pub surrogate: f64,
    pub entropy: f64,
    pub kl: f64,
    /// Tokens where the clipped branch of the surrogate was the larger (verl's clip fraction).
    pub clipped: usize,
    /// Tokens with ρ outside [1−ε, 1+ε].
    pub ratio_outside: usize,
    pub max_abs_log_ratio: f64,
}

impl LossSums {
    pub fn add(&mut self, o: &LossSums) {
        self.tokens += o.tokens;
        self.surrogate += o.surrogate;
        self.entropy += o.entropy;
        self.kl += o.kl;
        self.clipped += o.clipped;
        self.ratio_outside += o.ratio_outside;
        self.max_abs_log_ratio = self.max_abs_log_ratio.max(o.max_abs_log_ratio);
    }
}

/// Per-token terms of one chunk: (surrogate, clipped flag, outside flag, log-ratio, k3), all [n].
fn token_terms(logp: &Tensor, old: &Tensor, adv: &Tensor, refl: Option<&Tensor>, c: &LossCoefs) -> [Tensor; 5] {
    let log_ratio = logp - old;
    let ratio = log_ratio.exp();
    let unclipped = -(adv * &ratio);
    let (surrogate, clipped, outside) = if c.clip_eps > 0.0 {
        let clipped_ratio = ratio.clamp(1.0 - c.clip_eps, 1.0 + c.clip_eps);
        let clipped_loss = -(adv * &clipped_ratio);
        let flag = clipped_loss.gt_tensor(&unclipped);
        let outside = ratio.lt(1.0 - c.clip_eps).logical_or(&ratio.gt(1.0 + c.clip_eps));
        (unclipped.maximum(&clipped_loss), flag, outside)
    } else {
        (
            unclipped.shallow_clone(),
            unclipped.zeros_like().to_kind(Kind::Bool),
            unclipped.zeros_like().to_kind(Kind::Bool),
        )
    };
    let k3 = match refl {
        Some(r) => {
            let d = r - logp;
            (d.exp() - &d - 1.0).clamp(-10.0, 10.0)
        }
        None => logp.zeros_like(),
    };
    [surrogate, clipped, outside, log_ratio, k3]
}

/// Forward + backward of one micro-batch's share of a mini-batch loss (`n_s` = N_S of the whole
/// mini-batch), accumulating gradients into the model's parameters. Returns the sums of its terms.
/// `chunk`: LM-head rows per backward chunk (callers pass [`head_chunk_rows`]; tests a small one).
#[allow(clippy::too_many_arguments)]
pub fn backward_micro_batch(
    model: &Qwen,
    rows: &[&Rollout],
    inputs: &TokenInputs<'_>,
    coefs: &LossCoefs,
    n_s: f64,
    pad: i64,
    chunk: i64,
) -> Result<LossSums> {
    let dev = model.device();
    let p = pack(rows, pad, dev);
    let (h, tape) = response_hidden_tape(model, &p)?; // [N, C], with autograd (to the top layer when checkpointing)
    let n = h.size()[0];
    assert_eq!(n as usize, inputs.old_logp.len(), "old log-probs must cover every response token");
    let hd = h.detach().set_requires_grad(true); // [N, C] leaf: the head's backward stops here
    let to_dev = |v: &[f32]| Tensor::from_slice(v).to_device(dev);
    let (old, adv) = (to_dev(inputs.old_logp), to_dev(inputs.advantages));
    let refl = inputs.ref_logp.map(to_dev);
    let chunk = chunk.max(1);
    let mut sums = LossSums { tokens: n as usize, ..Default::default() };
    let mut s = 0;
    while s < n {
        let len = chunk.min(n - s);
        let logits = model.lm_head(&hd.narrow(0, s, len)); // [len, V]
        let (logp, ent) = logp_and_entropy(&logits, &p.targets.narrow(0, s, len));
        let r = refl.as_ref().map(|r| r.narrow(0, s, len));
        let [sur, clipped, outside, log_ratio, k3] =
            token_terms(&logp, &old.narrow(0, s, len), &adv.narrow(0, s, len), r.as_ref(), coefs);
        let acc = acc_kind(logp.kind());
        let loss = (sur.sum(acc) - ent.sum(acc) * coefs.entropy_coef + k3.sum(acc) * coefs.kl_coef) / n_s;
        loss.f_backward()?;
        sums.surrogate += sur.detach().sum(Kind::Double).f_double_value(&[])?;
        sums.entropy += ent.detach().sum(Kind::Double).f_double_value(&[])?;
        sums.kl += k3.detach().sum(Kind::Double).f_double_value(&[])?;
        sums.clipped += clipped.sum(Kind::Int64).f_int64_value(&[])? as usize;
        sums.ratio_outside += outside.sum(Kind::Int64).f_int64_value(&[])? as usize;
        if len > 0 {
            sums.max_abs_log_ratio =
                sums.max_abs_log_ratio.max(log_ratio.detach().abs().max().to_kind(Kind::Double).f_double_value(&[])?);
        }
        s += len;
    }
    let g = hd.grad();
    if g.defined() {
        let acc = acc_kind(g.kind());
        (h * g).sum(acc).f_backward()?;
    }
    tape.backward(model)?;
    Ok(sums)
}

/// PPO's clipped value loss of one micro-batch: 0.5 · Σ max((V − R)², (clip(V, V_old ± c) − R)²) / N_S,
/// backpropagated into the critic. Returns (Σ of the max terms, tokens where the clipped branch won).
pub fn value_backward(
    vpred: &Tensor,
    old_values: &[f32],
    returns: &[f32],
    value_clip: f64,
    n_s: f64,
) -> Result<(f64, usize)> {
    let dev = vpred.device();
    let old = Tensor::from_slice(old_values).to_device(dev);
    let ret = Tensor::from_slice(returns).to_device(dev);
    let v = vpred.to_kind(Kind::Float);
    let clipped = v.clamp_tensor(Some(&(&old - value_clip)), Some(&(&old + value_clip)));
    let l1 = (&v - &ret).square();
    let l2 = (clipped - &ret).square();
    let clip_won = l2.gt_tensor(&l1).sum(Kind::Int64).f_int64_value(&[])? as usize;
    let terms = l1.maximum(&l2);
    (terms.sum(Kind::Float) * (0.5 / n_s)).f_backward()?;
    Ok((terms.detach().sum(Kind::Double).to_device(Device::Cpu).f_double_value(&[])?, clip_won))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ surrogate as a function of the log-probs, for finite differences.
    fn total(logp: &Tensor, old: &Tensor, adv: &Tensor, c: &LossCoefs) -> f64 {
        let [s, ..] = token_terms(logp, old, adv, None, c);
        s.sum(Kind::Double).double_value(&[])
    }

    #[test]
    fn clipped_surrogate_gradient_matches_finite_differences() {
        // Tokens inside the trust region and outside it on both sides, for A > 0 and A < 0,
        // away from the kinks at ρ = 1 ± ε.
        let old = Tensor::from_slice(&[0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0]);
        let logp0 = Tensor::from_slice(&[0.1f64, -0.1, 0.5, -0.5, 0.5, -0.5, -0.95, -2.3]);
        let adv = Tensor::from_slice(&[1.0f64, -1.0, 1.0, 1.0, -1.0, -1.0, 0.3, -2.0]);
        for clip_eps in [0.2, 0.0] {
            let c = LossCoefs { clip_eps, entropy_coef: 0.0, kl_coef: 0.0 };
            let x = logp0.detach().set_requires_grad(true);
            let [s, clipped, ..] = token_terms(&x, &old, &adv, None, &c);
            s.sum(Kind::Double).backward();
            let g = Vec::<f64>::try_from(x.grad()).unwrap();
            let h = 1e-6;
            for i in 0..8 {
                let e =
                    Tensor::zeros([8], (Kind::Double, Device::Cpu)).index_fill(0, &Tensor::from_slice(&[i as i64]), h);
                let fd = (total(&(&logp0 + &e), &old, &adv, &c) - total(&(&logp0 - &e), &old, &adv, &c)) / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() < 1e-7,
                    "clip {clip_eps}, token {i}: autograd {} vs finite difference {fd}",
                    g[i]
                );
            }
            let flags = Vec::<bool>::try_from(clipped).unwrap();
            if clip_eps > 0.0 {
                // ρ = e^0.5 > 1.2 with A > 0, and ρ = e^−0.5 or e^−0.3 < 0.8 with A < 0, are
                // clipped (zero gradient); ρ outside the region on the other side is not.
                assert_eq!(flags, vec![false, false, true, false, false, true, false, true]);
                assert_eq!((g[2], g[5], g[7]), (0.0, 0.0, 0.0));
            } else {
                assert!(flags.iter().all(|f| !f));
            }
        }
    }
}
