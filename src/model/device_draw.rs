//! Token draws on the device: [`super::sampler`]'s draws computed as tensor ops, so a decode loop
//! needs no host round trip a step (and a CUDA graph can hold the draw with the model's step).
//!
//! [`super::sampler`] draws row r's n-th token with the n-th `f64` of the row's own RNG: an
//! inverse-CDF draw over the row's candidates in a fixed order — the top-k by (logit desc, id asc),
//! the nucleus prefix of all tokens by (probability desc, id asc), or all tokens in id order.
//! Here each row's uniforms for every token it may draw are taken from that same RNG up front
//! (`[B, N]` f64, uploaded once), and the draw — temperature, candidate order, nucleus cut,
//! inverse CDF — runs on the device in f64, as does the bookkeeping the host did: each row's
//! tokens, count, stop and cap, and the first step at which an unfinished row's logits held a NaN
//! or +inf. The host looks at the finished flags and the error step every few steps
//! ([`DeviceDraw::poll`]) and reads the tokens once at the end ([`DeviceDraw::finish`]).
//!
//! Same seeds give the same tokens as the host draw, with one caveat stated rather than hidden: the
//! device's `exp` and running sums may round the last bit differently from the host's, so a
//! uniform that falls within ~1e-16 (relative) of a boundary between two candidates' cumulative
//! masses could pick the neighbour. On the CPU, `tests/parity.rs` finds the same tokens as the
//! host draw in every case.

use super::generate::Generation;
use super::sampler::SamplingParams;
use super::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// "No non-finite logits yet" in [`DeviceDraw::first_bad`].
const NONE: i64 = i64::MAX;

/// Which candidates the draw sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The row's argmax (first on ties); no randomness.
    Greedy,
    /// The step's top-k values and ids ([`super::generate::top_candidates`]).
    TopK,
    /// The full row of logits (top-p alone, or plain temperature sampling).
    Full,
}

/// Decoding state on the device for B rows of up to N new tokens each.
pub struct DeviceDraw {
    mode: Mode,
    inv_t: f64,
    top_p: f64,
    pad_id: i64,
    /// [B, N] f64: row b's n-th uniform is its n-th token's draw (absent for greedy)
    uniforms: Option<Tensor>,
    /// [B, N] int64: each row's tokens (pad beyond its count)
    tokens: Tensor,
    /// [B] int64: tokens drawn so far
    count: Tensor,
    /// [B] int64: each row's cap on new tokens
    caps: Tensor,
    /// [B] int64: each row's prompt length
    prompt_lens: Tensor,
    /// [B] bool
    done: Tensor,
    /// [B] bool: ended on a stop id
    stopped: Tensor,
    /// [S] int64 (absent when there are no stop ids)
    stop_ids: Option<Tensor>,
    /// [B] int64: the draw index at which the row, unfinished, first had a NaN or +inf logit
    first_bad: Tensor,
    /// [1] int64: the index of the next draw
    step: Tensor,
    n: i64,
}

/// What [`DeviceDraw::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Running,
    AllDone,
    /// (draw index, row) of the first non-finite logits, as the host loop reports them.
    NonFinite {
        step: usize,
        row: usize,
    },
}

impl DeviceDraw {
    /// State for rows with caps `caps` (≤ `params.max_new_tokens`), prompts of `prompt_lens`
    /// tokens and RNGs `rngs` (consumed: N uniforms each, as the host draw would take them).
    /// `top_k`: the step hands over top-k candidates (`Some(k)`) or full rows (`None`).
    pub fn new(
        params: &SamplingParams,
        top_k: Option<usize>,
        caps: &[usize],
        prompt_lens: &[usize],
        rngs: &mut [ChaCha8Rng],
        pad_id: i64,
        device: Device,
    ) -> DeviceDraw {
        let b = caps.len() as i64;
        let n = caps.iter().copied().max().unwrap_or(0).max(1) as i64;
        let mode = if params.is_greedy() {
            Mode::Greedy
        } else if top_k.is_some() {
            Mode::TopK
        } else {
            Mode::Full
        };
        let i64s = |x: &[usize]| Tensor::from_slice(&x.iter().map(|&v| v as i64).collect::<Vec<_>>()).to_device(device);
        let uniforms = (mode != Mode::Greedy).then(|| {
            let u: Vec<f64> = rngs.iter_mut().flat_map(|r| (0..n).map(move |_| r.gen::<f64>())).collect();
            Tensor::from_slice(&u).view([b, n]).to_device(device)
        });
        DeviceDraw {
            mode,
            inv_t: if params.is_greedy() { 1.0 } else { 1.0 / params.temperature },
            top_p: params.top_p,
            pad_id,
            uniforms,
            tokens: Tensor::full([b, n], pad_id, (Kind::Int64, device)),
            count: Tensor::zeros([b], (Kind::Int64, device)),
            caps: i64s(caps),
            prompt_lens: i64s(prompt_lens),
            done: Tensor::zeros([b], (Kind::Bool, device)),
            stopped: Tensor::zeros([b], (Kind::Bool, device)),
            stop_ids: (!params.stop_ids.is_empty()).then(|| Tensor::from_slice(&params.stop_ids).to_device(device)),
            first_bad: Tensor::full([b], NONE, (Kind::Int64, device)),
            step: Tensor::zeros([1], (Kind::Int64, device)),
            n,
        }
    }

    /// Draws every unfinished row's next token from this step's scores — full logits `vals`
    /// [B, V], or top-k values `vals` [B, k] with their `ids` [B, k] and row `sums` [B] — and
    /// updates the state in place (fixed shapes, no host sync: capturable in a CUDA graph).
    pub fn draw(&self, vals: &Tensor, top: Option<(&Tensor, &Tensor)>) {
        let live = self.done.logical_not(); // [B]
        let bad = match top {
            Some((_, sums)) => sums.isnan().logical_or(&sums.isposinf()),
            None => vals.isnan().logical_or(&vals.isposinf()).any_dim(-1, false),
        }; // [B]
        let newly = bad.logical_and(&live).logical_and(&self.first_bad.eq(NONE));
        self.first_bad.shallow_clone().copy_(&self.step.expand_as(&self.first_bad).where_self(&newly, &self.first_bad));

        let tok = match (self.mode, top) {
            (Mode::Greedy, None) => vals.argmax(-1, true),
            (Mode::TopK, Some((ids, _))) => {
                // The host's order: logit descending, then id ascending (torch's topk leaves ties
                // in no promised order): sort by id, then a stable sort by value.
                let (by_id, perm) = ids.sort(-1, false);
                let z = vals.gather(-1, &perm, false).to_kind(Kind::Double) * self.inv_t;
                let (z, perm) = z.sort_stable(true, -1, true);
                let cands = by_id.gather(-1, &perm, false);
                let p = (&z - z.narrow(-1, 0, 1)).exp();
                let cums = p.cumsum(-1, Kind::Double);
                let total = cums.narrow(-1, cums.size()[1] - 1, 1);
                cands.gather(-1, &self.pick(&cums, &total), false)
            }
            (Mode::Full, None) => {
                let z = vals.to_kind(Kind::Double) * self.inv_t;
                let p = (&z - z.amax([-1], true)).exp();
                // The host sums every probability in id order first (a running sum here, so the
                // CPU adds in the host's order).
                let in_order = p.cumsum(-1, Kind::Double);
                let total = in_order.narrow(-1, in_order.size()[1] - 1, 1);
                if self.top_p < 1.0 {
                    let (sorted, order) = p.sort_stable(true, -1, true);
                    let cums = sorted.cumsum(-1, Kind::Double);
                    order.gather(-1, &self.pick(&cums, &total), false)
                } else {
                    self.pick(&in_order, &total)
                }
            }
            // Greedy takes whole rows (torch's topk does not promise the lower id on ties).
            (Mode::Greedy | Mode::Full, Some(_)) | (Mode::TopK, None) => {
                unreachable!("the step hands over the scores its draw was made for")
            }
        }; // [B, 1]

        let at = self.count.clamp_max(self.n - 1).unsqueeze(1); // [B, 1]
        let live2 = live.unsqueeze(1);
        let kept = self.tokens.gather(1, &at, false);
        let _ = self.tokens.shallow_clone().scatter_(1, &at, &tok.where_self(&live2, &kept));
        let _ = self.count.shallow_clone().g_add_(&live.to_kind(Kind::Int64));
        let tok = tok.squeeze_dim(1);
        if let Some(stops) = &self.stop_ids {
            let stop = tok.unsqueeze(1).eq_tensor(&stops.unsqueeze(0)).any_dim(-1, false).logical_and(&live);
            let _ = self.stopped.shallow_clone().logical_or_(&stop);
            let _ = self.done.shallow_clone().logical_or_(&stop);
        }
        let _ = self.done.shallow_clone().logical_or_(&self.count.ge_tensor(&self.caps));
        let _ = self.step.shallow_clone().g_add_scalar_(1);
    }

    /// The index of each row's draw among `cums` ([B, W], nondecreasing): keep the smallest
    /// prefix whose mass reaches `top_p` of `total` (all W when top_p = 1), then the first
    /// position whose running mass exceeds u · (kept mass) — the host's `draw_nucleus` / `draw`.
    fn pick(&self, cums: &Tensor, total: &Tensor) -> Tensor {
        let w = cums.size()[1];
        let (kept, last) = if self.top_p < 1.0 {
            let target = total * self.top_p;
            let n = (cums.lt_tensor(&target).sum_dim_intlist(-1, true, Kind::Int64) + 1).clamp_max(w); // [B, 1]
            let last = n - 1;
            (cums.gather(-1, &last, false), last)
        } else {
            (total.shallow_clone(), Tensor::full_like(&self.count.unsqueeze(1), w - 1))
        };
        let uniforms = self.uniforms.as_ref().expect("sampling modes have uniforms");
        let u = uniforms.gather(1, &self.count.clamp_max(self.n - 1).unsqueeze(1), false); // [B, 1]
        let x = u * kept;
        cums.le_tensor(&x).sum_dim_intlist(-1, true, Kind::Int64).minimum(&last)
        // [B, 1]
    }

    /// Writes the next step's inputs: each row's newest token at the position it takes in the
    /// row's cache (prompt + tokens − 1); finished rows get `pad_id` at position 0 (never read).
    pub fn feed(&self, ids: &Tensor, positions: &Tensor) {
        let newest = self.tokens.gather(1, &(&self.count - 1).clamp_min(0).unsqueeze(1), false); // [B, 1]
        let done = self.done.unsqueeze(1);
        ids.shallow_clone().copy_(&Tensor::full_like(&newest, self.pad_id).where_self(&done, &newest));
        let at = &self.prompt_lens + &self.count - 1;
        positions.shallow_clone().copy_(&Tensor::zeros_like(&at).where_self(&self.done, &at));
    }

    /// One host sync: are all rows finished, or has an unfinished row met non-finite logits?
    pub fn poll(&self) -> Result<Poll> {
        let both = Tensor::stack(&[self.first_bad.min(), self.done.all().to_kind(Kind::Int64)], 0);
        let both = Vec::<i64>::try_from(both.to_device(Device::Cpu))?;
        let (first, all_done) = (both[0], both[1] != 0);
        if first != NONE {
            let rows = Vec::<i64>::try_from(self.first_bad.to_device(Device::Cpu))?;
            let row = rows.iter().position(|&s| s == first).expect("the minimum is some row's");
            return Ok(Poll::NonFinite { step: first as usize, row });
        }
        Ok(if all_done { Poll::AllDone } else { Poll::Running })
    }

    /// Each row's tokens and whether it stopped on a stop id.
    pub fn finish(&self) -> Result<Vec<Generation>> {
        let host = |t: &Tensor| t.to_device(Device::Cpu).contiguous().view([-1]);
        let tokens = Vec::<i64>::try_from(host(&self.tokens))?;
        let count = Vec::<i64>::try_from(host(&self.count))?;
        let stopped = Vec::<bool>::try_from(host(&self.stopped))?;
        let n = self.n as usize;
        Ok(count
            .iter()
            .zip(&stopped)
            .enumerate()
            .map(|(i, (&c, &s))| Generation { tokens: tokens[i * n..i * n + c as usize].to_vec(), stopped: s })
            .collect())
    }
}
