//! One update on a rollout batch: advantages → the sample set S → mini-batches → one AdamW step
//! each (and one critic step each, for PPO). Shared by `train` and `train-step`.
//!
//! The reference code's structure (verl `RayPPOTrainer.fit` + `dp_actor.update_policy`):
//! 1. old log-probs are recomputed by a teacher-forced forward of the rollout policy, with the
//!    very micro-batches the update will use, so the first mini-batch has ratio exactly 1;
//! 2. PSR and NSR drop the other class before the batch is split (`loss_norm = "kept-tokens"`):
//!    the kept samples, in order, are cut into mini-batches of `mini_batch_size` samples, so they
//!    take ⌈kept / mini_batch_size⌉ optimizer steps; with `"all-tokens"` every sample stays (A = 0
//!    for the filtered ones);
//! 3. each mini-batch's loss is token-mean over its samples (see [`crate::rl::loss`]), accumulated
//!    over micro-batches of `micro_batch` samples, then one clipped AdamW step.
//!
//! Data parallel (`Learner::dist`): every rank holds the same global rollout batch (the trainer
//! all-gathers it), so advantages, S and the mini-batch partition are computed identically
//! everywhere; each mini-batch's rows are split contiguously across ranks ([`owned_rows`]), each
//! rank back-propagates its share with the loss divided by the *global* mini-batch's kept tokens,
//! and the optimizer sums the gradients over ranks: the single-process gradient, up to float
//! summation order. Logged sums and PPO's advantage whitening are all-reduced.
//!
//! Departure, stated: verl scales a partial last mini-batch's loss by its share of a full one
//! (a side effect of `use_dynamic_bsz`); here every mini-batch is a plain token-mean.

use super::critic::Critic;
use super::logprob::token_stats;
use super::loss::{backward_micro_batch, value_backward, LossCoefs, LossSums, TokenInputs};
use super::objective::{gae, sequence_advantages, whiten, LossNorm, ObjectiveConfig, ObjectiveKind, SampleOutcome};
use super::optim::AdamW;
use super::rollout::Rollout;
use super::{Result, RlError};
use crate::dist::{ProcessGroup, ReduceOp};
use crate::model::LoadedModel;
use serde::{Deserialize, Serialize};

/// PPO's critic settings (the `[critic]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticConfig {
    /// The critic's own AdamW learning rate (paper 1e-5); other AdamW settings as `[optim]`.
    #[serde(default = "d_critic_lr")]
    pub lr: f64,
    /// Value clip around the rollout-time values (verl `cliprange_value`, 0.5).
    #[serde(default = "d_value_clip")]
    pub value_clip: f64,
    /// GAE discount and λ (paper: both 1).
    #[serde(default = "d_one")]
    pub gamma: f64,
    #[serde(default = "d_one")]
    pub lam: f64,
}

fn d_critic_lr() -> f64 {
    1e-5
}
fn d_value_clip() -> f64 {
    0.5
}
fn d_one() -> f64 {
    1.0
}

impl Default for CriticConfig {
    fn default() -> Self {
        CriticConfig { lr: d_critic_lr(), value_clip: d_value_clip(), gamma: 1.0, lam: 1.0 }
    }
}

/// How one rollout batch is split.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    pub objective: ObjectiveConfig,
    /// Samples per mini-batch (M). The paper: 256 prompts × 8 = 2,048 of 8,192, i.e. 4 steps.
    pub mini_batch_size: usize,
    /// Samples per forward/backward (gradient accumulation inside a mini-batch).
    pub micro_batch: usize,
    pub critic: CriticConfig,
}

/// What is updated.
pub struct Learner<'a> {
    pub policy: &'a LoadedModel,
    pub opt: &'a mut AdamW,
    /// Frozen initial policy: GRPO's KL loss and PPO's KL penalty (when kl_coef > 0).
    pub reference: Option<&'a LoadedModel>,
    /// PPO's critic and its optimizer.
    pub critic: Option<(&'a Critic, &'a mut AdamW)>,
    /// Any valid token id, used to pad packed sequences.
    pub pad: i64,
    /// Data-parallel training: every rank passes the same (global) rollouts and computes only its
    /// share of each mini-batch (see [`update`]); the optimizers must be [`AdamW::distributed`].
    pub dist: Option<&'a ProcessGroup>,
}

/// This rank's contiguous share of `rows` (balanced by count; every row has exactly one owner).
pub fn owned_rows(rows: &[usize], rank: usize, world: usize) -> Vec<usize> {
    let n = rows.len();
    rows[rank * n / world..(rank + 1) * n / world].to_vec()
}

/// Statistics of one update (token-means over every mini-batch's S unless stated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub samples: usize,
    pub kept_samples: usize,
    pub kept_tokens: usize,
    pub optimizer_steps: usize,
    /// Steps skipped for a non-finite gradient norm.
    pub skipped_steps: usize,
    /// pg_loss − entropy_coef · entropy + kl_coef · kl.
    pub loss: f64,
    pub pg_loss: f64,
    pub entropy: f64,
    pub kl: f64,
    /// Total gradient L2 norm before clipping, mean over the optimizer steps.
    pub grad_norm: f64,
    pub grad_norm_max: f64,
    pub clip_frac: f64,
    pub ratio_outside_frac: f64,
    pub max_abs_log_ratio: f64,
    /// Mean token entropy of every rollout under the rollout policy.
    pub rollout_entropy: f64,
    /// KL(rollout policy ‖ reference) estimated as the mean of log π_old − log π_ref over the
    /// tokens of S (when a reference model is loaded; PPO's reward penalty is β times this).
    pub rollout_kl: Option<f64>,
    /// Mean advantage over the tokens of S.
    pub advantage_mean: f64,
    pub value_loss: Option<f64>,
    pub value_clip_frac: Option<f64>,
    pub critic_grad_norm: Option<f64>,
    /// Per-token entropies of every rollout under the rollout policy (for per-class logging; not
    /// serialized).
    #[serde(skip)]
    pub rollout_token_entropy: Vec<Vec<f32>>,
}

fn concat(rows: &[usize], per_row: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flat_map(|&i| per_row[i].iter().copied()).collect()
}

/// No-grad token stats of `rows` (indices into `all`) in the given micro-batch partition, stored
/// per row.
fn stats_by_row(
    model: &crate::model::Qwen,
    all: &[Rollout],
    micro_batches: &[Vec<usize>],
    pad: i64,
    logp: &mut [Vec<f32>],
    ent: &mut [Vec<f32>],
) -> Result<()> {
    for mb in micro_batches {
        let rows: Vec<&Rollout> = mb.iter().map(|&i| &all[i]).collect();
        let (lp, en) = token_stats(model, &rows, rows.len(), pad)?;
        let mut off = 0;
        for &i in mb {
            let n = all[i].response_ids.len();
            logp[i] = lp[off..off + n].to_vec();
            ent[i] = en[off..off + n].to_vec();
            off += n;
        }
    }
    Ok(())
}

/// Runs one update of `learner` on `rollouts`.
pub fn update(learner: &mut Learner<'_>, rollouts: &[Rollout], cfg: &UpdateConfig) -> Result<UpdateStats> {
    let obj = &cfg.objective;
    obj.validate().map_err(RlError::Config)?;
    if rollouts.is_empty() {
        return Err(RlError::BadInput("no rollouts to learn from".into()));
    }
    if cfg.mini_batch_size == 0 || cfg.micro_batch == 0 {
        return Err(RlError::Config("mini_batch_size and micro_batch must be positive".into()));
    }
    if learner.dist.is_some()
        && (!learner.opt.is_distributed() || learner.critic.as_ref().is_some_and(|(_, o)| !o.is_distributed()))
    {
        return Err(RlError::Config(
            "a data-parallel update needs data-parallel optimizers (AdamW::distributed): each rank would step on its partial gradients".into(),
        ));
    }
    let is_ppo = obj.kind == ObjectiveKind::Ppo;
    if is_ppo && learner.critic.is_none() {
        return Err(RlError::Config("PPO needs a critic".into()));
    }
    let kl_coef = obj.kl();
    let use_ref = obj.kind.uses_reference(kl_coef);
    if use_ref && learner.reference.is_none() {
        return Err(RlError::Config(format!("{} with kl_coef {kl_coef} needs a reference model", obj.kind)));
    }
    let policy = &learner.policy.model;
    let n_rows = rollouts.len();

    // Sequence advantages, the sample set S and its partition.
    let outcomes: Vec<SampleOutcome> =
        rollouts.iter().map(|r| SampleOutcome { group: r.group.clone(), reward: r.reward }).collect();
    let seq_adv = sequence_advantages(obj, &outcomes);
    let filters = matches!(obj.kind, ObjectiveKind::Psr | ObjectiveKind::Nsr);
    let selected: Vec<usize> = match (filters, obj.loss_norm) {
        (true, LossNorm::KeptTokens) => (0..n_rows).filter(|&i| seq_adv[i].is_some()).collect(),
        _ => (0..n_rows).collect(),
    };
    let (rank, world) = learner.dist.map_or((0, 1), |pg| (pg.rank(), pg.world()));
    let mini_batches: Vec<Vec<usize>> = selected.chunks(cfg.mini_batch_size).map(<[usize]>::to_vec).collect();
    // Global token count of each mini-batch (the loss normaliser), then this rank's micro-batches.
    let mb_tokens: Vec<usize> =
        mini_batches.iter().map(|mb| mb.iter().map(|&i| rollouts[i].response_ids.len()).sum()).collect();
    let plan: Vec<Vec<Vec<usize>>> = mini_batches
        .iter()
        .map(|mb| owned_rows(mb, rank, world).chunks(cfg.micro_batch).map(<[usize]>::to_vec).collect())
        .collect();
    let mut micro_all: Vec<Vec<usize>> = plan.iter().flatten().cloned().collect();
    let in_plan: std::collections::HashSet<usize> = selected.iter().copied().collect();
    let rest: Vec<usize> = (0..n_rows).filter(|i| !in_plan.contains(i)).collect();
    micro_all.extend(owned_rows(&rest, rank, world).chunks(cfg.micro_batch).map(<[usize]>::to_vec));
    let mine: Vec<usize> = micro_all.iter().flatten().copied().collect();

    // Rollout-policy log-probs and entropies (the update's own micro-batches first).
    let (mut old_logp, mut rollout_ent) = (vec![vec![]; n_rows], vec![vec![]; n_rows]);
    stats_by_row(policy, rollouts, &micro_all, learner.pad, &mut old_logp, &mut rollout_ent)?;
    let mut ref_logp = vec![vec![]; n_rows];
    if use_ref {
        let reference = &learner.reference.expect("checked above").model;
        let mut scratch = vec![vec![]; n_rows];
        let planned: Vec<Vec<usize>> = plan.iter().flatten().cloned().collect();
        stats_by_row(reference, rollouts, &planned, learner.pad, &mut ref_logp, &mut scratch)?;
    }

    // Token advantages (and PPO's old values and returns).
    let mut adv: Vec<Vec<f32>> = vec![vec![]; n_rows];
    let (mut old_values, mut returns) = (vec![vec![]; n_rows], vec![vec![]; n_rows]);
    if is_ppo {
        let (critic, _) = learner.critic.as_ref().expect("checked above");
        tch::no_grad(|| -> Result<()> {
            for mb in plan.iter().flatten() {
                let rows: Vec<&Rollout> = mb.iter().map(|&i| &rollouts[i]).collect();
                let v = Vec::<f32>::try_from(critic.values(&rows, learner.pad)?.to_device(tch::Device::Cpu))?;
                let mut off = 0;
                for &i in mb {
                    let n = rollouts[i].response_ids.len();
                    old_values[i] = v[off..off + n].to_vec();
                    off += n;
                }
            }
            Ok(())
        })?;
        let beta = kl_coef as f32;
        for &i in &mine {
            let n = rollouts[i].response_ids.len();
            // KL-in-reward: −β·(log π_old − log π_ref) on every token, the score on the last.
            let mut r: Vec<f32> =
                (0..n).map(|t| if use_ref { -beta * (old_logp[i][t] - ref_logp[i][t]) } else { 0.0 }).collect();
            r[n - 1] += rollouts[i].reward;
            let (a, ret) = gae(&r, &old_values[i], cfg.critic.gamma as f32, cfg.critic.lam as f32);
            adv[i] = a;
            returns[i] = ret;
        }
        // Whiten the advantages over every response token of the (global) batch.
        match learner.dist {
            None => {
                let mut flat: Vec<f32> = adv.iter().flatten().copied().collect();
                whiten(&mut flat);
                let mut off = 0;
                for a in adv.iter_mut() {
                    let n = a.len();
                    a.copy_from_slice(&flat[off..off + n]);
                    off += n;
                }
            }
            Some(pg) => {
                let mut sums = [0.0f64, 0.0];
                for a in adv.iter() {
                    sums[0] += a.iter().map(|&v| v as f64).sum::<f64>();
                    sums[1] += a.len() as f64;
                }
                pg.all_reduce_f64(&mut sums, ReduceOp::Sum).map_err(|e| RlError::Dist(e.to_string()))?;
                let mean = sums[0] / sums[1].max(1.0);
                let mut sq = [adv.iter().flatten().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()];
                pg.all_reduce_f64(&mut sq, ReduceOp::Sum).map_err(|e| RlError::Dist(e.to_string()))?;
                if sums[1] >= 2.0 {
                    let inv = 1.0 / (sq[0] / (sums[1] - 1.0) + 1e-8).sqrt();
                    for v in adv.iter_mut().flatten() {
                        *v = ((*v as f64 - mean) * inv) as f32;
                    }
                }
            }
        }
    } else {
        for i in 0..n_rows {
            adv[i] = vec![seq_adv[i].unwrap_or(0.0); rollouts[i].response_ids.len()];
        }
    }

    let coefs = LossCoefs {
        clip_eps: obj.clip_eps,
        entropy_coef: obj.entropy_coef,
        kl_coef: if obj.kind == ObjectiveKind::Grpo { kl_coef } else { 0.0 },
    };
    let mut stats = UpdateStats { samples: n_rows, kept_samples: selected.len(), ..Default::default() };
    let mut total = LossSums::default();
    let (mut norm_sum, mut vsum, mut vclip, mut vnorm) = (0.0, 0.0, 0usize, 0.0);
    let mut adv_sum = 0.0f64;
    for (mb, &n_s) in plan.iter().zip(&mb_tokens) {
        learner.opt.zero_grad();
        for micro in mb {
            let rows: Vec<&Rollout> = micro.iter().map(|&i| &rollouts[i]).collect();
            let (o, a) = (concat(micro, &old_logp), concat(micro, &adv));
            adv_sum += a.iter().map(|&x| x as f64).sum::<f64>();
            let r = use_ref.then(|| concat(micro, &ref_logp));
            let inputs =
                TokenInputs { old_logp: &o, advantages: &a, ref_logp: r.as_deref().filter(|_| coefs.kl_coef > 0.0) };
            let chunk = super::logprob::head_chunk_rows(policy.cfg.vocab_size);
            let sums = backward_micro_batch(policy, &rows, &inputs, &coefs, n_s as f64, learner.pad, chunk)?;
            total.add(&sums);
        }
        let st = learner.opt.step()?;
        stats.optimizer_steps += 1;
        stats.skipped_steps += st.skipped as usize;
        norm_sum += st.grad_norm;
        stats.grad_norm_max = stats.grad_norm_max.max(st.grad_norm);
        if let Some((critic, copt)) = learner.critic.as_mut() {
            copt.zero_grad();
            for micro in mb {
                let rows: Vec<&Rollout> = micro.iter().map(|&i| &rollouts[i]).collect();
                let (vpred, tape) = critic.values_tape(&rows, learner.pad)?;
                let (s, c) = value_backward(
                    &vpred,
                    &concat(micro, &old_values),
                    &concat(micro, &returns),
                    cfg.critic.value_clip,
                    n_s as f64,
                )?;
                tape.backward(&critic.body.model)?;
                vsum += s;
                vclip += c;
            }
            vnorm += copt.step()?.grad_norm;
        }
    }
    if let Some(pg) = learner.dist {
        let derr = |e: crate::dist::DistError| RlError::Dist(e.to_string());
        let mut v = [
            total.surrogate,
            total.entropy,
            total.kl,
            total.clipped as f64,
            total.ratio_outside as f64,
            total.tokens as f64,
            adv_sum,
            vsum,
            vclip as f64,
        ];
        pg.all_reduce_f64(&mut v, ReduceOp::Sum).map_err(derr)?;
        let mut m = [total.max_abs_log_ratio];
        pg.all_reduce_f64(&mut m, ReduceOp::Max).map_err(derr)?;
        (total.surrogate, total.entropy, total.kl) = (v[0], v[1], v[2]);
        (total.clipped, total.ratio_outside, total.tokens) = (v[3] as usize, v[4] as usize, v[5] as usize);
        (adv_sum, vsum, vclip, total.max_abs_log_ratio) = (v[6], v[7], v[8] as usize, m[0]);
        // Every row's per-token rollout entropies (and log-probs) on every rank: each row has one
        // owner, so a sum over ranks of zero-filled vectors gathers them.
        // (Decided the same way on every rank: each of these is a collective.)
        for (per_row, wanted) in [(&mut rollout_ent, true), (&mut old_logp, use_ref), (&mut ref_logp, use_ref)] {
            if !wanted {
                continue;
            }
            let mut flat: Vec<f64> = vec![];
            for (i, r) in rollouts.iter().enumerate() {
                let n = r.response_ids.len();
                if per_row[i].len() == n {
                    flat.extend(per_row[i].iter().map(|&x| x as f64));
                } else {
                    flat.extend(std::iter::repeat_n(0.0, n));
                }
            }
            pg.all_reduce_f64(&mut flat, ReduceOp::Sum).map_err(derr)?;
            let mut off = 0;
            for (i, r) in rollouts.iter().enumerate() {
                let n = r.response_ids.len();
                per_row[i] = flat[off..off + n].iter().map(|&x| x as f32).collect();
                off += n;
            }
        }
    }
    let nt = total.tokens.max(1) as f64;
    stats.kept_tokens = total.tokens;
    stats.pg_loss = total.surrogate / nt;
    stats.entropy = total.entropy / nt;
    stats.kl = total.kl / nt;
    stats.loss = stats.pg_loss - obj.entropy_coef * stats.entropy + coefs.kl_coef * stats.kl;
    stats.clip_frac = total.clipped as f64 / nt;
    stats.ratio_outside_frac = total.ratio_outside as f64 / nt;
    stats.max_abs_log_ratio = total.max_abs_log_ratio;
    stats.advantage_mean = adv_sum / nt;
    let steps = stats.optimizer_steps.max(1) as f64;
    stats.grad_norm = norm_sum / steps;
    let all_ent: Vec<f32> = rollout_ent.iter().flatten().copied().collect();
    stats.rollout_entropy = all_ent.iter().map(|&x| x as f64).sum::<f64>() / all_ent.len().max(1) as f64;
    stats.rollout_token_entropy = rollout_ent;
    if use_ref {
        let (mut d, mut n) = (0.0f64, 0usize);
        for &i in &selected {
            d += old_logp[i].iter().zip(&ref_logp[i]).map(|(a, b)| (a - b) as f64).sum::<f64>();
            n += old_logp[i].len();
        }
        stats.rollout_kl = Some(d / n.max(1) as f64);
    }
    if is_ppo {
        stats.value_loss = Some(0.5 * vsum / nt);
        stats.value_clip_frac = Some(vclip as f64 / nt);
        stats.critic_grad_norm = Some(vnorm / steps);
    }
    Ok(stats)
}
