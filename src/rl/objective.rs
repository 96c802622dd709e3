//! The five objectives of the paper as one closed enum, and their advantages as pure `f32` code
//! (no libtorch), following the reference code (TianHongZXY/RLVR-Decomposed, a verl fork; see
//! ../shared/PAPER.md §1.2) rather than the paper's prose where the two differ.
//!
//! Rewards are the verifier's outcome score r ∈ {0, 1} (the paper writes ±1; the code maps an
//! incorrect sample's advantage to −1 through `returns − 1`).
//!
//! | objective | kept samples | advantage (every response token of a kept sample) |
//! |---|---|---|
//! | PSR | r = 1 | A = +1 |
//! | NSR | r = 0 | A = −1 |
//! | W-REINFORCE(λ) | all | A = +λ if r = 1, −1 if r = 0 (λ = 1: plain ±1 REINFORCE) |
//! | GRPO | all | A = (r − mean_g) / (std_g + 1e-6), per prompt group g, std with Bessel's correction |
//! | PPO | all | token-level GAE (γ = λ = 1) on KL-penalised rewards, whitened over the batch |
//!
//! PSR/NSR/W-REINFORCE have no mean/std normalisation (it would zero their signal, Appendix C.3),
//! no reference model and no KL. Every objective is optimised through the clipped ratio
//! surrogate; the loss over a mini-batch is token-mean over its kept samples ([`LossNorm`]).

use serde::{Deserialize, Serialize};

/// Which objective (config key `objective.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// PPO with a learned critic, GAE and a KL penalty in the reward (Appendix C.1).
    Ppo,
    /// GRPO: group-normalised outcome advantages plus a k3 KL loss to the initial policy.
    Grpo,
    /// Positive sample reinforcement: learn only from correct samples (A = +1).
    Psr,
    /// Negative sample reinforcement: learn only from incorrect samples (A = −1).
    Nsr,
    /// Weighted REINFORCE: λ·PSR + NSR (the paper's proposal, λ = 0.1).
    WReinforce,
}

impl ObjectiveKind {
    pub const ALL: [ObjectiveKind; 5] =
        [ObjectiveKind::Ppo, ObjectiveKind::Grpo, ObjectiveKind::Psr, ObjectiveKind::Nsr, ObjectiveKind::WReinforce];

    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Ppo => "ppo",
            ObjectiveKind::Grpo => "grpo",
            ObjectiveKind::Psr => "psr",
            ObjectiveKind::Nsr => "nsr",
            ObjectiveKind::WReinforce => "w-reinforce",
        }
    }

    /// Does this objective need a frozen copy of the initial policy (GRPO's KL loss, PPO's KL
    /// penalty)? Only when its KL coefficient is non-zero.
    pub fn uses_reference(self, kl_coef: f64) -> bool {
        matches!(self, ObjectiveKind::Ppo | ObjectiveKind::Grpo) && kl_coef != 0.0
    }
}

impl std::fmt::Display for ObjectiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The denominator of a mini-batch's token-mean (config key `objective.loss_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossNorm {
    /// The reference code: filtered samples leave the batch before it is split into mini-batches,
    /// so S = the kept samples and N_S their response tokens. PSR/NSR then take fewer optimizer
    /// steps, each with a step size independent of how many samples were filtered out.
    KeptTokens,
    /// Ablation: filtered samples stay in the batch with A = 0 (they add tokens to N_S and to the
    /// entropy term), so PSR/NSR take as many steps as the others and their step size shrinks
    /// with the share of filtered samples.
    AllTokens,
}

/// The `[objective]` section of a training config. Defaults are the paper's text (Appendix C.1);
/// where the released code differs, the field's doc names the code's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// `ppo | grpo | psr | nsr | w-reinforce`.
    pub kind: ObjectiveKind,
    /// W-REINFORCE's weight of correct samples (paper: 0.1; the released scripts leave it at the
    /// code default 1.0 unless passed by hand). Ignored by the other objectives.
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Ratio clip ε of the surrogate (paper 0.2); 0 turns clipping off.
    #[serde(default = "default_clip")]
    pub clip_eps: f64,
    /// Entropy bonus coefficient (paper text 1e-4; the released code's default is 1e-3).
    #[serde(default = "default_entropy")]
    pub entropy_coef: f64,
    /// KL coefficient: GRPO's k3 KL loss and PPO's per-token KL penalty in the reward. Left out:
    /// the paper's value for the kind (1e-3 for PPO and GRPO, 0 for PSR/NSR/W-REINFORCE, which
    /// load no reference model); [`ObjectiveConfig::resolve`] fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_coef: Option<f64>,
    /// Token-mean denominator (see [`LossNorm`]).
    #[serde(default = "default_loss_norm")]
    pub loss_norm: LossNorm,
}

fn default_lambda() -> f64 {
    0.1
}
fn default_clip() -> f64 {
    0.2
}
fn default_entropy() -> f64 {
    1e-4
}
fn default_loss_norm() -> LossNorm {
    LossNorm::KeptTokens
}
fn paper_kl(kind: ObjectiveKind) -> f64 {
    if matches!(kind, ObjectiveKind::Ppo | ObjectiveKind::Grpo) {
        1e-3
    } else {
        0.0
    }
}

impl ObjectiveConfig {
    /// The paper's settings for `kind` (KL 1e-3 for PPO and GRPO, none otherwise).
    pub fn paper(kind: ObjectiveKind) -> ObjectiveConfig {
        ObjectiveConfig {
            kind,
            lambda: default_lambda(),
            clip_eps: default_clip(),
            entropy_coef: default_entropy(),
            kl_coef: Some(paper_kl(kind)),
            loss_norm: default_loss_norm(),
        }
    }

    /// The KL coefficient in force.
    pub fn kl(&self) -> f64 {
        self.kl_coef.unwrap_or(paper_kl(self.kind))
    }

    /// Fills in keys left to the kind's default, so the saved config shows every value.
    pub fn resolve(&mut self) {
        self.kl_coef = Some(self.kl());
    }

    /// Refuses values that make no sense (negative coefficients, ε ≥ 1, …).
    pub fn validate(&self) -> Result<(), String> {
        let finite = |k: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("objective.{k} must be finite, got {v}"))
            }
        };
        finite("lambda", self.lambda)?;
        finite("clip_eps", self.clip_eps)?;
        finite("entropy_coef", self.entropy_coef)?;
        finite("kl_coef", self.kl())?;
        if !(0.0..1.0).contains(&self.clip_eps) {
            return Err(format!("objective.clip_eps must be in [0, 1) (0 = no clipping), got {}", self.clip_eps));
        }
        if self.lambda < 0.0 {
            return Err(format!("objective.lambda must be >= 0, got {}", self.lambda));
        }
        if self.kl() < 0.0 {
            return Err(format!("objective.kl_coef must be >= 0, got {}", self.kl()));
        }
        if self.kl() != 0.0 && !matches!(self.kind, ObjectiveKind::Ppo | ObjectiveKind::Grpo) {
            return Err(format!(
                "objective.kl_coef = {} but {} uses no KL (the reference code drops the reference model); set it to 0",
                self.kl(),
                self.kind
            ));
        }
        Ok(())
    }
}

/// Outcome advantage of one sample under PSR, NSR or W-REINFORCE: `None` when the objective
/// filters the sample out. `reward` is 1 (correct) or 0 (incorrect).
///
/// The reference code: returns = r on every valid token; `positive`: A = returns on the correct
/// subset; `negative`: A = returns − 1 on the incorrect subset; `weighted`: A[correct] = λ·returns,
/// A[incorrect] = returns − 1.
pub fn outcome_advantage(kind: ObjectiveKind, lambda: f64, reward: f32) -> Option<f32> {
    let correct = reward > 0.5;
    match kind {
        ObjectiveKind::Psr => correct.then_some(reward),
        ObjectiveKind::Nsr => (!correct).then_some(reward - 1.0),
        ObjectiveKind::WReinforce => Some(if correct { lambda as f32 * reward } else { reward - 1.0 }),
        ObjectiveKind::Grpo | ObjectiveKind::Ppo => None,
    }
}

/// GRPO advantages of one prompt group: (r − mean) / (std + 1e-6), std with Bessel's correction
/// (as `torch.std`). A group of one sample gets mean 0, std 1 (verl's rule), i.e. A = r.
pub fn grpo_advantages(rewards: &[f32]) -> Vec<f32> {
    const EPS: f32 = 1e-6;
    let n = rewards.len();
    if n == 0 {
        return vec![];
    }
    let (mean, std) = if n == 1 {
        (0.0, 1.0)
    } else {
        let mean = rewards.iter().sum::<f32>() / n as f32;
        let var = rewards.iter().map(|r| (r - mean) * (r - mean)).sum::<f32>() / (n - 1) as f32;
        (mean, var.sqrt())
    };
    rewards.iter().map(|r| (r - mean) / (std + EPS)).collect()
}

/// Generalised advantage estimation over one response (`rewards`, `values`: [T], token order):
/// δ_t = r_t + γ·V_{t+1} − V_t (V_T = 0), A_t = δ_t + γλ·A_{t+1}; returns R_t = A_t + V_t.
/// (verl's `compute_gae_advantage_return`, one row.)
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lam: f32) -> (Vec<f32>, Vec<f32>) {
    let t = rewards.len();
    assert_eq!(values.len(), t, "rewards and values must have one entry per response token");
    let mut adv = vec![0.0f32; t];
    let mut last = 0.0f32;
    for i in (0..t).rev() {
        let next_v = if i + 1 < t { values[i + 1] } else { 0.0 };
        let delta = rewards[i] + gamma * next_v - values[i];
        last = delta + gamma * lam * last;
        adv[i] = last;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens `values` in place over all entries: (x − mean) / sqrt(var + 1e-8), var with Bessel's
/// correction (verl's `masked_whiten` with `shift_mean=True` over the response tokens of a batch).
pub fn whiten(values: &mut [f32]) {
    let n = values.len();
    if n < 2 {
        return;
    }
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let inv = 1.0 / (var + 1e-8).sqrt();
    for v in values.iter_mut() {
        *v = ((*v as f64 - mean) * inv) as f32;
    }
}

/// One sample of a rollout batch, as the advantage rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutcome {
    /// Prompt group (the `n` samples of one prompt share it).
    pub group: String,
    /// 1 (correct) or 0 (incorrect).
    pub reward: f32,
}

/// Sequence-level advantages for PSR, NSR, W-REINFORCE and GRPO: one entry per sample, `None`
/// for a sample the objective filters out. (PPO's are token-level: see [`gae`].)
pub fn sequence_advantages(cfg: &ObjectiveConfig, samples: &[SampleOutcome]) -> Vec<Option<f32>> {
    match cfg.kind {
        ObjectiveKind::Ppo => vec![None; samples.len()],
        ObjectiveKind::Grpo => {
            let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
            for (i, s) in samples.iter().enumerate() {
                groups.entry(&s.group).or_default().push(i);
            }
            let mut out = vec![None; samples.len()];
            for idx in groups.values() {
                let r: Vec<f32> = idx.iter().map(|&i| samples[i].reward).collect();
                for (&i, a) in idx.iter().zip(grpo_advantages(&r)) {
                    out[i] = Some(a);
                }
            }
            out
        }
        kind => samples.iter().map(|s| outcome_advantage(kind, cfg.lambda, s.reward)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ObjectiveKind) -> ObjectiveConfig {
        ObjectiveConfig::paper(kind)
    }

    fn outcomes(rewards: &[(&str, f32)]) -> Vec<SampleOutcome> {
        rewards.iter().map(|(g, r)| SampleOutcome { group: g.to_string(), reward: *r }).collect()
    }

    #[test]
    fn psr_keeps_correct_with_plus_one_nsr_keeps_incorrect_with_minus_one() {
        let s = outcomes(&[("a", 1.0), ("a", 0.0), ("b", 0.0), ("b", 1.0)]);
        assert_eq!(sequence_advantages(&cfg(ObjectiveKind::Psr), &s), vec![Some(1.0), None, None, Some(1.0)]);
        assert_eq!(sequence_advantages(&cfg(ObjectiveKind::Nsr), &s), vec![None, Some(-1.0), Some(-1.0), None]);
    }

    #[test]
    fn w_reinforce_weights_correct_by_lambda_and_lambda_one_is_reinforce() {
        let s = outcomes(&[("a", 1.0), ("a", 0.0)]);
        assert_eq!(sequence_advantages(&cfg(ObjectiveKind::WReinforce), &s), vec![Some(0.1), Some(-1.0)]);
        let one = ObjectiveConfig { lambda: 1.0, ..cfg(ObjectiveKind::WReinforce) };
        // Plain REINFORCE with a ±1 reward: A = 2r − 1.
        assert_eq!(sequence_advantages(&one, &s), vec![Some(1.0), Some(-1.0)]);
        // λ·PSR + NSR, sample by sample.
        for r in [0.0f32, 1.0] {
            let psr = outcome_advantage(ObjectiveKind::Psr, 0.3, r).unwrap_or(0.0);
            let nsr = outcome_advantage(ObjectiveKind::Nsr, 0.3, r).unwrap_or(0.0);
            assert_eq!(outcome_advantage(ObjectiveKind::WReinforce, 0.3, r), Some(0.3 * psr + nsr));
        }
    }

    #[test]
    fn grpo_normalises_per_group_with_bessel_std() {
        // Group a: rewards 1, 0, 0, 1 → mean 0.5, std (Bessel) = sqrt(1/3).
        let s = outcomes(&[("a", 1.0), ("a", 0.0), ("b", 1.0), ("a", 0.0), ("a", 1.0), ("b", 1.0)]);
        let a = sequence_advantages(&cfg(ObjectiveKind::Grpo), &s);
        let want = 0.5 / ((1.0f32 / 3.0).sqrt() + 1e-6);
        for (i, sign) in [(0, 1.0), (1, -1.0), (3, -1.0), (4, 1.0)] {
            assert!((a[i].unwrap() - sign * want).abs() < 1e-6, "{a:?}");
        }
        // An all-correct group has std 0: advantages are exactly 0 (kept, no signal).
        assert_eq!((a[2], a[5]), (Some(0.0), Some(0.0)));
        assert_eq!(grpo_advantages(&[1.0]), vec![1.0 / (1.0 + 1e-6)]);
    }

    #[test]
    fn gae_on_a_hand_computed_toy() {
        // γ = λ = 1: A_t = Σ_{t' ≥ t} r_t' − V_t.
        let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.25, 0.75], 1.0, 1.0);
        assert_eq!(a, vec![0.5, 0.75, 0.25]);
        assert_eq!(r, vec![1.0, 1.0, 1.0]);
        // γ = 0.5, λ = 0.5: δ = [0 + .5·.25 − .5, 0 + .5·.75 − .25, 1 − .75] = [−.375, .125, .25];
        // A_2 = .25, A_1 = .125 + .25·.25 = .1875, A_0 = −.375 + .25·.1875 = −.328125.
        let (a, _) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.25, 0.75], 0.5, 0.5);
        assert_eq!(a, vec![-0.328125, 0.1875, 0.25]);
    }

    #[test]
    fn whiten_has_zero_mean_unit_bessel_variance() {
        let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
        whiten(&mut v);
        let mean: f32 = v.iter().sum::<f32>() / 4.0;
        let var: f32 = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{v:?}");
    }

    #[test]
    fn config_validation_and_paper_defaults() {
        let c = ObjectiveConfig::paper(ObjectiveKind::Grpo);
        assert_eq!((c.clip_eps, c.entropy_coef, c.kl(), c.lambda), (0.2, 1e-4, 1e-3, 0.1));
        c.validate().unwrap();
        let bad = ObjectiveConfig { kl_coef: Some(1e-3), ..ObjectiveConfig::paper(ObjectiveKind::Nsr) };
        assert!(bad.validate().unwrap_err().contains("uses no KL"));
        let bad = ObjectiveConfig { clip_eps: 1.5, ..ObjectiveConfig::paper(ObjectiveKind::Psr) };
        assert!(bad.validate().unwrap_err().contains("clip_eps"));
        let t: ObjectiveConfig = toml::from_str("kind = \"nsr\"\nloss_norm = \"all-tokens\"").unwrap();
        assert_eq!((t.kind, t.loss_norm, t.kl()), (ObjectiveKind::Nsr, LossNorm::AllTokens, 0.0));
        let g: ObjectiveConfig = toml::from_str("kind = \"grpo\"").unwrap();
        assert_eq!(g.kl(), 1e-3, "left out, the KL coefficient is the paper's for the kind");
        assert!(toml::from_str::<ObjectiveConfig>("kind = \"nsr\"\nlamda = 1").is_err(), "typos are refused");
    }
}
