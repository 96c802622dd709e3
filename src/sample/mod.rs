//! Sampling k responses per problem with ONNX Runtime (or the tch model), durably and
//! resumably, then scoring them (per-problem correctness counts, pass@k curve).
//!
//! * [`ort`]   — ONNX Runtime session + batched KV-cache generation (`onnx_logits` too).
//! * [`store`] — the samples directory: a [`crate::rundir`] run folder (lock, `settings.json`,
//!   manifest-checked JSONL chunks).
//! * [`eval`]  — samples → counts → pass@k (JSON + parquet).
//!
//! Work is cut into fixed chunks of `batch` consecutive (problem, sample) pairs; a chunk is one
//! generation batch and one file, written whole or not at all. Each row's RNG depends only on
//! (seed, problem id, sample index) and each chunk's batch composition is fixed by the settings,
//! so a resumed run produces exactly the records an uninterrupted one would.

pub mod eval;
pub mod ort;
pub mod store;

pub use ort::{onnx_logits, OrtDevice, OrtModel, OrtOptions};
pub use store::{BackendKind, FinishReason, SampleRecord, SampleSettings, SampleStore, VerifierSettings};

use crate::data::Problem;
use crate::eval::verify::verify;
use crate::model::generate::{GenRequest, Generation};
use crate::model::sampler::SamplingParams;
use crate::prompt::{QwenTokenizer, Template};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Errors of the sampling pipeline; every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Tokenizer(#[from] crate::prompt::TokenizerError),
    #[error(transparent)]
    PassAtK(#[from] crate::eval::pass_at_k::PassAtKError),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error(transparent)]
    RunDir(#[from] crate::rundir::RunDirError),
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::FingerprintError),
    #[error("invalid input: {0}")]
    BadInput(String),
    #[error("parquet: {0}")]
    Parquet(String),
}

pub type Result<T, E = SampleError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SampleError + '_ {
    move |source| SampleError::Io { path: path.to_path_buf(), source }
}

/// Stable 64-bit id of a problem for seeding (first 8 bytes of sha256 of `dataset/id`), so a
/// sample's random stream does not depend on the problem's position in the file or on `--limit`.
pub fn problem_seed_id(dataset: &str, problem_id: &str) -> u64 {
    let h = Sha256::digest(format!("{dataset}/{problem_id}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Sampling presets from the paper (§4.1 / appendix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Preset {
    /// Qwen2.5-Math-7B: T 0.6, top-p 0.95, no top-k, k = 256, template qwen2.5-math.
    #[value(name = "qwen2.5-math")]
    #[serde(rename = "qwen2.5-math")]
    Qwen25Math,
    /// Qwen3-4B (non-thinking): T 0.7, top-p 0.8, top-k 20, k = 64, template qwen3.
    #[value(name = "qwen3")]
    #[serde(rename = "qwen3")]
    Qwen3,
}

/// (temperature, top_p, top_k, k, template) of a preset.
pub fn preset_values(p: Preset) -> (f64, f64, usize, usize, Template) {
    match p {
        Preset::Qwen25Math => (0.6, 0.95, 0, 256, Template::Qwen25Math),
        Preset::Qwen3 => (0.7, 0.8, 20, 64, Template::Qwen3),
    }
}

/// sha256 identifying a selection of problems as prompted: every problem's id, rendered prompt
/// and gold answer, in order (length-prefixed, so no two selections collide by concatenation).
pub fn selection_sha256(problems: &[Problem], template: Template) -> String {
    let mut h = Sha256::new();
    for p in problems {
        for field in [p.id.as_str(), template.render(&p.problem).as_str(), p.answer.as_str()] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// Token ids that end a response: the chat template's `<|im_end|>` and `<|endoftext|>`, plus the
/// model's own eos ids; none with `ignore_eos` (fixed-length generation for benchmarks).
pub fn stop_ids(tok: &QwenTokenizer, model_eos: &[i64], ignore_eos: bool) -> Vec<i64> {
    if ignore_eos {
        return vec![];
    }
    let mut s = vec![tok.im_end as i64, tok.endoftext as i64];
    s.extend_from_slice(model_eos);
    s.sort_unstable();
    s.dedup();
    s
}

/// The padding id for left-padded batches (never attended to): `<|endoftext|>`.
pub fn pad_id(tok: &QwenTokenizer) -> i64 {
    tok.endoftext as i64
}

/// What a user asked for: a preset and explicit overrides.
#[derive(Debug, Clone, Default)]
pub struct SamplingRequest {
    pub preset: Option<Preset>,
    pub template: Option<Template>,
    pub k: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub max_new_tokens: usize,
    pub batch: usize,
}

/// The resolved sampling choice of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingChoice {
    pub template: Template,
    pub k: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
}

impl SamplingRequest {
    /// Applies the preset, then the overrides, and refuses nonsensical values.
    pub fn resolve(&self) -> Result<SamplingChoice> {
        let (mut t, mut p, mut tk, mut k, mut template) = (1.0, 1.0, 0, 1, None);
        if let Some(pr) = self.preset {
            (t, p, tk, k, template) = {
                let v = preset_values(pr);
                (v.0, v.1, v.2, v.3, Some(v.4))
            };
        }
        let bad = |m: String| Err(SampleError::BadInput(m));
        let Some(template) = self.template.or(template) else {
            return bad("--template is required without --preset".into());
        };
        let c = SamplingChoice {
            template,
            k: self.k.unwrap_or(k),
            temperature: self.temperature.unwrap_or(t),
            top_p: self.top_p.unwrap_or(p),
            top_k: self.top_k.unwrap_or(tk),
        };
        if c.k == 0 {
            return bad("--k must be positive".into());
        }
        if self.batch == 0 {
            return bad("--batch must be positive".into());
        }
        if self.max_new_tokens == 0 {
            return bad("--max-new-tokens must be positive".into());
        }
        if !(c.temperature.is_finite() && c.temperature >= 0.0) {
            return bad(format!("--temperature must be >= 0 (0 = greedy), got {}", c.temperature));
        }
        if !(c.top_p > 0.0 && c.top_p <= 1.0) {
            return bad(format!("--top-p must be in (0, 1], got {}", c.top_p));
        }
        Ok(c)
    }
}

/// Either generation backend.
pub enum Backend<'a> {
    Ort(&'a mut OrtModel),
    /// The model and the decode loop that generates with it (same tokens either way).
    Tch(&'a crate::model::Qwen, crate::model::static_decode::TchDecode),
}

impl Backend<'_> {
    /// Checks a generation of `rows` rows (prompts up to `longest` tokens, `max_new` new tokens)
    /// against the model's context and the memory available, before anything is allocated.
    pub fn preflight(&self, rows: usize, longest: usize, max_new: usize) -> Result<()> {
        use crate::model::generate::preflight;
        match self {
            Backend::Ort(m) => {
                let max_pos = m.manifest.max_position_embeddings.unwrap_or(usize::MAX);
                Ok(preflight(&m.gen_shape(), max_pos, rows, longest, max_new, m.tch_device())?)
            }
            Backend::Tch(m, _) => {
                let shape = crate::model::memory::GenShape::from_config(&m.cfg, m.kind().elt_size_in_bytes());
                Ok(preflight(&shape, m.cfg.max_position_embeddings as usize, rows, longest, max_new, m.device())?)
            }
        }
    }

    pub fn generate(
        &mut self,
        reqs: &[GenRequest],
        params: &SamplingParams,
        seed: u64,
        pad: i64,
    ) -> Result<Vec<Generation>> {
        match self {
            Backend::Ort(m) => m.generate(reqs, params, seed, pad),
            Backend::Tch(m, decode) => Ok(decode.generate(m, reqs, params, seed, pad)?),
        }
    }
}

/// One unit of work: `batch` consecutive (problem index, sample index) pairs.
pub fn chunk_pairs(n_problems: usize, k: usize, batch: usize, chunk: usize) -> Vec<(usize, usize)> {
    let total = n_problems * k;
    let start = chunk * batch;
    (start..(start + batch).min(total)).map(|j| (j / k, j % k)).collect()
}

/// Number of chunks for a run.
pub fn num_chunks(n_problems: usize, k: usize, batch: usize) -> usize {
    (n_problems * k).div_ceil(batch)
}

/// Progress callback: (samples done so far, generated tokens in the last chunk).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Statistics of one [`run`] call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunStats {
    pub chunks_total: usize,
    pub chunks_skipped: usize,
    pub chunks_generated: usize,
    pub samples_generated: usize,
    pub tokens_generated: usize,
    pub prompt_tokens: usize,
    pub seconds: f64,
}

/// Draws every missing chunk of `store` (its settings fix problems order, k, batch, sampling).
pub fn run(
    store: &mut SampleStore,
    problems: &[Problem],
    tok: &QwenTokenizer,
    backend: &mut Backend<'_>,
    progress: Progress<'_>,
) -> Result<RunStats> {
    let s = store.settings.clone();
    if problems.len() != s.num_problems {
        return Err(SampleError::BadInput(format!("settings say {} problems, got {}", s.num_problems, problems.len())));
    }
    let template = s.template;
    let prompts: Vec<String> = problems.iter().map(|p| template.render(&p.problem)).collect();
    let encoded = tok.encode_batch(&prompts)?;
    let encoded: Vec<Vec<i64>> = encoded.into_iter().map(|v| v.into_iter().map(i64::from).collect()).collect();
    let seeds: Vec<u64> = problems.iter().map(|p| problem_seed_id(s.dataset.name(), &p.id)).collect();
    let params = SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        max_new_tokens: s.max_new_tokens,
        stop_ids: s.stop_ids.clone(),
    };
    let n_chunks = num_chunks(problems.len(), s.k, s.batch);
    let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
    backend.preflight(s.batch.min(problems.len() * s.k), longest, s.max_new_tokens)?;
    let done = store.committed_chunks();
    let mut stats = RunStats { chunks_total: n_chunks, ..Default::default() };
    let t0 = std::time::Instant::now();
    let mut samples_done: usize = done.iter().map(|&c| chunk_pairs(problems.len(), s.k, s.batch, c).len()).sum();
    progress(samples_done, 0);
    // Scores a finished chunk's generations, commits the chunk whole, counts it.
    let mut finish_chunk = |c: usize, pairs: &[(usize, usize)], gens: &[Generation]| -> Result<()> {
        let (mut records, mut tokens, mut prompt_tokens) = (Vec::with_capacity(pairs.len()), 0, 0);
        for (&(p, j), g) in pairs.iter().zip(gens) {
            let ids: Vec<u32> = g.tokens.iter().map(|&t| t as u32).collect();
            let text = tok.decode(&ids, true)?;
            let verdict = verify(&problems[p].answer, &text, s.verifier.mode, s.verifier.tolerance);
            tokens += g.tokens.len();
            prompt_tokens += encoded[p].len();
            records.push(SampleRecord {
                problem_id: problems[p].id.clone(),
                sample_index: j as u64,
                text,
                answer: verdict.extracted,
                correct: verdict.correct,
                gold: problems[p].answer.clone(),
                num_tokens: g.tokens.len() as u64,
                finish_reason: if g.stopped { FinishReason::Stop } else { FinishReason::Length },
                token_ids: g.tokens.clone(),
            });
        }
        store.commit_chunk(c, &records)?;
        stats.chunks_generated += 1;
        stats.samples_generated += records.len();
        stats.tokens_generated += tokens;
        stats.prompt_tokens += prompt_tokens;
        samples_done += records.len();
        progress(samples_done, tokens);
        Ok(())
    };
    let request = |&(p, j): &(usize, usize)| GenRequest {
        prompt: encoded[p].clone(),
        problem_id: seeds[p],
        sample_idx: j as u64,
    };
    let missing: Vec<usize> = (0..n_chunks).filter(|c| !done.contains(c)).collect();
    stats.chunks_skipped = n_chunks - missing.len();
    match backend {
        // Continuous batching: every missing chunk's pairs stream through `batch` slots; a chunk
        // is committed (whole, durably) as soon as its last pair finishes, so a kill loses at most
        // the chunks in flight, and each row's tokens do not depend on what it ran beside.
        Backend::Ort(m) if m.continuous => {
            let mut owner = vec![]; // request → (chunk, index in chunk)
            let mut reqs = vec![];
            let mut pending: std::collections::BTreeMap<usize, (Vec<(usize, usize)>, Vec<Option<Generation>>)> =
                Default::default();
            for &c in &missing {
                let pairs = chunk_pairs(problems.len(), s.k, s.batch, c);
                for (i, pr) in pairs.iter().enumerate() {
                    owner.push((c, i));
                    reqs.push(request(pr));
                }
                let n = pairs.len();
                pending.insert(c, (pairs, vec![None; n]));
            }
            m.generate_stream(&reqs, &params, s.seed, s.pad_id, s.batch, &mut |r, g| {
                let (c, i) = owner[r];
                let entry = pending
                    .get_mut(&c)
                    .ok_or_else(|| SampleError::Runtime(format!("request {r} finished twice (chunk {c})")))?;
                entry.1[i] = Some(g);
                if entry.1.iter().all(Option::is_some) {
                    let (pairs, gens) = pending.remove(&c).expect("present");
                    let gens: Vec<Generation> = gens.into_iter().map(|g| g.expect("complete")).collect();
                    finish_chunk(c, &pairs, &gens)?;
                }
                Ok(())
            })?;
            if let Some(c) = pending.keys().next() {
                return Err(SampleError::Runtime(format!("chunk {c} did not finish (a scheduler bug)")));
            }
        }
        _ => {
            for &c in &missing {
                let pairs = chunk_pairs(problems.len(), s.k, s.batch, c);
                let reqs: Vec<GenRequest> = pairs.iter().map(request).collect();
                let gens = backend.generate(&reqs, &params, s.seed, s.pad_id)?;
                finish_chunk(c, &pairs, &gens)?;
            }
        }
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(stats)
}
