//! Batched autoregressive generation with a KV cache.
//!
//! Rows are independent requests (a prompt + (problem_id, sample_idx) for seeding);
//! many samples of one prompt are simply several rows. Prompts are left-padded to a common
//! length; the attention mask drives positions and masking, so each row behaves as if it
//! were alone. A row is finished once it emits a stop id (kept in its output) or reaches
//! `max_new_tokens`; finished rows keep being fed `pad_id` until all rows finish.

use super::kv_cache::KvCache;
use super::memory::{self, GenShape};
use super::qwen::Qwen;
use super::sampler::{row_rng, Sampler, SamplingParams};
use super::{ModelError, Result};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<i64>,
    pub problem_id: u64,
    pub sample_idx: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated tokens only (prompt excluded), including the stop token if one was emitted.
    pub tokens: Vec<i64>,
    /// True if generation ended on a stop id (false: hit max_new_tokens).
    pub stopped: bool,
}

/// A batch of prompts left-padded to a common width, on the host: the one padding rule of both
/// samplers (tch here, ONNX Runtime in `crate::sample::ort`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeftPadded {
    /// [B, L] row-major.
    pub ids: Vec<i64>,
    /// [B, L]: 1 real, 0 padding.
    pub mask: Vec<i64>,
    /// [B, L]: 0.. over each row's real tokens; padding positions are 1 (never attended).
    pub positions: Vec<i64>,
    /// L.
    pub width: usize,
    /// Real tokens per row.
    pub lens: Vec<usize>,
}

impl LeftPadded {
    pub fn new(rows: &[Vec<i64>], pad_id: i64) -> LeftPadded {
        let l = rows.iter().map(Vec::len).max().unwrap_or(0);
        let cap = rows.len() * l;
        let (mut ids, mut mask, mut positions) =
            (Vec::with_capacity(cap), Vec::with_capacity(cap), Vec::with_capacity(cap));
        for r in rows {
            let pad = l - r.len();
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(r.iter().copied()));
            mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, r.len())));
            positions.extend(std::iter::repeat_n(1i64, pad).chain(0..r.len() as i64));
        }
        LeftPadded { ids, mask, positions, width: l, lens: rows.iter().map(Vec::len).collect() }
    }

    /// True when some row is shorter than the widest.
    pub fn has_padding(&self) -> bool {
        self.lens.iter().any(|&n| n != self.width)
    }
}

/// Left-pads `rows` to a common length → (ids [B, L], mask [B, L]) on `device`.
pub fn left_pad(rows: &[Vec<i64>], pad_id: i64, device: Device) -> (Tensor, Tensor) {
    let p = LeftPadded::new(rows, pad_id);
    let shape = [rows.len() as i64, p.width as i64];
    (
        Tensor::from_slice(&p.ids).view(shape).to_device(device), // [B, L]
        Tensor::from_slice(&p.mask).view(shape).to_device(device), // [B, L]
    )
}

/// Called by the tch decode loops before decode step n (`Some(n)`, n ≥ 1: the forward pass whose
/// logits give each row's token n) and once when the loop ends (`None`): where
/// `generate --profile-ops` starts and stops libtorch's profiler ([`super::op_profile`]).
pub type StepHook<'a> = dyn FnMut(Option<usize>) -> Result<()> + 'a;

/// Generates for every request in one batch. `base_seed` + (problem_id, sample_idx) seed
/// each row's RNG (see [`super::sampler`]).
pub fn generate(
    model: &Qwen,
    reqs: &[GenRequest],
    params: &SamplingParams,
    base_seed: u64,
    pad_id: i64,
) -> Result<Vec<Generation>> {
    generate_with(model, reqs, params, base_seed, pad_id, &mut |_| Ok(()))
}

/// [`generate`], calling `hook` around its decode steps (the public way in is
/// [`super::static_decode::TchDecode::generate_with`]).
pub(crate) fn generate_with(
    model: &Qwen,
    reqs: &[GenRequest],
    params: &SamplingParams,
    base_seed: u64,
    pad_id: i64,
    hook: &mut StepHook,
) -> Result<Vec<Generation>> {
    let vocab = model.cfg.vocab_size;
    if reqs.is_empty() {
        validate_requests(reqs, params, vocab as usize).map_err(ModelError::BadInput)?;
        return Ok(vec![]);
    }
    let dev = model.device();
    let b = reqs.len();
    let caps = check_rows(model, reqs, params)?;
    let max_new = caps.iter().copied().max().unwrap_or(0);
    let sampler = Sampler::new(params.clone());
    let mut rngs: Vec<_> = reqs.iter().map(|r| row_rng(base_seed, r.problem_id, r.sample_idx)).collect();
    let mut out: Vec<Generation> = vec![Generation { tokens: vec![], stopped: false }; b];
    if max_new == 0 {
        return Ok(out);
    }

    let threads = sampling_threads(tch::get_num_threads().max(0) as usize);
    tch::no_grad(|| -> Result<Vec<Generation>> {
        let prompts: Vec<Vec<i64>> = reqs.iter().map(|r| r.prompt.clone()).collect();
        let (ids, mut mask) = left_pad(&prompts, pad_id, dev); // [B, L], [B, L]
        let l = ids.size()[1];
        // Without padding the mask is all ones and the model's no-mask path gives the same
        // positions and attention; skipping it saves a cumsum and a host sync every step.
        let padded = prompts.iter().any(|p| p.len() as i64 != l);
        // Shared prefill: rows with the same prompt (the n or k samples of one problem) prefill
        // once; each row then gets its own copy of that prompt's cache and last logits.
        let (unique, row_of) = unique_prompts(&prompts);
        let (mut cache, mut logits) = if unique.len() < b {
            let u_prompts: Vec<Vec<i64>> = unique.iter().map(|&i| prompts[i].clone()).collect();
            let (u_ids, u_mask) = left_pad(&u_prompts, pad_id, dev); // [U, L] each (same L: the longest is unique too)
            let mut u_cache = KvCache::new(&model.cfg, unique.len() as i64, l + max_new as i64, model.kind(), dev);
            let hidden = model.forward_hidden(&u_ids, padded.then_some(&u_mask), Some(&mut u_cache))?; // [U, L, C]
            let u_logits = model.lm_head(&hidden.narrow(1, l - 1, 1)).squeeze_dim(1); // [U, V]
            let index = Tensor::from_slice(&row_of).to_device(dev); // [B]
            (u_cache.select_rows(&index), u_logits.index_select(0, &index)) // B rows, [B, V]
        } else {
            let mut cache = KvCache::new(&model.cfg, b as i64, l + max_new as i64, model.kind(), dev);
            let hidden = model.forward_hidden(&ids, padded.then_some(&mask), Some(&mut cache))?; // [B, L, C]
            let logits = model.lm_head(&hidden.narrow(1, l - 1, 1)).squeeze_dim(1); // [B, V]
            (cache, logits)
        };
        let mut done = vec![false; b];
        // With top-k sampling only the k best logits per row leave the device ([B, k] instead of
        // [B, V]: 20 values instead of 151,936 for the Qwen3 preset). Greedy takes whole rows
        // here: torch's `topk` does not promise the lower id on ties, which `argmax` gives.
        let top_k = top_candidates(params, vocab as usize).filter(|_| !params.is_greedy());
        for step in 0..max_new {
            let host = |t: Tensor| t.to_device(Device::Cpu).contiguous().view([-1]);
            let l32 = logits.to_kind(Kind::Float);
            let scores = if let Some(k) = top_k {
                let (vals, idx) = l32.topk(k as i64, -1, true, true); // [B, k] each
                let sums = l32.sum_dim_intlist(-1, false, Kind::Float); // [B]: the finiteness check
                StepScores::top(
                    Vec::<f32>::try_from(host(vals))?,
                    Vec::<i64>::try_from(host(idx))?,
                    Vec::<f32>::try_from(host(sums))?,
                    k,
                )
            } else {
                StepScores::full(Vec::<f32>::try_from(host(l32))?, vocab as usize)
                // [B, V]
            };
            if let Some(row) = scores.non_finite_row(&done) {
                return Err(ModelError::NonFiniteLogits { step, row });
            }
            let next = scores.draw(&sampler, params, &caps, pad_id, &mut rngs, &mut done, &mut out, threads);
            if step + 1 == max_new || done.iter().all(|&d| d) {
                break;
            }
            let step_ids = Tensor::from_slice(&next).view([b as i64, 1]).to_device(dev); // [B, 1]
            if padded {
                mask = Tensor::cat(&[&mask, &Tensor::ones([b as i64, 1], (Kind::Int64, dev))], 1);
                // [B, P+1]
            }
            hook(Some(step + 1))?;
            logits = model.forward(&step_ids, padded.then_some(&mask), Some(&mut cache))?.squeeze_dim(1);
            // [B, V]
        }
        hook(None)?;
        Ok(out)
    })
}

/// What every tch generation loop checks first: the requests are valid, and a batch of them with
/// their prompts and new tokens fits the device's memory. Returns each row's cap on new tokens.
pub(crate) fn check_rows(model: &Qwen, reqs: &[GenRequest], params: &SamplingParams) -> Result<Vec<usize>> {
    validate_requests(reqs, params, model.cfg.vocab_size as usize).map_err(ModelError::BadInput)?;
    let caps = row_caps(reqs, params.max_new_tokens, model.cfg.max_position_embeddings as usize)
        .map_err(ModelError::BadInput)?;
    let max_new = caps.iter().copied().max().unwrap_or(0);
    let longest = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    let shape = GenShape::from_config(&model.cfg, model.kind().elt_size_in_bytes());
    let plan = memory::generation_plan(&shape, reqs.len(), longest, max_new);
    memory::check_fits(&generation_what(reqs.len(), longest, max_new), &plan, model.device())?;
    Ok(caps)
}

/// The distinct prompts of a batch, by first occurrence, and each row's index among them:
/// (`unique[u]` = the first row with prompt u, `row_of[i]` = u of row i).
pub fn unique_prompts(prompts: &[Vec<i64>]) -> (Vec<usize>, Vec<i64>) {
    let mut seen: std::collections::HashMap<&[i64], i64> = std::collections::HashMap::new();
    let mut unique = vec![];
    let row_of = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            *seen.entry(p.as_slice()).or_insert_with(|| {
                unique.push(i);
                unique.len() as i64 - 1
            })
        })
        .collect();
    (unique, row_of)
}

/// Checks a batch before generating (shared by every backend): sampling parameters, non-empty
/// prompts, token ids inside the vocabulary.
pub fn validate_requests(reqs: &[GenRequest], params: &SamplingParams, vocab: usize) -> Result<(), String> {
    params.validate()?;
    if let Some(i) = reqs.iter().position(|r| r.prompt.is_empty()) {
        return Err(format!("request {i} has an empty prompt"));
    }
    for r in reqs {
        if let Some(&bad) = r.prompt.iter().find(|&&t| t < 0 || t as u64 >= vocab as u64) {
            return Err(format!("token id {bad} out of range for vocab {vocab}"));
        }
    }
    Ok(())
}

/// Tokens each row may generate: `max_new`, less what the model's context
/// (`max_position_embeddings`) leaves after the row's prompt — a row that reaches the end of the
/// context stops there, unstopped (`finish_reason` "length"), as vLLM stops at `max_model_len`.
/// A prompt that fills the context, or a `max_new` beyond the whole context, is an error.
pub fn row_caps(reqs: &[GenRequest], max_new: usize, max_positions: usize) -> Result<Vec<usize>, String> {
    if max_new > max_positions {
        return Err(format!(
            "max_new_tokens {max_new} exceeds the model's context (max_position_embeddings {max_positions})"
        ));
    }
    reqs.iter()
        .enumerate()
        .map(|(i, r)| {
            if r.prompt.len() >= max_positions {
                return Err(format!(
                    "request {i}: a prompt of {} tokens leaves no room under the model's max_position_embeddings {max_positions}",
                    r.prompt.len()
                ));
            }
            Ok(max_new.min(max_positions - r.prompt.len()))
        })
        .collect()
}

/// Checks, before anything is allocated, that `rows` rows of prompts up to `longest` tokens can
/// generate `max_new` tokens within the model's context and the memory available.
pub fn preflight(
    shape: &GenShape,
    max_positions: usize,
    rows: usize,
    longest: usize,
    max_new: usize,
    device: Device,
) -> Result<()> {
    if max_new > max_positions {
        return Err(ModelError::BadInput(format!(
            "max_new_tokens {max_new} exceeds the model's context (max_position_embeddings {max_positions})"
        )));
    }
    if longest >= max_positions {
        return Err(ModelError::BadInput(format!(
            "a prompt of {longest} tokens leaves no room under the model's max_position_embeddings {max_positions}"
        )));
    }
    let max_new = max_new.min(max_positions - longest.min(max_positions));
    memory::check_fits(
        &generation_what(rows, longest, max_new),
        &memory::generation_plan(shape, rows, longest, max_new),
        device,
    )
}

/// How a generation request is named in out-of-memory errors.
pub fn generation_what(batch: usize, prompt_len: usize, max_new: usize) -> String {
    let rows = if batch == 1 { "row" } else { "rows" };
    format!("generating {max_new} new tokens for {batch} {rows} after a {prompt_len}-token prompt")
}

/// What one forward step hands the sampler for each row: either the full `[V]` logits, or — when
/// the draw needs only the k best (top-k sampling, or greedy with k = 1) and the backend selects
/// them itself — the k best logits in descending order, their token ids and the row's logit sum
/// (NaN or +inf iff the row holds NaN or +inf). Both give the same tokens for the same seeds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepScores {
    /// Values per row: V (full rows) or k.
    pub width: usize,
    /// [B, width] row-major.
    pub vals: Vec<f32>,
    /// [B, width] token ids of `vals`; empty for full rows (the id is the column).
    pub ids: Vec<i64>,
    /// [B] each full row's sum; empty for full rows.
    pub sums: Vec<f32>,
}

impl StepScores {
    pub fn full(logits: Vec<f32>, vocab: usize) -> Self {
        StepScores { width: vocab, vals: logits, ids: vec![], sums: vec![] }
    }

    pub fn top(vals: Vec<f32>, ids: Vec<i64>, sums: Vec<f32>, k: usize) -> Self {
        debug_assert!(vals.len() == ids.len() && vals.len() == sums.len() * k);
        StepScores { width: k, vals, ids, sums }
    }

    pub fn is_top(&self) -> bool {
        !self.ids.is_empty()
    }

    pub fn rows(&self) -> usize {
        self.vals.len() / self.width.max(1)
    }

    /// The rows `index` (repeats allowed), in that order.
    pub fn select(&self, index: &[i64]) -> Self {
        let w = self.width;
        let rows = |x: &[f32]| -> Vec<f32> {
            index.iter().flat_map(|&i| x[i as usize * w..(i as usize + 1) * w].iter().copied()).collect()
        };
        StepScores {
            width: w,
            vals: rows(&self.vals),
            ids: if self.is_top() {
                index.iter().flat_map(|&i| self.ids[i as usize * w..(i as usize + 1) * w].iter().copied()).collect()
            } else {
                vec![]
            },
            sums: index.iter().filter_map(|&i| self.sums.get(i as usize).copied()).collect(),
        }
    }

    /// Appends `other`'s rows (same kind and width; `self` may be empty).
    pub fn extend(&mut self, other: StepScores) {
        if self.vals.is_empty() {
            *self = other;
            return;
        }
        assert_eq!((self.width, self.is_top()), (other.width, other.is_top()), "mixing kinds of step scores");
        self.vals.extend(other.vals);
        self.ids.extend(other.ids);
        self.sums.extend(other.sums);
    }

    /// The first unfinished row holding a NaN or +inf, if any.
    pub fn non_finite_row(&self, done: &[bool]) -> Option<usize> {
        if self.is_top() {
            let bad = |x: f32| x.is_nan() || x == f32::INFINITY;
            (0..self.sums.len()).find(|&i| !done.get(i).copied().unwrap_or(false) && bad(self.sums[i]))
        } else {
            non_finite_row(&self.vals, self.width, done)
        }
    }

    /// One decoding step shared by every backend (tch here, ONNX Runtime in `crate::sample::ort`):
    /// draws the next token of each unfinished row with the row's own RNG — from its full row
    /// through [`Sampler::sample`], or from its top-k candidates through [`Sampler::sample_top_k`]
    /// (greedy: the first candidate, the row's argmax) — appends it, and marks rows that hit a stop
    /// id or their token cap ([`row_caps`]). Finished rows get `pad_id`. Returns the `[B]` next
    /// tokens. Full rows are drawn on up to `threads` threads (each row has its own RNG, so the
    /// tokens do not depend on the thread count).
    #[allow(clippy::too_many_arguments)]
    pub fn draw(
        &self,
        sampler: &Sampler,
        params: &SamplingParams,
        caps: &[usize],
        pad_id: i64,
        rngs: &mut [ChaCha8Rng],
        done: &mut [bool],
        out: &mut [Generation],
        threads: usize,
    ) -> Vec<i64> {
        let k = self.width;
        if !self.is_top() {
            let draw = |i: usize, rng: &mut ChaCha8Rng| sampler.sample(&self.vals[i * k..(i + 1) * k], rng) as i64;
            // Threads only pay off for enough work (spawning costs tens of µs): ≥ 2^16 logits a thread.
            let live = done.iter().filter(|&&d| !d).count();
            let threads = threads.min((live * k) >> 16).max(1);
            return step_rows(draw, params, caps, pad_id, rngs, done, out, threads);
        }
        let draw = |i: usize, rng: &mut ChaCha8Rng| {
            if params.is_greedy() {
                self.ids[i * k]
            } else {
                sampler.sample_top_k(&self.ids[i * k..(i + 1) * k], &self.vals[i * k..(i + 1) * k], rng) as i64
            }
        };
        // k candidates a row: too little work for threads.
        step_rows(draw, params, caps, pad_id, rngs, done, out, 1)
    }
}

/// How many candidates a step must keep per row for `params` (greedy: 1; top-k: k), or `None`
/// when the draw needs the full row (top-p alone, or plain temperature sampling).
pub fn top_candidates(params: &SamplingParams, vocab: usize) -> Option<usize> {
    if params.is_greedy() {
        Some(1)
    } else if params.top_k > 0 && params.top_k < vocab {
        Some(params.top_k)
    } else {
        None
    }
}

/// The first unfinished row of `logits` (`[B, width]` row-major: all logits or the top-k
/// candidates) holding a NaN or +inf, if any (−inf is a legitimate masked logit).
pub fn non_finite_row(logits: &[f32], width: usize, done: &[bool]) -> Option<usize> {
    logits
        .chunks(width.max(1))
        .enumerate()
        .find(|(i, row)| {
            !done.get(*i).copied().unwrap_or(false) && row.iter().any(|x| x.is_nan() || *x == f32::INFINITY)
        })
        .map(|(i, _)| i)
}

/// Host threads for drawing tokens: `requested`, or (0) one per available core.
pub fn sampling_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// [`StepScores::draw`] with the per-row draw given as `draw(row, rng)`.
#[allow(clippy::too_many_arguments)]
pub fn step_rows(
    draw: impl Fn(usize, &mut ChaCha8Rng) -> i64 + Sync,
    params: &SamplingParams,
    caps: &[usize],
    pad_id: i64,
    rngs: &mut [ChaCha8Rng],
    done: &mut [bool],
    out: &mut [Generation],
    threads: usize,
) -> Vec<i64> {
    let b = out.len();
    let mut drawn: Vec<Option<i64>> = vec![None; b];
    let threads = threads.clamp(1, b.max(1));
    if threads == 1 {
        for i in 0..b {
            if !done[i] {
                drawn[i] = Some(draw(i, &mut rngs[i]));
            }
        }
    } else {
        // Contiguous row ranges, one per thread; each row touches only its own RNG and slot.
        let chunk = b.div_ceil(threads);
        let draw = &draw;
        let done_ro: &[bool] = done;
        std::thread::scope(|s| {
            for (c, (rng_c, slot_c)) in rngs.chunks_mut(chunk).zip(drawn.chunks_mut(chunk)).enumerate() {
                let base = c * chunk;
                s.spawn(move || {
                    for (j, (rng, slot)) in rng_c.iter_mut().zip(slot_c.iter_mut()).enumerate() {
                        if !done_ro[base + j] {
                            *slot = Some(draw(base + j, rng));
                        }
                    }
                });
            }
        });
    }
    let mut next = vec![pad_id; b];
    for i in 0..b {
        let Some(tok) = drawn[i] else { continue };
        next[i] = tok;
        out[i].tokens.push(tok);
        if params.stop_ids.contains(&tok) {
            done[i] = true;
            out[i].stopped = true;
        } else if out[i].tokens.len() >= caps[i] {
            done[i] = true;
        }
    }
    next
}
