//! Generation over a fused export (`export --graph fused`): a pre-allocated cache updated in place.
//!
//! Each layer's key and value cache is one `[slots, K, M, D]` tensor allocated once per call,
//! bound through ONNX Runtime's IO binding as both `past_key_values.{i}.*` and `present.{i}.*`,
//! so `GroupQueryAttention` writes each step's token at its row's own length: no concatenation,
//! no copy of the cache, no host round trip. Rows need no masks or positions: row b's tokens sit
//! at `[0, len_b)` and `seqlens_k[b] = len_b` places the next one (see `crate::export::fused`).
//!
//! Slots are refilled as rows finish (continuous batching): new requests prefill together
//! (identical prompts once), right-padded from an empty cache, and their cache rows are copied
//! into the free slots; free slots ride along as one-token dummy rows until refilled. Once no
//! request is left and half the slots are idle, the live rows move to a smaller cache, so the
//! tail of a run does not pay for idle rows. A fixed batch is the same loop with as many slots as
//! rows, so both entry points draw the same tokens as each row generated alone.

use super::{ort_err, OrtModel};
use crate::model::generate::{sampling_threads, unique_prompts, GenRequest, Generation, StepScores};
use crate::model::sampler::{row_rng, Sampler, SamplingParams};
use crate::sample::{Result, SampleError};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::value::{DynTensor, PrimitiveTensorElementType, TensorElementType};

/// One cache tensor per layer and kind ([B, K, cap, D] each, key then value per layer).
pub(super) struct SlotKv {
    values: Vec<DynTensor>,
    batch: usize,
    cap: usize,
}

/// What a call returns: the scores of each row's last token, the k best (Some(k)) or all.
struct Want(Option<usize>);

/// A request in flight in a slot.
struct Row {
    req: usize,
    rng: rand_chacha::ChaCha8Rng,
    /// Tokens in this row's cache.
    len: usize,
    cap: usize,
    out: Generation,
}

impl OrtModel {
    /// A zeroed cache of `batch` rows × `cap` positions.
    fn slot_kv(&self, batch: usize, cap: usize) -> Result<SlotKv> {
        let m = &self.manifest;
        let alloc = Allocator::default();
        let mut values = Vec::with_capacity(2 * m.num_layers);
        for _ in 0..2 * m.num_layers {
            let mut t =
                DynTensor::new(&alloc, self.kv_type, [batch, m.num_kv_heads, cap, m.head_dim]).map_err(ort_err)?;
            match self.kv_type {
                TensorElementType::Float16 => fill_zero::<half::f16>(&mut t)?,
                _ => fill_zero::<f32>(&mut t)?,
            }
            values.push(t);
        }
        Ok(SlotKv { values, batch, cap })
    }

    /// One call of the fused graph: `ids` [B, S] (right-padded in a prefill), `seqlens` [B] =
    /// each row's cache length after the call minus 1; the cache is updated in place.
    fn fused_call(&mut self, ids: &[i64], seqlens: &[i32], kv: &mut SlotKv, want: Want) -> Result<StepScores> {
        let b = kv.batch;
        let s = ids.len() / b.max(1);
        if b == 0 || ids.len() != b * s || seqlens.len() != b {
            return Err(SampleError::BadInput(format!(
                "fused call: {} ids and {} lengths for {b} rows",
                ids.len(),
                seqlens.len()
            )));
        }
        let total = seqlens.iter().map(|&l| l + 1).max().unwrap_or(1);
        if total as usize > kv.cap {
            return Err(SampleError::BadInput(format!(
                "a row needs {total} cache positions, the cache holds {}",
                kv.cap
            )));
        }
        let mut io = self.session.create_binding().map_err(ort_err)?;
        let t_ids = ort::value::Tensor::from_array(([b, s], ids.to_vec())).map_err(ort_err)?;
        let t_len = ort::value::Tensor::from_array(([b], seqlens.to_vec())).map_err(ort_err)?;
        let t_total = ort::value::Tensor::from_array(((), vec![total])).map_err(ort_err)?;
        io.bind_input("input_ids", &t_ids).map_err(ort_err)?;
        io.bind_input("seqlens_k", &t_len).map_err(ort_err)?;
        io.bind_input("total_sequence_length", &t_total).map_err(ort_err)?;
        let t_k;
        if let Want(Some(k)) = want {
            t_k = ort::value::Tensor::from_array(((), vec![k as i64])).map_err(ort_err)?;
            io.bind_input("top_k", &t_k).map_err(ort_err)?;
        }
        for (j, v) in kv.values.iter_mut().enumerate() {
            let kind = if j % 2 == 0 { "key" } else { "value" };
            io.bind_input(format!("past_key_values.{}.{kind}", j / 2), v).map_err(ort_err)?;
            io.bind_output(format!("present.{}.{kind}", j / 2), v).map_err(ort_err)?;
        }
        let cpu =
            MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default).map_err(ort_err)?;
        let names: &[&str] = match want {
            Want(Some(_)) => &["top_logits", "top_ids", "logit_sums"],
            Want(None) => &["logits"],
        };
        for n in names {
            io.bind_output_to_device(*n, &cpu).map_err(ort_err)?;
        }
        let out = self.session.run_binding(&io).map_err(ort_err)?;
        let get = |name: &str| out.get(name).ok_or_else(|| SampleError::Ort(format!("no {name} output")));
        Ok(match want {
            Want(Some(k)) => {
                let (_, vals) = get("top_logits")?.try_extract_tensor::<f32>().map_err(ort_err)?;
                let (_, ids) = get("top_ids")?.try_extract_tensor::<i64>().map_err(ort_err)?;
                let (_, sums) = get("logit_sums")?.try_extract_tensor::<f32>().map_err(ort_err)?;
                StepScores::top(vals.to_vec(), ids.to_vec(), sums.to_vec(), k)
            }
            Want(None) => {
                let (shape, data) = get("logits")?.try_extract_tensor::<f32>().map_err(ort_err)?;
                StepScores::full(data.to_vec(), shape.last().copied().unwrap_or(0) as usize)
            }
        })
    }

    /// Prefills `prompts` from an empty cache (right-padded with `pad_id`): the cache
    /// [U, K, longest, D] and the scores of each prompt's last token.
    fn fused_prefill(&mut self, prompts: &[&[i64]], pad_id: i64, top: Option<usize>) -> Result<(StepScores, SlotKv)> {
        let l = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(prompts.len() * l);
        for p in prompts {
            ids.extend_from_slice(p);
            ids.extend(std::iter::repeat_n(pad_id, l - p.len()));
        }
        let seqlens: Vec<i32> = prompts.iter().map(|p| p.len() as i32 - 1).collect();
        let mut kv = self.slot_kv(prompts.len(), l)?;
        let scores = self.fused_call(&ids, &seqlens, &mut kv, Want(top))?;
        Ok((scores, kv))
    }

    /// Logits of one sequence from an empty cache: [V] at the last position, or [T, V] at every
    /// position (`all_positions`: the first token, then one token per step).
    pub(super) fn fused_logits(&mut self, input_ids: &[i64], all_positions: bool) -> Result<(Vec<usize>, Vec<f32>)> {
        let (t, v) = (input_ids.len(), self.vocab_size());
        if all_positions {
            let rows = self.fused_decode_logits(&[input_ids[..1].to_vec()], &[input_ids[1..].to_vec()])?;
            return Ok((vec![t, v], rows.into_iter().next().unwrap_or_default()));
        }
        let mut kv = self.slot_kv(1, t)?;
        let s = self.fused_call(input_ids, &[t as i32 - 1], &mut kv, Want(None))?;
        Ok((vec![s.width], s.vals))
    }

    /// Teacher-forced decoding of a batch over the fused graph (for parity checks): prompts of
    /// any lengths prefill together (right-padded), then the continuations (all of one length n)
    /// are fed one token per step. Returns, per row, the logits [n + 1, V] after the prompt and
    /// after each continuation token.
    pub(super) fn fused_decode_logits(&mut self, prompts: &[Vec<i64>], conts: &[Vec<i64>]) -> Result<Vec<Vec<f32>>> {
        let n = conts.first().map_or(0, |c| c.len());
        if prompts.len() != conts.len() || conts.iter().any(|c| c.len() != n) || prompts.iter().any(|p| p.is_empty()) {
            return Err(SampleError::BadInput(
                "one non-empty prompt per continuation, continuations of one length".into(),
            ));
        }
        let b = prompts.len();
        let l = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut kv = self.slot_kv(b, l + n)?;
        let mut ids = Vec::with_capacity(b * l);
        for p in prompts {
            ids.extend(p.iter().copied().chain(std::iter::repeat_n(0, l - p.len())));
        }
        let mut lens: Vec<i32> = prompts.iter().map(|p| p.len() as i32).collect();
        let mut out = vec![vec![]; b];
        let mut seqlens: Vec<i32> = lens.iter().map(|l| l - 1).collect();
        for step in 0..=n {
            let s = self.fused_call(&ids, &seqlens, &mut kv, Want(None))?;
            for (r, o) in out.iter_mut().enumerate() {
                o.extend_from_slice(&s.vals[r * s.width..(r + 1) * s.width]);
            }
            if step == n {
                break;
            }
            ids = conts.iter().map(|c| c[step]).collect();
            seqlens = lens.clone();
            lens.iter_mut().for_each(|l| *l += 1);
        }
        Ok(out)
    }

    /// Continuous batching over the fused graph (see the module docs) with `n0` slots, for
    /// requests already validated, with their caps; the rest of the contract is
    /// [`OrtModel::generate_stream`]'s, which calls it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fused_stream(
        &mut self,
        reqs: &[GenRequest],
        params: &SamplingParams,
        base_seed: u64,
        pad_id: i64,
        n0: usize,
        caps: &[usize],
        on_done: &mut dyn FnMut(usize, Generation) -> Result<()>,
    ) -> Result<()> {
        // Every row fits: its prompt and all but its last token are in the cache at the end.
        let cap = reqs.iter().zip(caps).map(|(r, &c)| r.prompt.len() + c).max().unwrap_or(1).max(1);
        let sampler = Sampler::new(params.clone());
        let threads = sampling_threads(self.threads);
        let top = self.step_top_k(params);
        let mut kv = self.slot_kv(n0, cap)?;
        let mut rows: Vec<Option<Row>> = (0..n0).map(|_| None).collect();
        // Scores of each slot's next draw (free slots: stale rows, never drawn from).
        let mut scores = StepScores::default();
        let mut next_req = 0;
        loop {
            let n = rows.len();
            let free: Vec<usize> = (0..n).filter(|&i| rows[i].is_none()).collect();
            let live = n - free.len();
            let left = reqs.len() - next_req;
            if left > 0 && !free.is_empty() && (live == 0 || free.len() * 4 >= n) {
                let take: Vec<usize> = (next_req..next_req + left.min(free.len())).collect();
                next_req += take.len();
                let prompts: Vec<&[i64]> = take.iter().map(|&i| reqs[i].prompt.as_slice()).collect();
                let (unique, row_of) = if self.shared_prefill {
                    let owned: Vec<Vec<i64>> = prompts.iter().map(|p| p.to_vec()).collect();
                    unique_prompts(&owned)
                } else {
                    ((0..prompts.len()).collect(), (0..prompts.len() as i64).collect())
                };
                let u_prompts: Vec<&[i64]> = unique.iter().map(|&i| prompts[i]).collect();
                let (u_scores, u_kv) = self.fused_prefill(&u_prompts, pad_id, top)?;
                // Slot free[j] takes request take[j], from prefill row row_of[j].
                // Slot free[j] takes request take[j], from prefill row row_of[j]; the scores of
                // [old slots; prefill rows] are then picked per slot (at the first fill there are
                // no old slots, and a slot left without a request points at a stale row).
                let base = if scores.rows() == n { n as i64 } else { 0 };
                let mut index: Vec<i64> = (0..n as i64).map(|i| if base > 0 { i } else { 0 }).collect();
                let mut copies = Vec::with_capacity(take.len());
                for (j, (&ri, &u)) in take.iter().zip(&row_of).enumerate() {
                    let slot = free[j];
                    copies.push((u as usize, slot, reqs[ri].prompt.len()));
                    index[slot] = base + u;
                    rows[slot] = Some(Row {
                        req: ri,
                        rng: row_rng(base_seed, reqs[ri].problem_id, reqs[ri].sample_idx),
                        len: reqs[ri].prompt.len(),
                        cap: caps[ri],
                        out: Generation { tokens: vec![], stopped: false },
                    });
                }
                self.copy_rows(&u_kv, &mut kv, &copies)?;
                scores = if base > 0 {
                    scores.extend(u_scores);
                    scores.select(&index)
                } else {
                    u_scores.select(&index)
                };
            }
            let live = rows.iter().filter(|r| r.is_some()).count();
            if live == 0 {
                return Ok(());
            }
            // The tail: nothing left to start and half the slots idle → a smaller cache.
            if next_req == reqs.len() && live * 2 <= rows.len() && rows.len() > 1 {
                let keep: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_some()).collect();
                let mut small = self.slot_kv(keep.len(), cap)?;
                let copies: Vec<(usize, usize, usize)> = keep
                    .iter()
                    .enumerate()
                    .map(|(to, &from)| (from, to, rows[from].as_ref().map_or(0, |r| r.len)))
                    .collect();
                self.copy_rows(&kv, &mut small, &copies)?;
                kv = small;
                scores = scores.select(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>());
                rows = keep.into_iter().map(|i| rows[i].take()).collect();
            }
            let mut done: Vec<bool> = rows.iter().map(|r| r.is_none()).collect();
            if let Some(i) = scores.non_finite_row(&done) {
                let r = rows[i].as_ref().expect("live row");
                return Err(SampleError::Ort(format!(
                    "non-finite logits (NaN or +inf) for request {} after {} generated tokens: the model's weights or activations overflowed",
                    r.req,
                    r.out.tokens.len()
                )));
            }
            let dummy = || row_rng(0, 0, 0);
            let mut rngs: Vec<_> = rows.iter().map(|r| r.as_ref().map_or_else(dummy, |r| r.rng.clone())).collect();
            let mut outs: Vec<Generation> = rows
                .iter_mut()
                .map(|r| match r {
                    Some(r) => std::mem::replace(&mut r.out, Generation { tokens: vec![], stopped: false }),
                    None => Generation { tokens: vec![], stopped: false },
                })
                .collect();
            let row_caps: Vec<usize> = rows.iter().map(|r| r.as_ref().map_or(0, |r| r.cap)).collect();
            let was_done = done.clone();
            let next = scores.draw(&sampler, params, &row_caps, pad_id, &mut rngs, &mut done, &mut outs, threads);
            let mut seqlens = vec![0i32; rows.len()];
            for (i, (rng, out)) in rngs.into_iter().zip(outs).enumerate() {
                let Some(r) = rows[i].as_mut() else { continue };
                r.rng = rng;
                r.out = out;
                if done[i] && !was_done[i] {
                    let r = rows[i].take().expect("live row");
                    on_done(r.req, r.out)?;
                } else {
                    seqlens[i] = r.len as i32;
                    r.len += 1;
                }
            }
            if rows.iter().all(|r| r.is_none()) {
                continue; // refill (or the end) at the top
            }
            // One decode step: free slots write a pad token at position 0 of their own row.
            let ids: Vec<i64> = next.iter().zip(&rows).map(|(&t, r)| if r.is_some() { t } else { pad_id }).collect();
            scores = self.fused_call(&ids, &seqlens, &mut kv, Want(top))?;
        }
    }

    /// Copies cache rows: (source row, destination row, positions 0..len) for every layer.
    fn copy_rows(&self, src: &SlotKv, dst: &mut SlotKv, copies: &[(usize, usize, usize)]) -> Result<()> {
        let (k, d) = (self.manifest.num_kv_heads, self.manifest.head_dim);
        for (a, b) in src.values.iter().zip(dst.values.iter_mut()) {
            match self.kv_type {
                TensorElementType::Float16 => copy_rows_typed::<half::f16>(a, b, src.cap, dst.cap, k, d, copies)?,
                _ => copy_rows_typed::<f32>(a, b, src.cap, dst.cap, k, d, copies)?,
            }
        }
        Ok(())
    }
}

fn fill_zero<T: PrimitiveTensorElementType + Default + Copy + std::fmt::Debug>(t: &mut DynTensor) -> Result<()> {
    let (_, data) = t.try_extract_tensor_mut::<T>().map_err(ort_err)?;
    data.fill(T::default());
    Ok(())
}

/// [Bs, K, Ms, D] → [Bd, K, Md, D]: for each (from, to, len), positions 0..len of every head.
fn copy_rows_typed<T: PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    src: &DynTensor,
    dst: &mut DynTensor,
    src_cap: usize,
    dst_cap: usize,
    k: usize,
    d: usize,
    copies: &[(usize, usize, usize)],
) -> Result<()> {
    let (_, s) = src.try_extract_tensor::<T>().map_err(ort_err)?;
    let (_, t) = dst.try_extract_tensor_mut::<T>().map_err(ort_err)?;
    for &(from, to, len) in copies {
        for h in 0..k {
            let a = (from * k + h) * src_cap * d;
            let b = (to * k + h) * dst_cap * d;
            t[b..b + len * d].copy_from_slice(&s[a..a + len * d]);
        }
    }
    Ok(())
}
