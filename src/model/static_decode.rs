//! Generation with a static-shape decode step: the tch path that a CUDA graph can capture.
//!
//! [`crate::model::generate`] grows its attention window by one position a step and rebuilds the
//! mask each step, so every step has new shapes. Here each layer's cache is one `[B, K, M, D]`
//! slot buffer per key and value (M = the longest prompt + cap of any row); row b's tokens sit at
//! positions `[0, len_b)`; a step writes each row's token at its own `len_b` (a scatter) and
//! attends over the first W positions of the slots under a mask built on the device from the
//! lengths, where the window W is a power-of-two bucket (≥ [`MIN_WINDOW`], ≤ M) that the host
//! knows covers every row at this step (the longest prompt + the step), so early steps of a long
//! generation do not read the whole cache. The step's inputs (`ids` [B, 1], `lens` [B]) and
//! outputs (the top-k values/ids and row sums, or full logits) are fixed tensors updated in place,
//! so the whole step — embedding, every layer, the LM head, top-k, the draw — has the same shapes
//! and addresses every time within a window: on CUDA it is captured once per window as a CUDA
//! graph ([`super::cuda_graph`], `--features cuda`; the graphs share one memory pool) and
//! replayed, one launch instead of hundreds. Elsewhere the same step runs eagerly (tested on the
//! CPU against `generate`: same seeds, same tokens).
//!
//! Tokens are drawn on the device ([`super::device_draw`]: the host sampler's draws as tensor ops,
//! from each row's own uniforms drawn up front), and the step's inputs — each row's newest token
//! and where it goes — are written there too, so a step needs nothing from the host: the CUDA
//! graph holds model step and draw together, and the host looks at the finished flags (and
//! non-finite logits) after steps 1, 2, 4, 8, then every [`POLL_EVERY`] steps, and reads the tokens
//! once at the end. Same seeds, same tokens as `generate` (up to the last-bit caveat in
//! [`super::device_draw`]).

use super::device_draw::{DeviceDraw, Poll};
use super::generate::{check_rows, top_candidates, unique_prompts, GenRequest, Generation, StepHook};
use super::kv_cache::KvCache;
use super::qwen::Qwen;
use super::sampler::{row_rng, SamplingParams};
use super::{ModelError, Result};
use tch::{Kind, Tensor};

/// After the first steps (1, 2, 4, 8), the host checks the finished flags every this many steps:
/// a row set that finishes early costs at most this many idle steps, a host sync each costs one.
pub const POLL_EVERY: usize = 16;

/// The smallest attention window (positions) a decode step reads; windows double from here to M.
pub const MIN_WINDOW: i64 = 128;

/// The window a decode step reads when its rows' caches hold at most `need` positions (this step's
/// token included), with `m` slot positions in all.
fn window(need: i64, m: i64) -> i64 {
    (need.max(1) as u64).next_power_of_two().max(MIN_WINDOW as u64).min(m as u64) as i64
}

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
    /// One decode step from `ids`/`lens` into the output tensors (in place; fixed shapes for a
    /// given window `w`: every row's `lens` must be below it).
    fn run(&self, model: &Qwen, w: i64) {
        let b = self.lens.size()[0];
        let positions = self.lens.view([b, 1]);
        // Row b attends to positions 0..=len_b (its cache and the token written now).
        let mask = self.arange.narrow(0, 0, w).view([1, w]).le_tensor(&positions).view([b, 1, 1, w]); // [B, 1, 1, W]
        let slots: Vec<(Tensor, Tensor)> =
            self.slots.iter().map(|(k, v)| (k.narrow(2, 0, w), v.narrow(2, 0, w))).collect();
        let hidden = model.model.forward_slots(&self.ids, &positions, &mask, &slots); // [B, 1, C]
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
}

/// Which tch decode loop generates (`sample --backend tch --tch-decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TchDecode {
    /// [`crate::model::generate`]: the attention window grows a position a step.
    #[default]
    Dynamic,
    /// The fixed-shape step (this module), every step launched eagerly.
    Static,
    /// The fixed-shape step captured as CUDA graphs, one per window (CUDA, `--features cuda`).
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
        self.generate_with(model, reqs, params, base_seed, pad_id, &mut |_| Ok(()))
    }

    /// [`TchDecode::generate`], calling `hook` around the decode steps.
    pub fn generate_with(
        self,
        model: &Qwen,
        reqs: &[GenRequest],
        params: &SamplingParams,
        base_seed: u64,
        pad_id: i64,
        hook: &mut StepHook,
    ) -> Result<Vec<Generation>> {
        let mode = match self {
            TchDecode::Dynamic => return super::generate::generate_with(model, reqs, params, base_seed, pad_id, hook),
            TchDecode::Static => StepMode::Eager,
            TchDecode::CudaGraph => StepMode::CudaGraph,
        };
        generate_static(model, reqs, params, base_seed, pad_id, mode, hook)
    }
}

/// How the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepMode {
    /// Every step launches its kernels (any device).
    Eager,
    /// CUDA: the step is captured once as a CUDA graph and replayed (`--features cuda`).
    CudaGraph,
}

/// Batched generation with the static-shape step (see the module docs), calling `hook` around the
/// decode steps; same contract and same tokens as [`crate::model::generate`]. Reached through
/// [`TchDecode`].
fn generate_static(
    model: &Qwen,
    reqs: &[GenRequest],
    params: &SamplingParams,
    base_seed: u64,
    pad_id: i64,
    mode: StepMode,
    hook: &mut StepHook,
) -> Result<Vec<Generation>> {
    let vocab = model.cfg.vocab_size;
    let dev = model.device();
    if mode == StepMode::CudaGraph && !dev.is_cuda() {
        return Err(ModelError::BadInput("CUDA-graph decoding needs the model on a CUDA device".into()));
    }
    let b = reqs.len();
    let caps = check_rows(model, reqs, params)?;
    let max_new = caps.iter().copied().max().unwrap_or(0);
    if b == 0 || max_new == 0 {
        return Ok(vec![Generation { tokens: vec![], stopped: false }; b]);
    }
    let mut rngs: Vec<_> = reqs.iter().map(|r| row_rng(base_seed, r.problem_id, r.sample_idx)).collect();
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
        let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let draw = DeviceDraw::new(params, top.map(|k| k as usize), &caps, &prompt_lens, &mut rngs, pad_id, dev);
        let draw_step = || draw.draw(&step.vals, top.map(|_| (&step.top_ids, &step.sums)));
        // The prefill's last logits go through the same output tensors and the same draw.
        step.write_outputs(&first);
        draw_step();
        let decode = |w: i64| {
            draw.feed(&step.ids, &step.lens);
            step.run(model, w);
            draw_step();
        };
        let longest = prompt_lens.iter().copied().max().unwrap_or(1) as i64;
        // One graph per window, captured on first use, all in the first graph's memory pool.
        let mut graphs: Vec<(i64, super::cuda_graph::CudaGraph)> = vec![];
        for n in 1..max_new {
            if n.is_power_of_two() && n <= POLL_EVERY || n % POLL_EVERY == 0 {
                match draw.poll()? {
                    Poll::Running => {}
                    Poll::AllDone => break,
                    Poll::NonFinite { step, row } => return Err(ModelError::NonFiniteLogits { step, row }),
                }
            }
            hook(Some(n))?;
            // Step n writes each row's token at position ≤ longest prompt + n − 1.
            let w = window(longest + n as i64, m);
            match mode {
                StepMode::Eager => decode(w),
                StepMode::CudaGraph => match graphs.iter().find(|(gw, _)| *gw == w) {
                    Some((_, g)) => g.replay()?,
                    None => {
                        let g =
                            super::cuda_graph::CudaGraph::capture(dev, graphs.first().map(|(_, g)| g), || decode(w))?;
                        graphs.push((w, g));
                    }
                },
            }
        }
        hook(None)?;
        if let Poll::NonFinite { step, row } = draw.poll()? {
            return Err(ModelError::NonFiniteLogits { step, row });
        }
        draw.finish()
    })
}
