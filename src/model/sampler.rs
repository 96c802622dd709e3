//! Token sampling: greedy, temperature, top-k, top-p, with one RNG per row.
//!
//! Reproducibility contract: row r draws from its own `ChaCha8Rng` seeded with
//! `row_seed(base_seed, problem_id, sample_idx)`, exactly one uniform draw per generated
//! token, on the CPU, from that row's logits. So a single sample can be regenerated alone
//! (batch composition does not change its random stream; only float differences in the
//! logits of differently-shaped batches could).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;

/// Sampling parameters. `temperature == 0` means greedy (negative values are refused by
/// [`SamplingParams::validate`]) (argmax, lowest index on ties).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1.0 disables.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Generation of a row stops after it emits any of these (the stop token is kept).
    pub stop_ids: Vec<i64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 256, stop_ids: vec![] }
    }
}

impl SamplingParams {
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams { temperature: 0.0, max_new_tokens, ..Default::default() }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
    pub fn validate(&self) -> Result<(), String> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!("temperature must be finite and >= 0 (0 = greedy), got {}", self.temperature));
        }
        Ok(())
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable (platform- and version-independent) seed for one (problem, sample) row.
pub fn row_seed(base_seed: u64, problem_id: u64, sample_idx: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(base_seed) ^ problem_id) ^ sample_idx.rotate_left(32))
}

/// The RNG for one row.
pub fn row_rng(base_seed: u64, problem_id: u64, sample_idx: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(row_seed(base_seed, problem_id, sample_idx))
}

/// Stateless sampler over one row of logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub params: SamplingParams,
}

/// Descending by value, then ascending by index: a total order, so selections are deterministic.
fn desc(a: &(usize, f64), b: &(usize, f64)) -> Ordering {
    b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0))
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { params }
    }

    /// Picks a token id from `logits` ([V], any scale). Greedy consumes no randomness;
    /// otherwise exactly one `f64` is drawn from `rng`.
    pub fn sample(&self, logits: &[f32], rng: &mut impl Rng) -> usize {
        assert!(!logits.is_empty(), "empty logits");
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let v = logits.len();
        let k = self.params.top_k;
        let top_p = self.params.top_p;
        let scaled = |i: usize| logits[i] as f64 * inv_t;
        let max = scaled(argmax(logits));

        // Candidates as (index, unnormalised prob = exp(z - max)).
        let cands: Vec<(usize, f64)>;
        if k > 0 && k < v {
            // One pass, no [V]-sized allocation: the same k tokens as sorting all V by `desc`
            // (T > 0 scales monotonically, and distinct f32 logits stay distinct in f64).
            cands = top_k_of(logits, k).into_iter().map(|i| (i, scaled(i))).collect();
            return self.draw_top_k(cands, rng);
        } else if top_p < 1.0 {
            // Full support but only the head matters: grow a sorted prefix until it holds
            // top_p of the total mass (avoids sorting all V entries in the common case).
            let mut all: Vec<(usize, f64)> = (0..v).map(|i| (i, (scaled(i) - max).exp())).collect();
            let total: f64 = all.iter().map(|c| c.1).sum(); // in index order, before any reordering
            let mut m = 64.min(v);
            loop {
                // Partition in place (no copy of the row): `desc` is a total order, so the m
                // largest and their sorted order do not depend on the array's current permutation.
                if m < v {
                    all.select_nth_unstable_by(m - 1, desc);
                }
                all[..m].sort_by(desc);
                let mass: f64 = all[..m].iter().map(|c| c.1).sum();
                if m == v || mass >= top_p * total {
                    all.truncate(m);
                    cands = all;
                    break;
                }
                m = (m * 4).min(v);
            }
            // Renormalisation below uses the kept mass, so express top_p against the total.
            return self.draw_nucleus(&cands, total, rng);
        } else {
            cands = (0..v).map(|i| (i, (scaled(i) - max).exp())).collect();
        }
        let total: f64 = cands.iter().map(|c| c.1).sum();
        if top_p < 1.0 {
            return self.draw_nucleus(&cands, total, rng);
        }
        draw(&cands, total, rng)
    }

    /// Draws from the `k` largest logits of a row, given as (token ids, logits) in any order —
    /// e.g. from an on-device `topk`, so that only `[B, k]` values leave the GPU. Gives the same
    /// token as [`Sampler::sample`] on the full row (same candidates, same order, same single
    /// draw), except when logits tie at the k-th place. Needs `top_k > 0` and a temperature > 0.
    pub fn sample_top_k(&self, ids: &[i64], logits: &[f32], rng: &mut impl Rng) -> usize {
        assert!(!ids.is_empty() && ids.len() == logits.len(), "bad top-k candidates");
        let inv_t = 1.0 / self.params.temperature;
        let cands = ids.iter().zip(logits).map(|(&i, &z)| (i as usize, z as f64 * inv_t)).collect();
        self.draw_top_k(cands, rng)
    }

    /// `cands`: (token, logit / T) of the top-k tokens, any order.
    fn draw_top_k(&self, mut cands: Vec<(usize, f64)>, rng: &mut impl Rng) -> usize {
        cands.sort_by(desc);
        let max = cands[0].1;
        for c in cands.iter_mut() {
            c.1 = (c.1 - max).exp();
        }
        let total: f64 = cands.iter().map(|c| c.1).sum();
        if self.params.top_p < 1.0 {
            return self.draw_nucleus(&cands, total, rng);
        }
        draw(&cands, total, rng)
    }

    /// `cands` sorted by descending probability; keep the smallest prefix whose mass reaches
    /// `top_p * total` (at least one token), renormalise and draw.
    fn draw_nucleus(&self, cands: &[(usize, f64)], total: f64, rng: &mut impl Rng) -> usize {
        let target = self.params.top_p * total;
        let mut acc = 0.0;
        let mut n = 0;
        for c in cands {
            acc += c.1;
            n += 1;
            if acc >= target {
                break;
            }
        }
        draw(&cands[..n], acc, rng)
    }
}

/// Indices of the `k` largest values (ties: lower index first; NaN never selected before a
/// number), in no particular order. O(V) with a k-sized buffer; `0 < k < x.len()`.
fn top_k_of(x: &[f32], k: usize) -> Vec<usize> {
    // "a beats b": larger value, or equal value and lower index (NaN counts as smallest).
    let beats = |a: usize, b: usize| match x[a].partial_cmp(&x[b]) {
        Some(Ordering::Greater) => true,
        Some(Ordering::Less) => false,
        Some(Ordering::Equal) => a < b,
        None => x[b].is_nan() && !x[a].is_nan() || (x[a].is_nan() == x[b].is_nan() && a < b),
    };
    let mut best: Vec<usize> = (0..k).collect();
    // Position of the weakest kept entry; recomputed only when it is replaced.
    let weakest = |best: &[usize]| (0..best.len()).fold(0, |w, j| if beats(best[w], best[j]) { j } else { w });
    let mut w = weakest(&best);
    for i in k..x.len() {
        if beats(i, best[w]) {
            best[w] = i;
            w = weakest(&best);
        }
    }
    best
}

/// Inverse-CDF draw over `cands` in their given order.
fn draw(cands: &[(usize, f64)], total: f64, rng: &mut impl Rng) -> usize {
    let u: f64 = rng.gen::<f64>() * total;
    let mut acc = 0.0;
    for c in cands {
        acc += c.1;
        if u < acc {
            return c.0;
        }
    }
    cands.last().expect("non-empty").0
}

/// Index of the largest value (lowest index on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        // deterministic, non-trivial distribution over 50 tokens
        (0..50).map(|i| ((i * 37 % 50) as f32 / 10.0).sin() * 3.0).collect()
    }

    fn draws(p: SamplingParams, seed: (u64, u64, u64), n: usize) -> Vec<usize> {
        let s = Sampler::new(p);
        let mut rng = row_rng(seed.0, seed.1, seed.2);
        let l = logits();
        (0..n).map(|_| s.sample(&l, &mut rng)).collect()
    }

    #[test]
    fn row_seed_is_pinned() {
        assert_eq!(row_seed(0, 0, 0), PINNED_SEED_000);
        assert_ne!(row_seed(1, 2, 3), row_seed(1, 3, 2));
        assert_ne!(row_seed(1, 2, 3), row_seed(2, 2, 3));
    }

    #[test]
    fn seeded_draws_are_pinned() {
        let p = SamplingParams { temperature: 1.0, ..Default::default() };
        assert_eq!(draws(p.clone(), (42, 7, 3), 12), PINNED_T1);
        let p = SamplingParams { temperature: 0.7, top_p: 0.9, ..Default::default() };
        assert_eq!(draws(p, (42, 7, 3), 12), PINNED_T07_P09);
        let p = SamplingParams { temperature: 1.3, top_k: 5, ..Default::default() };
        assert_eq!(draws(p, (42, 7, 3), 12), PINNED_T13_K5);
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let p = SamplingParams::default();
        assert_eq!(draws(p.clone(), (1, 2, 3), 64), draws(p.clone(), (1, 2, 3), 64));
        assert_ne!(draws(p.clone(), (1, 2, 3), 64), draws(p, (1, 2, 4), 64));
    }

    #[test]
    fn greedy_is_argmax_and_uses_no_randomness() {
        let l = logits();
        let s = Sampler::new(SamplingParams::greedy(1));
        let mut rng = row_rng(0, 0, 0);
        let before = rng.clone().gen::<u64>();
        assert_eq!(s.sample(&l, &mut rng), argmax(&l));
        assert_eq!(rng.gen::<u64>(), before);
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    /// The nucleus path (partition in place, grow the head) draws exactly what the textbook
    /// algorithm draws: sort every token by probability, keep the smallest prefix reaching
    /// top_p of the total, one uniform draw over it.
    #[test]
    fn nucleus_equals_full_sort_reference() {
        use rand::SeedableRng;
        let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..40 {
            let v = [5usize, 64, 65, 300, 2000][case % 5];
            // Peaked and flat rows alike (the head grows past 64 on the flat ones).
            let spread = if case % 2 == 0 { 8.0 } else { 0.3 };
            let l: Vec<f32> = (0..v).map(|_| (g.gen::<f64>() * spread) as f32).collect();
            let p = SamplingParams { temperature: 0.7, top_p: [0.5, 0.9, 0.99][case % 3], ..Default::default() };
            let s = Sampler::new(p.clone());
            let mut r1 = row_rng(case as u64, 1, 2);
            let mut r2 = r1.clone();
            for _ in 0..20 {
                let got = s.sample(&l, &mut r1);
                let inv_t = 1.0 / p.temperature;
                let max = l[argmax(&l)] as f64 * inv_t;
                let all: Vec<(usize, f64)> = (0..v).map(|i| (i, (l[i] as f64 * inv_t - max).exp())).collect();
                let total: f64 = all.iter().map(|c| c.1).sum();
                let mut sorted = all.clone();
                sorted.sort_by(desc);
                let (mut acc, mut n) = (0.0, 0);
                for c in &sorted {
                    acc += c.1;
                    n += 1;
                    if acc >= p.top_p * total {
                        break;
                    }
                }
                assert_eq!(got, draw(&sorted[..n], acc, &mut r2), "case {case}");
            }
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let l = logits();
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap().then(a.cmp(&b)));
        let top3: Vec<usize> = idx[..3].to_vec();
        for d in draws(SamplingParams { top_k: 3, ..Default::default() }, (5, 5, 5), 300) {
            assert!(top3.contains(&d), "{d} not in top-3");
        }
        // nucleus with tiny p keeps only the argmax
        for d in draws(SamplingParams { top_p: 1e-6, ..Default::default() }, (5, 5, 6), 50) {
            assert_eq!(d, idx[0]);
        }
        // p = 0.5: support is the smallest descending prefix reaching half the mass
        let m = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let probs: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp()).collect();
        let tot: f64 = probs.iter().sum();
        let (mut acc, mut n) = (0.0, 0);
        while acc < 0.5 * tot {
            acc += probs[idx[n]];
            n += 1;
        }
        let allowed = &idx[..n];
        for d in draws(SamplingParams { top_p: 0.5, ..Default::default() }, (5, 5, 7), 300) {
            assert!(allowed.contains(&d));
        }
    }

    #[test]
    fn temperature_one_matches_softmax_frequencies() {
        let l = vec![0.0f32, 1.0, 2.0];
        let s = Sampler::new(SamplingParams::default());
        let mut rng = row_rng(9, 9, 9);
        let mut counts = [0usize; 3];
        let n = 30000;
        for _ in 0..n {
            counts[s.sample(&l, &mut rng)] += 1;
        }
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for i in 0..3 {
            let expect = (l[i] as f64).exp() / z;
            let got = counts[i] as f64 / n as f64;
            assert!((expect - got).abs() < 0.01, "token {i}: {got} vs {expect}");
        }
    }

    // Pinned values: any change to the seeding or drawing scheme breaks reproducibility of
    // stored samples, so it must show up here.
    const PINNED_SEED_000: u64 = 2558736989570252433;
    const PINNED_T1: [usize; 12] = [34, 45, 6, 18, 30, 49, 41, 26, 22, 34, 9, 18];
    const PINNED_T07_P09: [usize; 12] = [10, 6, 45, 14, 26, 2, 33, 37, 14, 10, 45, 14];
    const PINNED_T13_K5: [usize; 12] = [22, 14, 18, 45, 41, 14, 22, 41, 45, 22, 18, 45];

    #[test]
    fn top_k_candidates_draw_like_the_full_row() {
        // The on-device path hands over only the k best (id, logit) pairs, in any order.
        let l = logits();
        for (k, top_p) in [(1, 1.0), (5, 1.0), (20, 0.8), (49, 0.95)] {
            let p = SamplingParams { temperature: 0.7, top_p, top_k: k, ..Default::default() };
            let s = Sampler::new(p);
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap());
            let mut top: Vec<usize> = order[..k].to_vec();
            top.reverse(); // any order must do
            let ids: Vec<i64> = top.iter().map(|&i| i as i64).collect();
            let vals: Vec<f32> = top.iter().map(|&i| l[i]).collect();
            for sample_idx in 0..200 {
                let (mut r1, mut r2) = (row_rng(3, 9, sample_idx), row_rng(3, 9, sample_idx));
                assert_eq!(s.sample(&l, &mut r1), s.sample_top_k(&ids, &vals, &mut r2), "k={k} i={sample_idx}");
            }
        }
    }

    #[test]
    fn top_k_of_matches_a_full_sort() {
        let mut x: Vec<f32> = (0..500).map(|i| ((i * 7919 % 1000) as f32 / 37.0).sin()).collect();
        x[17] = x[3]; // a tie
        x[250] = f32::NAN;
        for k in [1, 2, 20, 499] {
            let mut got = top_k_of(&x, k);
            got.sort_unstable();
            let mut all: Vec<(usize, f64)> =
                (0..x.len()).map(|i| (i, if x[i].is_nan() { f64::NEG_INFINITY } else { x[i] as f64 })).collect();
            all.sort_by(desc);
            let mut want: Vec<usize> = all[..k].iter().map(|c| c.0).collect();
            want.sort_unstable();
            assert_eq!(got, want, "k={k}");
        }
    }
}
