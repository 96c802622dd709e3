//! AdamW with its state owned as tensors, so it can be checkpointed and kept in f32 beside
//! bf16 weights (tch's `nn::Optimizer` can do neither; libtorch's fused `_fused_adamw_` is not
//! bound by tch, so the update is written with in-place tensor ops, in PyTorch's order).
//!
//! One step, per parameter p with gradient g (f32 master weights w when p is not f32):
//!
//! ```text
//! w ← w · (1 − lr·wd)                         decoupled weight decay
//! m ← β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! w ← w − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)
//! p ← w (cast)
//! ```
//!
//! Before it, the gradients are clipped to a total L2 norm of `grad_clip` (PyTorch's
//! `clip_grad_norm_`: scale by min(1, clip / (norm + 1e-6))); a non-finite norm skips the step
//! (as verl does) and is reported.

use super::{Result, RlError};
use crate::dist::{ProcessGroup, ReduceOp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// The `[optim]` section. Defaults are the paper's (verl's FSDP worker defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Constant learning rate (paper 1e-6; no warmup, no schedule).
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_b1")]
    pub beta1: f64,
    #[serde(default = "d_b2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Decoupled weight decay (paper / verl 0.01).
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Total gradient L2 norm clip (paper 1.0); 0 disables.
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
}

fn d_lr() -> f64 {
    1e-6
}
fn d_b1() -> f64 {
    0.9
}
fn d_b2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_wd() -> f64 {
    0.01
}
fn d_clip() -> f64 {
    1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: d_lr(),
            beta1: d_b1(),
            beta2: d_b2(),
            eps: d_eps(),
            weight_decay: d_wd(),
            grad_clip: d_clip(),
        }
    }
}

impl OptimConfig {
    pub fn validate(&self, section: &str) -> std::result::Result<(), String> {
        let ok = |k: &str, v: f64, good: bool| {
            if v.is_finite() && good {
                Ok(())
            } else {
                Err(format!("{section}.{k} = {v} is out of range"))
            }
        };
        ok("lr", self.lr, self.lr > 0.0)?;
        ok("beta1", self.beta1, (0.0..1.0).contains(&self.beta1))?;
        ok("beta2", self.beta2, (0.0..1.0).contains(&self.beta2))?;
        ok("eps", self.eps, self.eps > 0.0)?;
        ok("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        ok("grad_clip", self.grad_clip, self.grad_clip >= 0.0)
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Total L2 norm of all gradients, before clipping.
    pub grad_norm: f64,
    /// The step was skipped because the norm was not finite.
    pub skipped: bool,
}

/// AdamW over named parameters.
pub struct AdamW {
    pub cfg: OptimConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    /// f32 master copies when the parameters are stored in another dtype.
    master: Option<Vec<Tensor>>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Optimizer steps taken so far (t of the bias corrections).
    pub step: u64,
    /// Data-parallel training: gradients reduced over the process group, state maybe sharded.
    dist: Option<DistState>,
}

/// Parameters grouped into communication buckets (whole parameters, in name order, at most
/// `bucket_elems` elements unless one tensor alone is larger, which then has a bucket of its own):
/// one collective per bucket instead of one per tensor.
#[derive(Debug, Clone)]
struct Bucket {
    /// Indices into `params`.
    params: std::ops::Range<usize>,
    numel: i64,
    /// `numel` rounded up to a multiple of the world size.
    padded: i64,
}

impl Bucket {
    fn shard(&self, world: i64) -> i64 {
        self.padded / world
    }
}

struct DistState {
    pg: Arc<ProcessGroup>,
    buckets: Vec<Bucket>,
    /// ZeRO-1: this rank's shard of every bucket's f32 master weights and AdamW moments (the
    /// full-size state above stays empty).
    zero1: Option<Zero1State>,
}

struct Zero1State {
    master: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
}

/// Default bucket size: 2^25 elements (128 MiB of f32 gradients).
pub const BUCKET_ELEMS: i64 = 1 << 25;

impl AdamW {
    /// Takes the trainable variables `(name, tensor)` in a fixed (name) order.
    pub fn new(mut vars: Vec<(String, Tensor)>, cfg: OptimConfig) -> Result<AdamW> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let needs_master = vars.iter().any(|(_, t)| t.kind() != Kind::Float);
        let (names, params): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        let zeros = |p: &Tensor| Tensor::zeros(p.size(), (Kind::Float, p.device()));
        let master = if needs_master {
            Some(tch::no_grad(|| params.iter().map(|p| p.detach().to_kind(Kind::Float)).collect()))
        } else {
            None
        };
        let exp_avg = params.iter().map(zeros).collect();
        let exp_avg_sq = params.iter().map(zeros).collect();
        Ok(AdamW { cfg, names, params, master, exp_avg, exp_avg_sq, step: 0, dist: None })
    }

    /// AdamW for data-parallel training over `pg`: each step first sums the gradients over the
    /// ranks (bucketed, in f32; the loss is already normalised by the global token count, so the
    /// sum is the single-process gradient). With `zero1` the optimizer state is sharded (ZeRO
    /// stage 1): gradients are reduce-scattered, each rank updates its shard of the f32 master
    /// weights and moments, and the updated weights are all-gathered in the parameters' dtype.
    /// Call with the same parameters on every rank, after they hold the same values.
    pub fn distributed(
        vars: Vec<(String, Tensor)>,
        cfg: OptimConfig,
        pg: Arc<ProcessGroup>,
        zero1: bool,
        bucket_elems: i64,
    ) -> Result<AdamW> {
        let mut vars = vars;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((n, t)) = vars.iter().find(|(_, t)| t.kind() != vars[0].1.kind()) {
            return Err(RlError::Config(format!(
                "data-parallel AdamW needs one parameter dtype: {n} is {:?}, {} is {:?}",
                t.kind(),
                vars[0].0,
                vars[0].1.kind()
            )));
        }
        let world = pg.world() as i64;
        let cap = bucket_elems.max(1);
        let mut buckets = vec![];
        let (mut start, mut numel) = (0usize, 0i64);
        for (i, (_, t)) in vars.iter().enumerate() {
            let n = t.numel() as i64;
            if numel > 0 && numel + n > cap {
                buckets.push(Bucket { params: start..i, numel, padded: (numel + world - 1) / world * world });
                (start, numel) = (i, 0);
            }
            numel += n;
        }
        if numel > 0 {
            buckets.push(Bucket { params: start..vars.len(), numel, padded: (numel + world - 1) / world * world });
        }
        if !zero1 {
            let mut opt = AdamW::new(vars, cfg)?;
            opt.dist = Some(DistState { pg, buckets, zero1: None });
            return Ok(opt);
        }
        let (names, params): (Vec<String>, Vec<Tensor>) = vars.into_iter().unzip();
        let rank = pg.rank() as i64;
        let z = tch::no_grad(|| -> Result<Zero1State> {
            let mut st = Zero1State { master: vec![], exp_avg: vec![], exp_avg_sq: vec![] };
            for b in &buckets {
                let flat = flatten(&params[b.params.clone()], b.padded, |p| Some(p.detach()))?; // [padded] f32
                let sh = b.shard(world);
                st.master.push(flat.narrow(0, rank * sh, sh).copy()); // [shard]
                st.exp_avg.push(Tensor::zeros([sh], (Kind::Float, flat.device())));
                st.exp_avg_sq.push(Tensor::zeros([sh], (Kind::Float, flat.device())));
            }
            Ok(st)
        })?;
        Ok(AdamW {
            cfg,
            names,
            params,
            master: None,
            exp_avg: vec![],
            exp_avg_sq: vec![],
            step: 0,
            dist: Some(DistState { pg, buckets, zero1: Some(z) }),
        })
    }

    /// Whether the state is sharded across ranks (ZeRO-1): each rank checkpoints its own.
    pub fn is_sharded(&self) -> bool {
        self.dist.as_ref().is_some_and(|d| d.zero1.is_some())
    }

    /// Whether gradients are reduced over a process group ([`AdamW::distributed`]).
    pub fn is_distributed(&self) -> bool {
        self.dist.is_some()
    }

    /// Which parameters have a gradient on at least one rank (one small all-reduce): the others
    /// are left alone by the step, as a single process leaves a parameter without a gradient.
    fn graded_anywhere(&self, d: &DistState) -> Result<Vec<bool>> {
        let mut flags: Vec<f64> = self.params.iter().map(|p| p.grad().defined() as u8 as f64).collect();
        d.pg.all_reduce_f64(&mut flags, ReduceOp::Max).map_err(dist_err)?;
        Ok(flags.into_iter().map(|f| f > 0.0).collect())
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// The gradients this step uses: the parameters' own, or (data-parallel, replicated state)
    /// their sum over the ranks. `None` for a parameter without a gradient anywhere.
    fn gradients(&self) -> Result<Vec<Option<Tensor>>> {
        let own: Vec<Option<Tensor>> = self
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                g.defined().then_some(g)
            })
            .collect();
        let Some(d) = &self.dist else { return Ok(own) };
        let graded = self.graded_anywhere(d)?;
        let mut out: Vec<Option<Tensor>> = (0..self.params.len()).map(|_| None).collect();
        tch::no_grad(|| -> Result<()> {
            for b in &d.buckets {
                let range = b.params.clone();
                if !range.clone().any(|i| graded[i]) {
                    continue; // no rank has a gradient for any of these (decided the same everywhere)
                }
                let flat = flatten(&self.params[range.clone()], b.padded, |p| {
                    let g = p.grad();
                    g.defined().then_some(g)
                })?; // [padded] f32
                d.pg.all_reduce(&[&flat], ReduceOp::Sum).map_err(dist_err)?;
                // The sums (taken in f32) go back into each gradient in place, so only one f32
                // bucket is alive at a time; a parameter without a gradient keeps its f32 slice.
                let mut off = 0;
                for i in range {
                    let n = self.params[i].numel() as i64;
                    let sum = flat.narrow(0, off, n).view(self.params[i].size().as_slice());
                    let mut g = self.params[i].grad();
                    out[i] = if !graded[i] {
                        None
                    } else if g.defined() {
                        let _ = g.f_copy_(&sum)?;
                        Some(g)
                    } else {
                        Some(sum.copy())
                    };
                    off += n;
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Total L2 norm of the current gradients (0 for parameters without one), before any
    /// data-parallel reduction.
    pub fn grad_norm(&self) -> Result<f64> {
        let grads: Vec<Option<Tensor>> = self.params.iter().map(|p| Some(p.grad()).filter(Tensor::defined)).collect();
        norm_of(&grads)
    }

    /// Clips the gradients and takes one AdamW step.
    pub fn step(&mut self) -> Result<StepStats> {
        if self.is_sharded() {
            return self.step_zero1();
        }
        let grads = self.gradients()?;
        let grad_norm = norm_of(&grads)?;
        let Some((scale, h)) = self.begin_step(grad_norm) else {
            return Ok(StepStats { grad_norm, skipped: true });
        };
        tch::no_grad(|| -> Result<()> {
            for i in 0..self.params.len() {
                let Some(g) = &grads[i] else { continue };
                let w = match &self.master {
                    Some(m) => m[i].shallow_clone(),
                    None => self.params[i].shallow_clone(),
                };
                adamw_update(w.shallow_clone(), &mut self.exp_avg[i], &mut self.exp_avg_sq[i], g, scale, &h)?;
                if self.master.is_some() {
                    let _ = self.params[i].f_copy_(&w)?;
                }
            }
            Ok(())
        })?;
        self.zero_grad();
        Ok(StepStats { grad_norm, skipped: false })
    }

    /// A non-finite norm skips the step (gradients cleared: `None`); otherwise counts the step and
    /// returns the clip scale and this step's constants.
    fn begin_step(&mut self, grad_norm: f64) -> Option<(f64, Hyper)> {
        if !grad_norm.is_finite() {
            self.zero_grad();
            return None;
        }
        let scale = if self.cfg.grad_clip > 0.0 { (self.cfg.grad_clip / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
        self.step += 1;
        Some((scale, self.hyper()))
    }

    fn hyper(&self) -> Hyper {
        let c = &self.cfg;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        Hyper {
            decay: 1.0 - c.lr * c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            step_size: c.lr / bc1,
            bc2_sqrt: bc2.sqrt(),
            eps: c.eps,
        }
    }

    /// ZeRO-1: reduce-scatter each bucket's gradients, update this rank's shard, all-gather.
    fn step_zero1(&mut self) -> Result<StepStats> {
        let d = self.dist.as_ref().expect("sharded implies distributed");
        let world = d.pg.world() as i64;
        let graded = self.graded_anywhere(d)?;
        // Per bucket: None when every parameter has a gradient somewhere, else this rank's shard
        // of a mask (true = update) so parameters without one keep their weights and moments.
        let mut masks: Vec<Option<Tensor>> = vec![];
        for b in &d.buckets {
            if b.params.clone().all(|i| graded[i]) {
                masks.push(None);
                continue;
            }
            let dev = self.params[b.params.start].device();
            let mut parts: Vec<Tensor> = b
                .params
                .clone()
                .map(|i| Tensor::full([self.params[i].numel() as i64], graded[i] as u8 as i64, (Kind::Bool, dev)))
                .collect();
            if b.padded > b.numel {
                parts.push(Tensor::zeros([b.padded - b.numel], (Kind::Bool, dev)));
            }
            let sh = b.shard(world);
            masks.push(Some(Tensor::cat(&parts, 0).narrow(0, d.pg.rank() as i64 * sh, sh).copy()));
        }
        let shards: Vec<Tensor> = tch::no_grad(|| -> Result<Vec<Tensor>> {
            let mut v = vec![];
            for b in &d.buckets {
                let flat = flatten(&self.params[b.params.clone()], b.padded, |p| {
                    let g = p.grad();
                    g.defined().then_some(g)
                })?; // [padded] f32
                let out = Tensor::zeros([b.shard(world)], (Kind::Float, flat.device()));
                d.pg.reduce_scatter(&out, &flat).map_err(dist_err)?;
                v.push(out);
            }
            Ok(v)
        })?;
        let mut sq = [shards.iter().map(|g| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>()];
        d.pg.all_reduce_f64(&mut sq, ReduceOp::Sum).map_err(dist_err)?;
        let grad_norm = sq[0].sqrt();
        let Some((scale, h)) = self.begin_step(grad_norm) else {
            return Ok(StepStats { grad_norm, skipped: true });
        };
        let d = self.dist.as_mut().expect("sharded implies distributed");
        let z = d.zero1.as_mut().expect("sharded");
        tch::no_grad(|| -> Result<()> {
            for (k, b) in d.buckets.iter().enumerate() {
                let before =
                    masks[k].as_ref().map(|_| (z.master[k].copy(), z.exp_avg[k].copy(), z.exp_avg_sq[k].copy()));
                adamw_update(
                    z.master[k].shallow_clone(),
                    &mut z.exp_avg[k],
                    &mut z.exp_avg_sq[k],
                    &shards[k],
                    scale,
                    &h,
                )?;
                if let (Some(mask), Some((w0, m0, v0))) = (&masks[k], before) {
                    for (t, old) in [(&mut z.master[k], w0), (&mut z.exp_avg[k], m0), (&mut z.exp_avg_sq[k], v0)] {
                        let kept = t.where_self(mask, &old);
                        let _ = t.f_copy_(&kept)?;
                    }
                }
                // All-gather the updated shard in the parameters' dtype and copy it back.
                let kind = self.params[b.params.start].kind();
                let local = z.master[k].to_kind(kind); // [shard]
                let full = Tensor::zeros([b.padded], (kind, local.device()));
                d.pg.all_gather(&full, &local).map_err(dist_err)?;
                let mut off = 0;
                for i in b.params.clone() {
                    let n = self.params[i].numel() as i64;
                    let src = full.narrow(0, off, n).view(self.params[i].size().as_slice());
                    let _ = self.params[i].f_copy_(&src)?;
                    off += n;
                }
            }
            Ok(())
        })?;
        self.zero_grad();
        Ok(StepStats { grad_norm, skipped: false })
    }

    /// The state to checkpoint: `exp_avg.NAME`, `exp_avg_sq.NAME`, `master.NAME` (when kept) and
    /// `step` (a 1-element int64 tensor).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        if let Some(z) = self.dist.as_ref().and_then(|d| d.zero1.as_ref().map(|z| (d, z))) {
            let (d, z) = z;
            let mut out = vec![];
            for k in 0..d.buckets.len() {
                out.push((format!("zero1.bucket{k}.master"), z.master[k].shallow_clone()));
                out.push((format!("zero1.bucket{k}.exp_avg"), z.exp_avg[k].shallow_clone()));
                out.push((format!("zero1.bucket{k}.exp_avg_sq"), z.exp_avg_sq[k].shallow_clone()));
            }
            let total: i64 = d.buckets.iter().map(|b| b.numel).sum();
            let layout = [d.pg.world() as i64, d.pg.rank() as i64, d.buckets.len() as i64, total];
            out.push(("zero1.layout".into(), Tensor::from_slice(&layout)));
            out.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
            return out;
        }
        let mut out = Vec::with_capacity(3 * self.names.len() + 1);
        for (i, n) in self.names.iter().enumerate() {
            out.push((format!("exp_avg.{n}"), self.exp_avg[i].shallow_clone()));
            out.push((format!("exp_avg_sq.{n}"), self.exp_avg_sq[i].shallow_clone()));
            if let Some(m) = &self.master {
                out.push((format!("master.{n}"), m[i].shallow_clone()));
            }
        }
        out.push(("step".into(), Tensor::from_slice(&[self.step as i64])));
        out
    }

    /// Restores [`AdamW::state`] (names and shapes must match this optimizer's parameters).
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        let map: std::collections::HashMap<String, Tensor> = state.into_iter().collect();
        let get = |k: &str| map.get(k).ok_or_else(|| RlError::Checkpoint(format!("optimizer state has no tensor {k}")));
        if let Some(d) = self.dist.as_mut() {
            if let Some(z) = d.zero1.as_mut() {
                let total: i64 = d.buckets.iter().map(|b| b.numel).sum();
                let want = vec![d.pg.world() as i64, d.pg.rank() as i64, d.buckets.len() as i64, total];
                let have = Vec::<i64>::try_from(get("zero1.layout")?)?;
                if have != want {
                    return Err(RlError::Checkpoint(format!(
                        "ZeRO-1 shard layout [world, rank, buckets, parameters] is {have:?} in the checkpoint but {want:?} here: resume with the same world size"
                    )));
                }
                tch::no_grad(|| -> Result<()> {
                    for k in 0..d.buckets.len() {
                        for (key, dst) in [
                            ("master", &mut z.master[k]),
                            ("exp_avg", &mut z.exp_avg[k]),
                            ("exp_avg_sq", &mut z.exp_avg_sq[k]),
                        ] {
                            let src = get(&format!("zero1.bucket{k}.{key}"))?;
                            if src.size() != dst.size() {
                                return Err(RlError::Checkpoint(format!(
                                    "optimizer tensor zero1.bucket{k}.{key} has the wrong shape"
                                )));
                            }
                            dst.f_copy_(src)?;
                        }
                    }
                    Ok(())
                })?;
                self.step = get("step")?.int64_value(&[0]) as u64;
                return Ok(());
            }
        }
        if map.contains_key("zero1.layout") {
            return Err(RlError::Checkpoint(
                "the checkpoint's optimizer state is sharded (ZeRO-1): resume with train.zero1 and the same world size"
                    .into(),
            ));
        }
        tch::no_grad(|| -> Result<()> {
            for (i, n) in self.names.iter().enumerate() {
                for (key, dst) in [("exp_avg", &mut self.exp_avg[i]), ("exp_avg_sq", &mut self.exp_avg_sq[i])] {
                    let src = get(&format!("{key}.{n}"))?;
                    if src.size() != dst.size() {
                        return Err(RlError::Checkpoint(format!(
                            "optimizer tensor {key}.{n} has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    dst.f_copy_(src)?;
                }
                if let Some(m) = &mut self.master {
                    m[i].f_copy_(get(&format!("master.{n}"))?)?;
                }
            }
            Ok(())
        })?;
        self.step = get("step")?.int64_value(&[0]) as u64;
        Ok(())
    }
}

/// Per-step AdamW constants.
struct Hyper {
    decay: f64,
    beta1: f64,
    beta2: f64,
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
}

/// One AdamW update of `w` (f32, in place) from gradient `g` scaled by `scale`, in PyTorch's order.
fn adamw_update(mut w: Tensor, m: &mut Tensor, v: &mut Tensor, g: &Tensor, scale: f64, h: &Hyper) -> Result<()> {
    let mut g = g.to_kind(Kind::Float);
    if scale < 1.0 {
        g = g * scale;
    }
    let _ = w.f_mul_scalar_(h.decay)?;
    let _ = m.f_lerp_(&g, 1.0 - h.beta1)?;
    let _ = v.f_mul_scalar_(h.beta2)?;
    let _ = v.f_addcmul_(&(&g * (1.0 - h.beta2)), &g)?;
    let denom = v.f_sqrt()? / h.bc2_sqrt + h.eps;
    let _ = w.f_addcdiv_(&(&*m * -h.step_size), &denom)?;
    Ok(())
}

/// Total L2 norm of the gradients that exist.
fn norm_of(grads: &[Option<Tensor>]) -> Result<f64> {
    let norms: Vec<Tensor> = grads.iter().flatten().map(|g| g.to_kind(Kind::Float).norm()).collect();
    if norms.is_empty() {
        return Ok(0.0);
    }
    Ok(Tensor::stack(&norms, 0).norm().f_double_value(&[])?)
}

/// The tensors `pick` returns for `params` (zeros where it returns `None`), flattened into one f32
/// vector and zero-padded to `padded` elements.
fn flatten(params: &[Tensor], padded: i64, pick: impl Fn(&Tensor) -> Option<Tensor>) -> Result<Tensor> {
    let dev = params.first().map(|p| p.device()).unwrap_or(tch::Device::Cpu);
    // One buffer, filled in place (no second copy of the bucket while concatenating).
    let flat = Tensor::zeros([padded], (Kind::Float, dev));
    let mut off = 0;
    for p in params {
        let n = p.numel() as i64;
        if let Some(t) = pick(p) {
            let _ = flat.narrow(0, off, n).f_copy_(&t.reshape([-1]))?;
        }
        off += n;
    }
    Ok(flat)
}

fn dist_err(e: crate::dist::DistError) -> RlError {
    RlError::Dist(e.to_string())
}
