//! The token-level gradient analysis (paper §4.2, Appendix A): how PSR and NSR move the logits
//! at each response position, by autograd, checked against the closed forms.
//!
//! For a response y_1..y_T with reward R (+1 PSR, −1 NSR) and π_v = softmax(z_t)_v:
//!
//! ```text
//! prob form    (Eq. 6):   L = −R·(1/T)·Σ_t π(y_t)       ∂L/∂z_{t,v} = −(R/T)·π_v·(1[v = y_t] − π_{y_t})
//! logprob form (the code): L = −R·(1/T)·Σ_t log π(y_t)   ∂L/∂z_{t,v} = −(R/T)·(1[v = y_t] − π_v)
//! ```
//!
//! (Appendix A drops the 1/T; it is kept here.) The descent direction −∂L/∂z is what a gradient
//! step adds to the logits: PSR raises the sampled token and lowers the others; NSR lowers the
//! sampled token by π_y(1 − π_y) (prob form) and raises every other token in proportion to π_v
//! ("prior-guided redistribution"); in the logprob form the others move by exactly (R/T)·π_v.

use super::Result;
use crate::model::Qwen;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

/// Precision of the analysis (the logits come from the model in its dtype, then are cast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum AnalysisDType {
    F32,
    F64,
}

impl AnalysisDType {
    fn kind(self) -> Kind {
        match self {
            AnalysisDType::F32 => Kind::Float,
            AnalysisDType::F64 => Kind::Double,
        }
    }
}

/// ∂L/∂z for both loss forms of one reward sign: [T][V] each.
#[derive(Debug, Clone, Serialize)]
pub struct FormGrads {
    pub prob: Vec<Vec<f64>>,
    pub logprob: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grads {
    pub psr: FormGrads,
    pub nsr: FormGrads,
}

/// One unsampled token at a position.
#[derive(Debug, Clone, Serialize)]
pub struct OtherToken {
    pub token: i64,
    pub prob: f64,
    /// The descent direction −∂L/∂z_v for PSR/NSR × prob/logprob form.
    pub psr_prob: f64,
    pub psr_logprob: f64,
    pub nsr_prob: f64,
    pub nsr_logprob: f64,
}

/// The summary behind the paper's figure, per response position.
#[derive(Debug, Clone, Serialize)]
pub struct PositionSummary {
    pub position: usize,
    pub token: i64,
    pub prob: f64,
    /// −∂L/∂z at the sampled token.
    pub sampled_psr_prob: f64,
    pub sampled_psr_logprob: f64,
    pub sampled_nsr_prob: f64,
    pub sampled_nsr_logprob: f64,
    /// For every unsampled token v, −∂L/∂z_v / π_v is one constant per position and form: NSR's
    /// redistribution is proportional to the prior. These are that constant (prob form: R·π_y/T
    /// with the sign of a raise for NSR; logprob form: R/T), and the largest deviation from it
    /// over the unsampled tokens (rounding only).
    pub nsr_prob_ratio: f64,
    pub nsr_logprob_ratio: f64,
    pub ratio_max_deviation: f64,
    /// The most likely unsampled tokens with their changes.
    pub top_others: Vec<OtherToken>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub dtype: AnalysisDType,
    pub tokens: Vec<i64>,
    pub probs: Vec<Vec<f64>>,
    pub grad: Grads,
    /// Largest |autograd − closed form| over both signs, both forms, every position and token.
    pub max_abs_diff: f64,
    pub summary: Vec<PositionSummary>,
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let t = t.to_kind(Kind::Double).to_device(Device::Cpu).contiguous();
    let (r, c) = (t.size()[0], t.size()[1]);
    let flat = Vec::<f64>::try_from(t.view([-1]))?;
    Ok((0..r as usize).map(|i| flat[i * c as usize..(i + 1) * c as usize].to_vec()).collect())
}

/// Runs the analysis for one (prompt, response).
pub fn analyse(model: &Qwen, prompt: &[i64], response: &[i64], dtype: AnalysisDType, top: usize) -> Result<Analysis> {
    if prompt.is_empty() || response.is_empty() {
        return Err(super::RlError::BadInput("prompt and response must be non-empty".into()));
    }
    let v = model.cfg.vocab_size;
    if let Some(bad) = prompt.iter().chain(response).find(|&&t| t < 0 || t >= v) {
        return Err(super::RlError::BadInput(format!("token id {bad} out of range for vocab {v}")));
    }
    let (p, t) = (prompt.len() as i64, response.len() as i64);
    let ids: Vec<i64> = prompt.iter().chain(response).copied().collect();
    // Logits at the positions predicting each response token: [T, V].
    let z0 = tch::no_grad(|| -> Result<Tensor> {
        let x = Tensor::from_slice(&ids).view([1, p + t]).to_device(model.device());
        let logits = model.forward(&x, None, None)?; // [1, P+T, V]
        Ok(logits.squeeze_dim(0).narrow(0, p - 1, t).to_kind(dtype.kind()).to_device(Device::Cpu))
        // [T, V]
    })?;
    let y = Tensor::from_slice(response).view([t, 1]); // [T, 1]
    let inv_t = 1.0 / t as f64;
    let autograd = |r: f64, logprob: bool| -> Result<Tensor> {
        let z = z0.detach().set_requires_grad(true);
        let lp = z.log_softmax(-1, dtype.kind()).gather(-1, &y, false); // [T, 1]
        let per = if logprob { lp } else { lp.exp() };
        let loss = per.sum(dtype.kind()) * (-r * inv_t);
        loss.f_backward()?;
        Ok(z.grad().detach())
    };
    let pi = z0.softmax(-1, dtype.kind()); // [T, V]
    let onehot = Tensor::zeros([t, v], (dtype.kind(), Device::Cpu)).scatter_value(-1, &y, 1.0); // [T, V]
    let pi_y = pi.gather(-1, &y, false); // [T, 1]
    let closed = |r: f64, logprob: bool| -> Tensor {
        if logprob {
            (&onehot - &pi) * (-r * inv_t)
        } else {
            &pi * (&onehot - &pi_y) * (-r * inv_t)
        }
    };
    let mut max_diff = 0.0f64;
    let mut grads = vec![];
    for r in [1.0, -1.0] {
        for logprob in [false, true] {
            let a = autograd(r, logprob)?;
            let c = closed(r, logprob);
            max_diff = max_diff.max((&a - &c).abs().max().to_kind(Kind::Double).f_double_value(&[])?);
            grads.push(a);
        }
    }
    let probs = to_rows(&pi)?;
    let rows: Vec<Vec<Vec<f64>>> = grads.iter().map(to_rows).collect::<Result<_>>()?;
    let mut summary = vec![];
    for (pos, &tok) in response.iter().enumerate() {
        let pr = &probs[pos];
        let d = |k: usize, j: usize| -rows[k][pos][j];
        let ty = tok as usize;
        let mut order: Vec<usize> = (0..pr.len()).filter(|&j| j != ty).collect();
        order.sort_by(|&a, &b| pr[b].partial_cmp(&pr[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        let nsr_prob_ratio = pr[ty] * inv_t;
        let nsr_logprob_ratio = inv_t;
        let mut dev = 0.0f64;
        for &j in &order {
            if pr[j] > 1e-300 {
                dev =
                    dev.max((d(2, j) / pr[j] - nsr_prob_ratio).abs()).max((d(3, j) / pr[j] - nsr_logprob_ratio).abs());
            }
        }
        summary.push(PositionSummary {
            position: pos,
            token: tok,
            prob: pr[ty],
            sampled_psr_prob: d(0, ty),
            sampled_psr_logprob: d(1, ty),
            sampled_nsr_prob: d(2, ty),
            sampled_nsr_logprob: d(3, ty),
            nsr_prob_ratio,
            nsr_logprob_ratio,
            ratio_max_deviation: dev,
            top_others: order
                .iter()
                .take(top)
                .map(|&j| OtherToken {
                    token: j as i64,
                    prob: pr[j],
                    psr_prob: d(0, j),
                    psr_logprob: d(1, j),
                    nsr_prob: d(2, j),
                    nsr_logprob: d(3, j),
                })
                .collect(),
        });
    }
    let mut it = rows.into_iter();
    let (a, b, c, e) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    Ok(Analysis {
        dtype,
        tokens: response.to_vec(),
        probs,
        grad: Grads { psr: FormGrads { prob: a, logprob: b }, nsr: FormGrads { prob: c, logprob: e } },
        max_abs_diff: max_diff,
        summary,
    })
}
