//! Generation with a static-shape decode step: the tch path that a CUDA graph can capture.
//!
//! [`crate::model::generate`] grows its attention window by one position a step and rebuilds the
//! mask each step, so every step has new shapes. Here each layer's cache is one `[B, K, M, D]`
//! slot buffer per key and value (M = the longest prompt + cap of any row); row b's tokens sit at
//! positions `[0, len_b)`; a step writes each row's token at its own `len_b` (a scatter) and
//! attends over all M positions under a mask built on the device from the lengths. The step's
//! inputs (`ids` [B, 1], `lens` [B]) and outputs (the top-k values/ids and row sums, or full
//! logits) are fixed tensors updated in place, so the whole step — embedding, every layer, the LM
//! head, top-k — has the same shapes and addresses every time: on CUDA it is captured once as a
//! CUDA graph ([`super::cuda_graph`], `--features cuda`) and replayed, one launch instead of
//! hundreds. Elsewhere the same step runs eagerly (tested on the CPU against `generate`: same
//! seeds, same tokens).
//!
//! Tokens are drawn on the host from the step's `[B, k]` candidates exactly as in `generate`
//! (one host sync a step), so both paths draw the same tokens from the same logits.

use super::generate::{
    check_rows, sampling_threads, top_candidates, unique_prompts, GenRequest, Generation, StepScores,
};
use super::kv_cache::KvCache;
use super::qwen::Qwen;
use super::sampler::{row_rng, Sampler, SamplingParams};
use super::{ModelError, Result};
use tch::{Device, Kind, Tensor};

/// The decode step's fixed tensors.
struct Step {
    /// per layer: key and value slots [B, K, M, D]
    slots: Vec<(Tensor, Tensor)>,
    /// [B, 1] int64: each row's token for this step
    ids: Tensor,
    /// [B] int64: each row's cache length before this step (where its token goes)
    lens: Tensor,
    /// [M] int64: 0..M (for the mask)
    arange: Tensor,
    /// outputs: top-k values [B, k] f32, ids [B, k] int64 and row sums [B] f32; or logits [B, V]
    vals: Tensor,
    top_ids: Tensor,
    sums: Tensor,
    top: Option<i64>,
}

impl Step {
    /// One decode step from `ids`/`lens` into the output tensors (in place; fixed shapes).
    fn run(&self, model: &Qwen) {
        let m = self.arange.size()[0];
        let b = self.lens.size()[0];
        let positions = self.lens.view([b, 1]);
        // Row b attends to positions 0..=len_b (its cache and the token written now).
        let mask = self.arange.view([1, m]).le_tensor(&positions).view([b, 1, 1, m]); // [B, 1, 1, M]
        let hidden = model.model.forward_slots(&self.ids, &positions, &mask, &self.slots); // [B, 1, C]
        self.write_outputs(&model.lm_head(&hidden.squeeze_dim(1)).to_kind(Kind::Float));
        // [B, V]
    }

    /// Logits [B, V] (f32) → the output tensors (top-k values, ids and row sums; or all).
    fn write_outputs(&self, logits: &Tensor) {
        match self.top {
            Some(k) => {
                let (v, i) = logits.topk(k, -1, true, true); // [B, k] each
                self.vals.shallow_clone().copy_(&v);
                self.top_ids.shallow_clone().copy_(&i);
                self.sums.shallow_clone().copy_(&logits.sum_dim_intlist(-1, false, Kind::Float));
            }
            None => self.vals.shallow_clone().copy_(logits),
        }
    }

    /// The outputs on the host.
    fn scores(&self, vocab: usize) -> Result<StepScores> {
        let host = |t: &Tensor| t.to_device(Device::Cpu).contiguous().view([-1]);
        Ok(match self.top {
            Some(k) => StepScores::top(
                Vec::<f32>::try_from(host(&self.vals))?,
                Vec::<i64>::try_from(host(&self.top_ids))?,
                Vec::<f32>::try_from(host(&self.sums))?,
                k as usize,
            ),
            None => StepScores::full(Vec::<f32>::try_from(host(&self.vals))?, vocab),
        })
    }
}

/// Which tch decode loop generates (`sample --backend tch --tch-decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TchDecode {
    /// [`crate::model::generate`]: the attention window grows a position a step.
    #[default]
    Dynamic,
    /// [`generate_static`], every step launched eagerly.
    Static,
    /// [`generate_static`], the step captured once as a CUDA graph (CUDA, `--features cuda`).
    CudaGraph,
}

impl TchDecode {
    /// Generates with this loop; the same tokens whichever is chosen.
    pub fn generate(
        self,
        model: &Qwen,
        reqs: &[GenRequest],
        params: &SamplingParams,
        base_seed: u64,
        pad_id: i64,
    ) -> Result<Vec<Generation>> {
        match self {
            TchDecode::Dynamic => super::generate::generate(model, reqs, params, base_seed, pad_id),
            TchDecode::Static => generate_static(model, reqs, params, base_seed, pad_id, StepMode::Eager),
            TchDecode::CudaGraph => generate_static(model, reqs, params, base_seed, pad_id, StepMode::CudaGraph),
        }
    }
}

/// How the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// Every step launches its kernels (any device).
    Eager,
    /// CUDA: the step is captured once as a CUDA graph and replayed (`--features cuda`).
    CudaGraph,
}

/// Batched generation with the static-shape step (see the module docs); same contract and same
/// tokens as [`crate::model::generate`].
pub fn generate_static(
    model: &Qwen,
    reqs: &[GenRequest],
    params: &SamplingParams,
    base_seed: u64,
    pad_id: i64,
    mode: StepMode,
) -> Result<Vec<Generation>> {
    let vocab = model.cfg.vocab_size;
    let dev = model.device();
    if mode == StepMode::CudaGraph && !dev.is_cuda() {
        return Err(ModelError::BadInput("CUDA-graph decoding needs the model on a CUDA device".into()));
    }
    let b = reqs.len();
    let caps = check_rows(model, reqs, params)?;
    let max_new = caps.iter().copied().max().unwrap_or(0);
    let mut out: Vec<Generation> = vec![Generation { tokens: vec![], stopped: false }; b];
    if b == 0 || max_new == 0 {
        return Ok(out);
    }
    let sampler = Sampler::new(params.clone());
    let mut rngs: Vec<_> = reqs.iter().map(|r| row_rng(base_seed, r.problem_id, r.sample_idx)).collect();
    let threads = sampling_threads(tch::get_num_threads().max(0) as usize);
    // Greedy takes whole rows, as in `generate` (torch's topk does not promise the lower id on ties).
    let top = top_candidates(params, vocab as usize).filter(|_| !params.is_greedy()).map(|k| k as i64);
    let m = reqs.iter().zip(&caps).map(|(r, &c)| r.prompt.len() + c).max().unwrap_or(1) as i64;

    tch::no_grad(|| -> Result<Vec<Generation>> {
        let cfg = &model.cfg;
        let (kh, d, kind) = (cfg.num_key_value_heads, cfg.head_dim, model.kind());
        // Prefill the distinct prompts (left-padded, the usual path), then copy each row's real
        // positions to the start of its slot row.
        let prompts: Vec<Vec<i64>> = reqs.iter().map(|r| r.prompt.clone()).collect();
        let (unique, row_of) = unique_prompts(&prompts);
        let u_prompts: Vec<Vec<i64>> = unique.iter().map(|&i| prompts[i].clone()).collect();
        let (u_ids, u_mask) = super::generate::left_pad(&u_prompts, pad_id, dev); // [U, L]
        let l = u_ids.size()[1];
        let padded = u_prompts.iter().any(|p| p.len() as i64 != l);
        let mut cache = KvCache::new(cfg, unique.len() as i64, l, kind, dev);
        let hidden = model.forward_hidden(&u_ids, padded.then_some(&u_mask), Some(&mut cache))?; // [U, L, C]
        let u_logits = model.lm_head(&hidden.narrow(1, l - 1, 1)).squeeze_dim(1).to_kind(Kind::Float); // [U, V]
        let mut slots = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for layer in 0..cfg.num_hidden_layers as usize {
            let (ck, cv) = cache.layer(layer).expect("every layer was prefilled"); // [U, K, L, D]
            let (sk, sv) =
                (Tensor::zeros([b as i64, kh, m, d], (kind, dev)), Tensor::zeros([b as i64, kh, m, d], (kind, dev)));
            for (i, &u) in row_of.iter().enumerate() {
                let n = prompts[i].len() as i64;
                sk.get(i as i64).narrow(1, 0, n).copy_(&ck.get(u).narrow(1, l - n, n));
                sv.get(i as i64).narrow(1, 0, n).copy_(&cv.get(u).narrow(1, l - n, n));
            }
            slots.push((sk, sv));
        }
        drop(cache);
        let index = Tensor::from_slice(&row_of).to_device(dev);
        let first = u_logits.index_select(0, &index); // [B, V]
        let width = top.unwrap_or(vocab);
        let step = Step {
            slots,
            ids: Tensor::zeros([b as i64, 1], (Kind::Int64, dev)),
            lens: Tensor::zeros([b as i64], (Kind::Int64, dev)),
            arange: Tensor::arange(m, (Kind::Int64, dev)),
            vals: Tensor::zeros([b as i64, width], (Kind::Float, dev)),
            top_ids: Tensor::zeros([b as i64, width], (Kind::Int64, dev)),
            sums: Tensor::zeros([b as i64], (Kind::Float, dev)),
            top,
        };
        // The prefill's last logits go through the same output tensors.
        step.write_outputs(&first);
        let mut lens: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
        let mut done = vec![false; b];
        let mut graph: Option<super::cuda_graph::CudaGraph> = None;
        for n in 0..max_new {
            let scores = step.scores(vocab as usize)?;
            if let Some(row) = scores.non_finite_row(&done) {
                return Err(ModelError::NonFiniteLogits { step: n, row });
            }
            let next = scores.draw(&sampler, params, &caps, pad_id, &mut rngs, &mut done, &mut out, threads);
            if n + 1 == max_new || done.iter().all(|&d| d) {
                break;
            }
            // Finished rows write their padding at position 0 of their own row (never read again).
            let at: Vec<i64> = lens.iter().zip(&done).map(|(&l, &d)| if d { 0 } else { l }).collect();
            step.ids.shallow_clone().copy_(&Tensor::from_slice(&next).view([b as i64, 1]));
            step.lens.shallow_clone().copy_(&Tensor::from_slice(&at));
            match mode {
                StepMode::Eager => step.run(model),
                StepMode::CudaGraph => match &graph {
                    Some(g) => g.replay()?,
                    None => graph = Some(super::cuda_graph::CudaGraph::capture(dev, || step.run(model))?),
                },
            }
            for (l, &d) in lens.iter_mut().zip(&done) {
                if !d {
                    *l += 1;
                }
            }
        }
        Ok(out)
    })
}
