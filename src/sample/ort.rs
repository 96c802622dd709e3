//! ONNX Runtime session over an export directory, and batched KV-cache generation with the
//! same seeding and sampling as the tch path (`crate::model::sampler`), so both backends draw
//! identical tokens from identical logits.
//!
//! The `present.*` outputs of one step are fed back as the `past_key_values.*` inputs of the
//! next without leaving ONNX Runtime's memory (no host copies of the cache).
//!
//! When the draw needs only the k best logits of a row (top-k sampling; greedy with k = 1), the
//! session is asked for the graph's `top_logits` / `top_ids` / `logit_sums` instead of `logits`:
//! `TopK` runs inside ONNX Runtime and `[B, k]` values reach the host instead of `[B, V]`
//! (exports made before those outputs existed fall back to full rows).
//!
//! A fused export (`export --graph fused`) generates through [`fused`] instead: a pre-allocated
//! cache updated in place through IO binding, slots refilled as rows finish.

use super::{Result, SampleError};
use crate::export::{read_manifest, ExportDType, ExportManifest, GraphKind, ONNX_FILE};
use crate::model::generate::{
    generation_what, row_caps, sampling_threads, top_candidates, unique_prompts, validate_requests, GenRequest,
    Generation, LeftPadded, StepScores,
};
use crate::model::memory::{self, GenShape};
use crate::model::sampler::{row_rng, Sampler, SamplingParams};
use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::{builder::GraphOptimizationLevel, HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{DynTensor, DynValue, Tensor, TensorElementType};
use std::path::{Path, PathBuf};

mod fused;

fn ort_err(e: impl std::fmt::Display) -> SampleError {
    SampleError::Ort(e.to_string().lines().next().unwrap_or("").to_string())
}

/// The process-wide ONNX Runtime environment (see [`crate::runtime::ort_environment`]).
pub fn ort_environment() -> Result<(Environment, PathBuf)> {
    crate::runtime::ort_environment().map_err(|e| SampleError::Runtime(e.to_string()))
}

/// Where the session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtDevice {
    Cpu,
    /// CUDA execution provider on this device id; registration failure is an error (never a
    /// silent CPU fallback).
    Cuda(i32),
}

impl std::str::FromStr for OrtDevice {
    type Err = SampleError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(OrtDevice::Cpu),
            "cuda" | "gpu" => Ok(OrtDevice::Cuda(0)),
            o => {
                o.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(OrtDevice::Cuda).ok_or_else(|| {
                    SampleError::BadInput(format!("unknown device {s:?} (expected cpu, cuda or cuda:N)"))
                })
            }
        }
    }
}

/// Session options.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    pub device: OrtDevice,
    /// Intra-op threads (0 = ONNX Runtime's default: one per physical core).
    pub threads: usize,
    /// Rows of a batch with the same prompt prefill once and copy its cache (same tokens either
    /// way; off only to measure what it saves).
    pub shared_prefill: bool,
    /// `sample` keeps `batch` rows in flight and refills finished rows' slots
    /// ([`OrtModel::generate_stream`]) instead of decoding fixed batches. Every row equals the row
    /// generated alone where the kernels are batch-invariant (tested on our fixtures); fixed
    /// batches (the default) reproduce a resumed run bit for bit whatever the kernels do, because a
    /// resumed chunk is rebuilt from exactly the same rows.
    pub continuous: bool,
    /// Top-k and greedy steps select their candidates inside the graph (`TopK`), so only `[B, k]`
    /// values reach the host (same tokens either way; off only to measure what it saves).
    pub graph_top_k: bool,
    /// ONNX Runtime's profiler: per-node timings written as JSON to a file named after this
    /// prefix when the session ends.
    pub profile: Option<PathBuf>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            device: OrtDevice::Cpu,
            threads: 0,
            shared_prefill: true,
            continuous: false,
            graph_top_k: true,
            profile: None,
        }
    }
}

/// The KV cache of a batch: `present.*` values of the last call ([B, K, P, D] each, 2 per layer).
pub struct OrtKv {
    values: Vec<DynValue>,
    /// P
    pub len: usize,
    pub batch: usize,
}

/// A loaded export.
pub struct OrtModel {
    session: Session,
    pub manifest: ExportManifest,
    pub dir: PathBuf,
    /// Execution provider actually used ("CPUExecutionProvider" / "CUDAExecutionProvider").
    pub execution_provider: String,
    pub device: OrtDevice,
    /// Content identity of the export (checked against `fingerprint.json` when loaded).
    pub fingerprint: crate::fingerprint::Fingerprint,
    kv_type: TensorElementType,
    shared_prefill: bool,
    /// Threads for ONNX Runtime's kernels and for drawing tokens (0: one per core).
    threads: usize,
    /// See [`OrtOptions::continuous`].
    pub continuous: bool,
    /// Run options asking for the full `logits` (first) or for the top-k outputs (second; `None`
    /// for exports without them).
    run_full: RunOptions<HasSelectedOutputs>,
    run_top: Option<RunOptions<HasSelectedOutputs>>,
}

const TOP_OUTPUTS: [&str; 3] = ["top_logits", "top_ids", "logit_sums"];

impl OrtModel {
    /// Loads an export, after checking its files against `fingerprint.json` (a changed or
    /// incomplete export is an error naming the file).
    pub fn load(dir: &Path, opts: &OrtOptions) -> Result<OrtModel> {
        let manifest = read_manifest(dir)?;
        let fingerprint = crate::export::verify_fingerprint(dir)?;
        let (env, _) = ort_environment()?;
        let mut b = Session::builder(&env)
            .map_err(ort_err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(ort_err)?
            // Between runs the sampler works on the host (drawing tokens, managing the cache):
            // spinning ONNX Runtime workers would take those cores from it.
            .with_intra_op_spinning(false)
            .map_err(ort_err)?;
        if opts.threads > 0 {
            b = b.with_intra_threads(opts.threads).map_err(ort_err)?;
        }
        if let Some(p) = &opts.profile {
            b = b.with_profiling(p).map_err(ort_err)?;
        }
        let ep_name = match opts.device {
            OrtDevice::Cpu => "CPUExecutionProvider",
            #[cfg(feature = "cuda")]
            OrtDevice::Cuda(id) => {
                let ep = ort::ep::CUDA::default().with_device_id(id).build().error_on_failure();
                b = b.with_execution_providers([ep]).map_err(|e| {
                    SampleError::Ort(format!(
                        "cannot register the CUDA execution provider (device {id}): {} (is ORT_DYLIB_PATH pointing at onnxruntime-gpu's libonnxruntime.so, with its CUDA/cuDNN libraries loadable?)",
                        e.to_string().lines().next().unwrap_or("")
                    ))
                })?;
                "CUDAExecutionProvider"
            }
            #[cfg(not(feature = "cuda"))]
            OrtDevice::Cuda(_) => {
                return Err(SampleError::Ort(
                    "--device cuda needs a build with `--features cuda` (CUDA execution provider) and onnxruntime-gpu"
                        .into(),
                ))
            }
        };
        if manifest.graph == GraphKind::Fused && opts.device != OrtDevice::Cpu {
            return Err(SampleError::Ort(format!(
                "{} is a fused export, which runs on the CPU execution provider only (its cache rows are copied on the host): export with --graph standard for {ep_name}",
                dir.display()
            )));
        }
        let path = dir.join(ONNX_FILE);
        let session = b.commit_from_file(&path).map_err(|e| SampleError::Ort(format!("{}: {e}", path.display())))?;
        let output_names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        // Each kind of step asks only for its outputs, so ONNX Runtime prunes the other branch.
        let select = |skip: &[&str]| -> Result<RunOptions<HasSelectedOutputs>> {
            let sel = output_names
                .iter()
                .filter(|n| !skip.contains(&n.as_str()))
                .fold(OutputSelector::no_default(), |sel, n| sel.with(n.as_str()));
            Ok(RunOptions::new().map_err(ort_err)?.with_outputs(sel))
        };
        let has_top = TOP_OUTPUTS.iter().all(|t| output_names.iter().any(|n| n == t));
        let run_full = select(&TOP_OUTPUTS)?;
        let run_top = if has_top && opts.graph_top_k { Some(select(&["logits"])?) } else { None };
        let kv_type = match manifest.dtype {
            ExportDType::F32 => TensorElementType::Float32,
            ExportDType::F16 => TensorElementType::Float16,
        };
        tracing::debug!("ONNX session on {ep_name}: {}", path.display());
        Ok(OrtModel {
            session,
            manifest,
            dir: dir.to_path_buf(),
            execution_provider: ep_name.into(),
            device: opts.device,
            fingerprint,
            kv_type,
            run_full,
            run_top,
            shared_prefill: opts.shared_prefill,
            threads: opts.threads,
            continuous: opts.continuous,
        })
    }

    /// A fused export (`export --graph fused`): generation runs over a pre-allocated cache.
    pub fn is_fused(&self) -> bool {
        self.manifest.graph == GraphKind::Fused
    }

    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size
    }

    /// The dimensions memory plans need.
    pub fn gen_shape(&self) -> GenShape {
        let m = &self.manifest;
        GenShape {
            layers: m.num_layers as f64,
            kv_heads: m.num_kv_heads as f64,
            heads: m.num_attention_heads as f64,
            head_dim: m.head_dim as f64,
            hidden: m.hidden_size as f64,
            vocab: m.vocab_size as f64,
            elt: match m.dtype {
                ExportDType::F32 => 4.0,
                ExportDType::F16 => 2.0,
            },
        }
    }

    /// Where memory plans are checked: the host for the CPU EP, the device otherwise.
    pub fn tch_device(&self) -> tch::Device {
        match self.device {
            OrtDevice::Cpu => tch::Device::Cpu,
            OrtDevice::Cuda(i) => tch::Device::Cuda(i.max(0) as usize),
        }
    }

    /// An empty cache (P = 0) for `batch` rows.
    pub fn empty_kv(&self, batch: usize) -> Result<OrtKv> {
        let m = &self.manifest;
        let alloc = Allocator::default();
        let mut values = Vec::with_capacity(2 * m.num_layers);
        for _ in 0..2 * m.num_layers {
            let t = DynTensor::new(&alloc, self.kv_type, [batch, m.num_kv_heads, 0, m.head_dim]).map_err(ort_err)?;
            values.push(t.into_dyn());
        }
        Ok(OrtKv { values, len: 0, batch })
    }

    /// A cache whose row i is row `rows[i]` of `kv` (copied on the host).
    fn select_kv_rows(&self, kv: OrtKv, rows: &[i64]) -> Result<OrtKv> {
        let idx: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        let mut values = Vec::with_capacity(kv.values.len());
        for v in kv.values {
            let out = match self.kv_type {
                TensorElementType::Float16 => {
                    let a = v.try_extract_array::<half::f16>().map_err(ort_err)?;
                    Tensor::from_array(a.select(ndarray::Axis(0), &idx)).map_err(ort_err)?.into_dyn()
                }
                _ => {
                    let a = v.try_extract_array::<f32>().map_err(ort_err)?;
                    Tensor::from_array(a.select(ndarray::Axis(0), &idx)).map_err(ort_err)?.into_dyn()
                }
            };
            values.push(out);
        }
        Ok(OrtKv { values, len: kv.len, batch: rows.len() })
    }

    /// How many candidates a generation step keeps per row for `params` (see
    /// [`top_candidates`]); `None` (full rows) also for exports without the top-k outputs.
    pub fn step_top_k(&self, params: &SamplingParams) -> Option<usize> {
        self.run_top.as_ref().and(top_candidates(params, self.vocab_size()))
    }

    /// One forward call. `input_ids`, `position_ids`: [B, S] row-major; `attention_mask`:
    /// [B, P+S]; `kv`: the cache for P tokens. Returns (logits shape [B, S', V], logits, new cache)
    /// where S' = S if `logits_to_keep` is 0, else `logits_to_keep`.
    pub fn forward(
        &mut self,
        input_ids: &[i64],
        attention_mask: &[i64],
        position_ids: &[i64],
        kv: OrtKv,
        logits_to_keep: usize,
    ) -> Result<(Vec<usize>, Vec<f32>, OrtKv)> {
        let b = kv.batch;
        let (scores, kv) = self.forward_scores(input_ids, attention_mask, position_ids, kv, logits_to_keep, None)?;
        Ok((vec![b, scores.rows() / b.max(1), scores.width], scores.vals, kv))
    }

    /// [`OrtModel::forward`] returning what a generation step draws from: full rows, or with
    /// `top` = Some(k) the k best of each row (selected in the graph).
    fn forward_scores(
        &mut self,
        input_ids: &[i64],
        attention_mask: &[i64],
        position_ids: &[i64],
        kv: OrtKv,
        logits_to_keep: usize,
        top: Option<usize>,
    ) -> Result<(StepScores, OrtKv)> {
        if self.is_fused() {
            return Err(SampleError::BadInput(
                "a fused export takes no attention mask or positions: use generate, generate_stream or logits".into(),
            ));
        }
        let b = kv.batch;
        if b == 0 || !input_ids.len().is_multiple_of(b) {
            return Err(SampleError::BadInput(format!(
                "input_ids length {} is not a multiple of batch {b}",
                input_ids.len()
            )));
        }
        let s = input_ids.len() / b;
        let t = kv.len + s;
        if attention_mask.len() != b * t || position_ids.len() != b * s {
            return Err(SampleError::BadInput(format!(
                "attention_mask must be [B, P+S] = [{b}, {t}] and position_ids [B, S] = [{b}, {s}]"
            )));
        }
        let nl = self.manifest.num_layers;
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(4 + 2 * nl);
        let t_ids = Tensor::from_array(([b, s], input_ids.to_vec())).map_err(ort_err)?;
        let t_mask = Tensor::from_array(([b, t], attention_mask.to_vec())).map_err(ort_err)?;
        let t_pos = Tensor::from_array(([b, s], position_ids.to_vec())).map_err(ort_err)?;
        let t_keep = Tensor::from_array(((), vec![logits_to_keep as i64])).map_err(ort_err)?;
        inputs.push(("input_ids".into(), t_ids.into_dyn()));
        inputs.push(("attention_mask".into(), t_mask.into_dyn()));
        inputs.push(("position_ids".into(), t_pos.into_dyn()));
        inputs.push(("logits_to_keep".into(), t_keep.into_dyn()));
        if let Some(k) = top {
            let t_k = Tensor::from_array(((), vec![k as i64])).map_err(ort_err)?;
            inputs.push(("top_k".into(), t_k.into_dyn()));
        }
        for (j, v) in kv.values.into_iter().enumerate() {
            let kind = if j % 2 == 0 { "key" } else { "value" };
            inputs.push((format!("past_key_values.{}.{kind}", j / 2), v));
        }
        let run = match (top, &self.run_top) {
            (Some(_), Some(r)) => r,
            (Some(_), None) => {
                return Err(SampleError::Ort("this export has no top-k outputs (export it again)".into()))
            }
            (None, _) => &self.run_full,
        };
        let mut out = self.session.run_with_options(inputs, run).map_err(ort_err)?;
        let get = |name: &str| out.get(name).ok_or_else(|| SampleError::Ort(format!("no {name} output")));
        let scores = if let Some(k) = top {
            let (_, vals) = get("top_logits")?.try_extract_tensor::<f32>().map_err(ort_err)?;
            let (_, ids) = get("top_ids")?.try_extract_tensor::<i64>().map_err(ort_err)?;
            let (_, sums) = get("logit_sums")?.try_extract_tensor::<f32>().map_err(ort_err)?;
            StepScores::top(vals.to_vec(), ids.to_vec(), sums.to_vec(), k)
        } else {
            let (shape, data) = get("logits")?.try_extract_tensor::<f32>().map_err(ort_err)?;
            StepScores::full(data.to_vec(), shape.last().copied().unwrap_or(0) as usize)
        };
        let mut values = Vec::with_capacity(2 * nl);
        for i in 0..nl {
            for kind in ["key", "value"] {
                let name = format!("present.{i}.{kind}");
                values.push(out.remove(&name).ok_or_else(|| SampleError::Ort(format!("no output {name}")))?);
            }
        }
        Ok((scores, OrtKv { values, len: t, batch: b }))
    }

    /// Logits of one sequence without a cache: [T, V] (`all_positions`) or [V].
    pub fn logits(&mut self, input_ids: &[i64], all_positions: bool) -> Result<(Vec<usize>, Vec<f32>)> {
        if input_ids.is_empty() {
            return Err(SampleError::BadInput("input_ids is empty".into()));
        }
        let v = self.vocab_size() as i64;
        if let Some(bad) = input_ids.iter().find(|&&t| t < 0 || t >= v) {
            return Err(SampleError::BadInput(format!("token id {bad} out of range for vocab size {v}")));
        }
        if self.is_fused() {
            return self.fused_logits(input_ids, all_positions);
        }
        let t = input_ids.len();
        let mask = vec![1i64; t];
        let pos: Vec<i64> = (0..t as i64).collect();
        let kv = self.empty_kv(1)?;
        let (shape, logits, _) = self.forward(input_ids, &mask, &pos, kv, if all_positions { 0 } else { 1 })?;
        if all_positions {
            Ok((vec![shape[1], shape[2]], logits))
        } else {
            Ok((vec![shape[2]], logits))
        }
    }

    /// Teacher-forced decoding through a fused export's in-place cache (parity checks): the
    /// prompts (any lengths) prefill together, then the continuations (one common length n) go
    /// in one token per step; per row, the logits [n + 1, V] after the prompt and each token.
    pub fn decode_logits(&mut self, prompts: &[Vec<i64>], continuations: &[Vec<i64>]) -> Result<Vec<Vec<f32>>> {
        if !self.is_fused() {
            return Err(SampleError::BadInput(
                "decode_logits needs a fused export (forward works on the standard one)".into(),
            ));
        }
        self.fused_decode_logits(prompts, continuations)
    }

    /// Batched generation; same contract as `crate::model::generate` (left padding, the
    /// mask drives positions, one RNG per row seeded by (base_seed, problem_id, sample_idx),
    /// finished rows are fed `pad_id` until every row is done).
    pub fn generate(
        &mut self,
        reqs: &[GenRequest],
        params: &SamplingParams,
        base_seed: u64,
        pad_id: i64,
    ) -> Result<Vec<Generation>> {
        if self.is_fused() {
            let mut out = vec![None; reqs.len()];
            self.generate_stream(reqs, params, base_seed, pad_id, reqs.len(), &mut |i, g| {
                out[i] = Some(g);
                Ok(())
            })?;
            return Ok(out.into_iter().map(|g| g.expect("every request is reported")).collect());
        }
        let vocab = self.vocab_size();
        validate_requests(reqs, params, vocab).map_err(SampleError::BadInput)?;
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let b = reqs.len();
        let max_pos = self.manifest.max_position_embeddings.unwrap_or(usize::MAX);
        let caps = row_caps(reqs, params.max_new_tokens, max_pos).map_err(SampleError::BadInput)?;
        let max_new = caps.iter().copied().max().unwrap_or(0);
        let longest = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
        let plan = memory::generation_plan(&self.gen_shape(), b, longest, max_new);
        memory::check_fits(&generation_what(b, longest, max_new), &plan, self.tch_device())?;
        let sampler = Sampler::new(params.clone());
        let threads = sampling_threads(self.threads);
        let top = self.step_top_k(params);
        let mut rngs: Vec<_> = reqs.iter().map(|r| row_rng(base_seed, r.problem_id, r.sample_idx)).collect();
        let mut out = vec![Generation { tokens: vec![], stopped: false }; b];
        if max_new == 0 {
            return Ok(out);
        }
        // Left padding; positions = cumsum(mask) - 1, padding positions set to 1 (as the tch model).
        let prompts: Vec<Vec<i64>> = reqs.iter().map(|r| r.prompt.clone()).collect();
        let padded = LeftPadded::new(&prompts, pad_id);
        let l = padded.width;
        // mask rows, one Vec per row (grows by one per step)
        let mut mask: Vec<Vec<i64>> = padded.mask.chunks(l.max(1)).map(<[i64]>::to_vec).collect();
        let mut real: Vec<i64> = padded.lens.iter().map(|&n| n as i64).collect();
        let (ids, pos) = (padded.ids, padded.positions);
        // Shared prefill: rows with the same prompt (the k samples of one problem) prefill once;
        // each row then gets its own copy of that prompt's cache and last logits.
        let (unique, row_of) = unique_prompts(&prompts);
        let (mut scores, mut kv) = if self.shared_prefill && unique.len() < b {
            let u_prompts: Vec<Vec<i64>> = unique.iter().map(|&i| prompts[i].clone()).collect();
            let up = LeftPadded::new(&u_prompts, pad_id); // same width l: the longest prompt is unique too
            let kv_u = self.empty_kv(unique.len())?;
            let (u_scores, u_kv) = self.forward_scores(&up.ids, &up.mask, &up.positions, kv_u, 1, top)?; // U rows
            (u_scores.select(&row_of), self.select_kv_rows(u_kv, &row_of)?)
        } else {
            let kv = self.empty_kv(b)?;
            let flat_mask: Vec<i64> = mask.concat();
            self.forward_scores(&ids, &flat_mask, &pos, kv, 1, top)? // B rows
        };
        let mut done = vec![false; b];
        for step in 0..max_new {
            if let Some(row) = scores.non_finite_row(&done) {
                return Err(crate::model::ModelError::NonFiniteLogits { step, row }.into());
            }
            let next = scores.draw(&sampler, params, &caps, pad_id, &mut rngs, &mut done, &mut out, threads);
            if step + 1 == max_new || done.iter().all(|&d| d) {
                break;
            }
            let mut flat_mask = Vec::with_capacity(b * (kv.len + 1));
            let mut step_pos = Vec::with_capacity(b);
            for i in 0..b {
                mask[i].push(1);
                flat_mask.extend_from_slice(&mask[i]);
                step_pos.push(real[i]);
                real[i] += 1;
            }
            let (s2, kv2) = self.forward_scores(&next, &flat_mask, &step_pos, kv, 1, top)?;
            scores = s2;
            kv = kv2;
        }
        Ok(out)
    }
}

/// One row of a continuous batch: its request, RNG, mask over the cache, and output so far.
struct Slot {
    req: usize,
    rng: rand_chacha::ChaCha8Rng,
    /// [P]: 1 where the cache holds this row's tokens, 0 for padding.
    mask: Vec<i64>,
    /// Position of the next token (the row's real tokens so far).
    pos: i64,
    cap: usize,
    out: Generation,
}

impl OrtModel {
    /// Continuous batching: generates every request of `reqs` with at most `slots` rows in
    /// flight, in request order; when rows finish, their slots take the next requests (at the
    /// latest once a quarter of the slots is free, or when nothing else is running). New requests
    /// prefill together (sharing identical prompts), then join the running cache: both are
    /// left-padded to a common length and the mask keeps every row as if it ran alone (same
    /// seeds, same tokens as [`OrtModel::generate`]). `on_done(i, generation)` is called for
    /// request i as soon as it finishes (in completion order).
    pub fn generate_stream(
        &mut self,
        reqs: &[GenRequest],
        params: &SamplingParams,
        base_seed: u64,
        pad_id: i64,
        slots: usize,
        on_done: &mut dyn FnMut(usize, Generation) -> Result<()>,
    ) -> Result<()> {
        let vocab = self.vocab_size();
        validate_requests(reqs, params, vocab).map_err(SampleError::BadInput)?;
        if reqs.is_empty() {
            return Ok(());
        }
        let slots = slots.max(1);
        let max_pos = self.manifest.max_position_embeddings.unwrap_or(usize::MAX);
        let caps = row_caps(reqs, params.max_new_tokens, max_pos).map_err(SampleError::BadInput)?;
        if caps.iter().all(|&c| c == 0) {
            for i in 0..reqs.len() {
                on_done(i, Generation { tokens: vec![], stopped: false })?;
            }
            return Ok(());
        }
        let longest = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
        let (rows_max, max_new) = (slots.min(reqs.len()), caps.iter().copied().max().unwrap_or(0));
        let plan = memory::generation_plan(&self.gen_shape(), rows_max, longest, max_new);
        memory::check_fits(&generation_what(rows_max, longest, max_new), &plan, self.tch_device())?;
        if self.is_fused() {
            return self.fused_stream(reqs, params, base_seed, pad_id, rows_max, &caps, on_done);
        }
        let sampler = Sampler::new(params.clone());
        let threads = sampling_threads(self.threads);
        let top = self.step_top_k(params);
        let mut next_req = 0;
        // The batch: rows in flight and rows already finished (`done`, kept as dead rows fed
        // padding until the next compaction, so the cache is copied only then).
        let mut rows: Vec<Slot> = vec![];
        let mut done: Vec<bool> = vec![];
        let mut kv: Option<OrtKv> = None;
        let mut scores = StepScores::default();
        loop {
            let dead = done.iter().filter(|&&d| d).count();
            let live = rows.len() - dead;
            let want_more = next_req < reqs.len();
            // Compact (drop dead rows) and refill once a quarter of the slots is dead, or when
            // nothing is live.
            if dead > 0 && (live == 0 || dead * 4 >= slots) {
                let keep: Vec<i64> = (0..rows.len()).filter(|&i| !done[i]).map(|i| i as i64).collect();
                let old = std::mem::take(&mut rows);
                rows = old.into_iter().zip(&done).filter(|(_, &d)| !d).map(|(r, _)| r).collect();
                scores = scores.select(&keep);
                kv = match kv.take() {
                    Some(c) if !keep.is_empty() => Some(self.select_kv_rows(c, &keep)?),
                    _ => None,
                };
                done = vec![false; rows.len()];
            }
            let free = slots - rows.len();
            if want_more && free > 0 && (rows.is_empty() || free * 4 >= slots) {
                let take: Vec<usize> = (next_req..reqs.len().min(next_req + free)).collect();
                next_req += take.len();
                let (new_rows, new_kv, new_scores) = self.prefill_rows(reqs, &take, &caps, base_seed, pad_id, top)?;
                let (merged_rows, merged_kv) =
                    self.merge_rows(std::mem::take(&mut rows), kv.take(), new_rows, new_kv)?;
                rows = merged_rows;
                kv = Some(merged_kv);
                scores.extend(new_scores);
                done.resize(rows.len(), false);
            }
            if rows.is_empty() {
                return Ok(());
            }
            if let Some(i) = scores.non_finite_row(&done) {
                let r = &rows[i];
                return Err(SampleError::Ort(format!(
                    "non-finite logits (NaN or +inf) for request {} after {} generated tokens: the model's weights or activations overflowed",
                    r.req,
                    r.out.tokens.len()
                )));
            }
            let mut rngs: Vec<_> = rows.iter().map(|r| r.rng.clone()).collect();
            let mut outs: Vec<Generation> = rows
                .iter_mut()
                .map(|r| std::mem::replace(&mut r.out, Generation { tokens: vec![], stopped: false }))
                .collect();
            let row_caps: Vec<usize> = rows.iter().map(|r| r.cap).collect();
            let was_done = done.clone();
            let next = scores.draw(&sampler, params, &row_caps, pad_id, &mut rngs, &mut done, &mut outs, threads);
            for (i, (r, (rng, out))) in rows.iter_mut().zip(rngs.into_iter().zip(outs)).enumerate() {
                r.rng = rng;
                r.out = out;
                if done[i] && !was_done[i] {
                    on_done(r.req, std::mem::replace(&mut r.out, Generation { tokens: vec![], stopped: false }))?;
                }
            }
            if done.iter().all(|&d| d) {
                continue; // compaction (and a refill, if any request is left) at the top
            }
            // One decode step for the batch; dead rows are fed padding at an unchanged position.
            let cache = kv.take().expect("rows imply a cache");
            let b = rows.len();
            let mut flat_mask = Vec::with_capacity(b * (cache.len + 1));
            let mut pos = Vec::with_capacity(b);
            for (r, &d) in rows.iter_mut().zip(&done) {
                r.mask.push(1);
                flat_mask.extend_from_slice(&r.mask);
                pos.push(r.pos);
                if !d {
                    r.pos += 1;
                }
            }
            let (s2, kv2) = self.forward_scores(&next, &flat_mask, &pos, cache, 1, top)?;
            scores = s2;
            kv = Some(kv2);
        }
    }

    /// Prefills requests `take` (sharing identical prompts): their rows, cache [n, K, L, D] and
    /// last-position scores (n rows).
    fn prefill_rows(
        &mut self,
        reqs: &[GenRequest],
        take: &[usize],
        caps: &[usize],
        base_seed: u64,
        pad_id: i64,
        top: Option<usize>,
    ) -> Result<(Vec<Slot>, OrtKv, StepScores)> {
        let prompts: Vec<Vec<i64>> = take.iter().map(|&i| reqs[i].prompt.clone()).collect();
        let (unique, row_of) = if self.shared_prefill {
            unique_prompts(&prompts)
        } else {
            ((0..prompts.len()).collect(), (0..prompts.len() as i64).collect())
        };
        let u_prompts: Vec<Vec<i64>> = unique.iter().map(|&i| prompts[i].clone()).collect();
        let up = LeftPadded::new(&u_prompts, pad_id);
        let kv0 = self.empty_kv(unique.len())?;
        let (u_scores, u_kv) = self.forward_scores(&up.ids, &up.mask, &up.positions, kv0, 1, top)?; // U rows
        let kv = if unique.len() < take.len() { self.select_kv_rows(u_kv, &row_of)? } else { u_kv };
        let scores = if unique.len() < take.len() { u_scores.select(&row_of) } else { u_scores };
        let l = up.width;
        let rows = take
            .iter()
            .zip(&row_of)
            .map(|(&i, &u)| {
                let mask = up.mask[u as usize * l..(u as usize + 1) * l].to_vec();
                Slot {
                    req: i,
                    rng: row_rng(base_seed, reqs[i].problem_id, reqs[i].sample_idx),
                    mask,
                    pos: reqs[i].prompt.len() as i64,
                    cap: caps[i],
                    out: Generation { tokens: vec![], stopped: false },
                }
            })
            .collect();
        Ok((rows, kv, scores))
    }

    /// Running rows and their cache, then new rows and theirs, as one batch: both caches
    /// left-padded (zeros, masked out) to the longer one's length, minus the leading columns no
    /// row attends to.
    fn merge_rows(
        &self,
        mut old: Vec<Slot>,
        old_kv: Option<OrtKv>,
        new: Vec<Slot>,
        new_kv: OrtKv,
    ) -> Result<(Vec<Slot>, OrtKv)> {
        let Some(old_kv) = old_kv.filter(|_| !old.is_empty()) else { return Ok((new, new_kv)) };
        let p = old_kv.len.max(new_kv.len);
        let pad_mask = |rows: &mut [Slot], from: usize| {
            for r in rows.iter_mut() {
                let mut m = vec![0i64; p - from];
                m.extend_from_slice(&r.mask);
                r.mask = m;
            }
        };
        let (op, np) = (old_kv.len, new_kv.len);
        let mut new = new;
        pad_mask(&mut old, op);
        pad_mask(&mut new, np);
        // Columns every row ignores (left padding common to all) are dropped.
        let all = old.iter().chain(new.iter());
        let trim = all.map(|r| r.mask.iter().take_while(|&&m| m == 0).count()).min().unwrap_or(0);
        for r in old.iter_mut().chain(new.iter_mut()) {
            r.mask.drain(..trim);
        }
        let b = old.len() + new.len();
        let mut values = Vec::with_capacity(old_kv.values.len());
        for (a, c) in old_kv.values.into_iter().zip(new_kv.values) {
            let v = match self.kv_type {
                TensorElementType::Float16 => join_kv::<half::f16>(&a, &c, p, trim)?,
                _ => join_kv::<f32>(&a, &c, p, trim)?,
            };
            values.push(v);
        }
        old.extend(new);
        Ok((old, OrtKv { values, len: p - trim, batch: b }))
    }
}

/// [Bo, K, Po, D] and [Bn, K, Pn, D] → [Bo + Bn, K, P − trim, D], each left-padded with zeros to P.
fn join_kv<T>(a: &DynValue, c: &DynValue, p: usize, trim: usize) -> Result<DynValue>
where
    T: ort::value::PrimitiveTensorElementType + Clone + Default + std::fmt::Debug + 'static,
{
    let (a, c) = (a.try_extract_array::<T>().map_err(ort_err)?, c.try_extract_array::<T>().map_err(ort_err)?);
    let (sa, sc) = (a.shape().to_vec(), c.shape().to_vec());
    let (k, d) = (sa[1], sa[3]);
    let mut out = ndarray::Array4::<T>::default((sa[0] + sc[0], k, p - trim, d));
    for (src, n, off) in [(&a, sa[0], 0usize), (&c, sc[0], sa[0])] {
        let start = p - src.shape()[2]; // this group's left padding
        let from = start.max(trim);
        if from < p {
            out.slice_mut(ndarray::s![off..off + n, .., from - trim..p - trim, ..]).assign(&src.slice(ndarray::s![
                ..,
                ..,
                from - start..p - start,
                ..
            ]));
        }
    }
    Ok(Tensor::from_array(out).map_err(ort_err)?.into_dyn())
}

/// Logits of `input_ids` from the export in `onnx_dir` on the CPU: shape [T, V] when
/// `all_positions`, else [V] (the last position), flattened row-major.
pub fn onnx_logits(onnx_dir: &Path, input_ids: &[i64], all_positions: bool) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut m = OrtModel::load(onnx_dir, &OrtOptions::default())?;
    m.logits(input_ids, all_positions)
}
