//! Teacher-forced log-probs and entropies of response tokens.
//!
//! A batch of rollouts is packed as right-padded sequences `prompt ++ response` ([B, T], mask
//! 1 on real tokens, so positions are 0..len). The hidden state that predicts response token j of
//! row i sits at index `p_i + j − 1`; only those [N, C] rows (N = response tokens of the batch)
//! go through the LM head, and in chunks of [`head_chunk_rows`] rows, so no `[B, T, V]` tensor
//! (20 GB at B = 8, T = 4096, V = 151,936 in f32) is ever made. The training path backpropagates
//! chunk by chunk through the head (see [`crate::rl::loss`]), which bounds the logits memory to one
//! chunk.

use super::rollout::Rollout;
use super::Result;
use crate::model::{LayerTape, Qwen};
use tch::{Device, Kind, Tensor};

/// Rollouts packed for one forward pass.
pub struct Packed {
    /// [B, T] int64, right-padded.
    pub ids: Tensor,
    /// [B, T] int64: 1 real, 0 padding.
    pub mask: Tensor,
    /// [N] int64: flat index into [B·T] of the hidden state predicting each response token.
    pub gather: Tensor,
    /// [N] int64: the response tokens.
    pub targets: Tensor,
    /// Response tokens of each row (their sum is N).
    pub lens: Vec<usize>,
}

/// Packs `rows` for a forward pass on `device`. `pad` may be any valid id (never attended).
pub fn pack(rows: &[&Rollout], pad: i64, device: Device) -> Packed {
    let t = rows.iter().map(|r| r.prompt_ids.len() + r.response_ids.len()).max().unwrap_or(1);
    let b = rows.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    let mut gather = vec![];
    let mut targets = vec![];
    let mut lens = Vec::with_capacity(b);
    for (i, r) in rows.iter().enumerate() {
        let (p, n) = (r.prompt_ids.len(), r.response_ids.len());
        ids.extend(r.prompt_ids.iter().chain(&r.response_ids).copied());
        ids.extend(std::iter::repeat_n(pad, t - p - n));
        mask.extend(std::iter::repeat_n(1i64, p + n).chain(std::iter::repeat_n(0, t - p - n)));
        gather.extend((0..n).map(|j| (i * t + p + j - 1) as i64));
        targets.extend_from_slice(&r.response_ids);
        lens.push(n);
    }
    let shape = [b as i64, t as i64];
    Packed {
        ids: Tensor::from_slice(&ids).view(shape).to_device(device),
        mask: Tensor::from_slice(&mask).view(shape).to_device(device),
        gather: Tensor::from_slice(&gather).to_device(device),
        targets: Tensor::from_slice(&targets).to_device(device),
        lens,
    }
}

/// Rows of the LM head applied at once: a [rows, V] f32 chunk of about 256 MiB (at least 16).
pub fn head_chunk_rows(vocab: i64) -> i64 {
    ((1i64 << 28) / (4 * vocab.max(1))).clamp(16, 8192)
}

/// Hidden states predicting each response token: [N, C] (with autograd when enabled).
pub fn response_hidden(model: &Qwen, p: &Packed) -> Result<Tensor> {
    let hidden = model.forward_hidden(&p.ids, Some(&p.mask), None)?; // [B, T, C]
    let c = hidden.size()[2];
    Ok(hidden.view([-1, c]).index_select(0, &p.gather)) // [N, C]
}

/// [`response_hidden`] for training: with the model's gradient checkpointing on, the layers keep
/// only their inputs and the returned tape must be run ([`LayerTape::backward`]) after every
/// backward into the hidden states.
pub fn response_hidden_tape(model: &Qwen, p: &Packed) -> Result<(Tensor, LayerTape)> {
    let (hidden, tape) = model.forward_hidden_tape(&p.ids, Some(&p.mask))?; // [B, T, C]
    let c = hidden.size()[2];
    Ok((hidden.view([-1, c]).index_select(0, &p.gather), tape)) // [N, C]
}

/// The accumulation dtype for values of `kind`: f64 stays f64, everything else is computed in f32.
pub fn acc_kind(kind: Kind) -> Kind {
    if kind == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// log π(target) and the entropy of π at each row of `logits` ([n, V], any float dtype) →
/// ([n], [n]) in f32 (f64 for f64 logits).
pub fn logp_and_entropy(logits: &Tensor, targets: &Tensor) -> (Tensor, Tensor) {
    let acc = acc_kind(logits.kind());
    let logp_all = logits.log_softmax(-1, acc); // [n, V]
    let logp = logp_all.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1); // [n]
    let ent = -(logp_all.exp() * &logp_all).sum_dim_intlist(-1, false, acc); // [n]
    (logp, ent)
}

/// Per-token log-probs and entropies of every response token of `rows` under `model`, without
/// gradients, in micro-batches of `micro` rows: (logp, entropy), each flat over the rows'
/// response tokens in order, on the host.
pub fn token_stats(model: &Qwen, rows: &[&Rollout], micro: usize, pad: i64) -> Result<(Vec<f32>, Vec<f32>)> {
    let chunk = head_chunk_rows(model.cfg.vocab_size);
    let (mut lp, mut en) = (vec![], vec![]);
    tch::no_grad(|| -> Result<()> {
        for mb in rows.chunks(micro.max(1)) {
            let p = pack(mb, pad, model.device());
            let h = response_hidden(model, &p)?; // [N, C]
            let n = h.size()[0];
            let mut s = 0;
            while s < n {
                let len = chunk.min(n - s);
                let logits = model.lm_head(&h.narrow(0, s, len)); // [len, V]
                let (l, e) = logp_and_entropy(&logits, &p.targets.narrow(0, s, len));
                lp.extend(Vec::<f32>::try_from(l.to_kind(Kind::Float).to_device(Device::Cpu))?);
                en.extend(Vec::<f32>::try_from(e.to_kind(Kind::Float).to_device(Device::Cpu))?);
                s += len;
            }
        }
        Ok(())
    })?;
    Ok((lp, en))
}
