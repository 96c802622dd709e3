//! Sampling k responses per problem with ONNX Runtime (or the tch model), durably and
//! resumably, then scoring them (per-problem correctness counts, pass@k curve).
//!
//! * [`ort`]   — ONNX Runtime session + batched KV-cache generation (`onnx_logits` too).
//! * [`store`] — the samples directory: `settings.json` + atomically committed JSONL chunks.
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
pub use store::{SampleRecord, SampleSettings, SampleStore};

use crate::data::Problem;
use crate::eval::verify::{verify, Mode, Tolerance};
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
    #[error("{dir} holds samples drawn with different settings ({diff}); use another --out or the original settings")]
    SettingsMismatch { dir: PathBuf, diff: String },
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

/// Either generation backend.
pub enum Backend<'a> {
    Ort(&'a mut OrtModel),
    Tch(&'a crate::model::Qwen),
}

impl Backend<'_> {
    pub fn generate(
        &mut self,
        reqs: &[GenRequest],
        params: &SamplingParams,
        seed: u64,
        pad: i64,
    ) -> Result<Vec<Generation>> {
        match self {
            Backend::Ort(m) => m.generate(reqs, params, seed, pad),
            Backend::Tch(m) => Ok(crate::model::generate::generate(m, reqs, params, seed, pad)?),
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
    store: &SampleStore,
    problems: &[Problem],
    tok: &QwenTokenizer,
    backend: &mut Backend<'_>,
    progress: Progress<'_>,
) -> Result<RunStats> {
    let s = &store.settings;
    if problems.len() != s.num_problems {
        return Err(SampleError::BadInput(format!("settings say {} problems, got {}", s.num_problems, problems.len())));
    }
    let template = s.template;
    let prompts: Vec<String> = problems.iter().map(|p| template.render(&p.problem)).collect();
    let encoded = tok.encode_batch(&prompts)?;
    let encoded: Vec<Vec<i64>> = encoded.into_iter().map(|v| v.into_iter().map(i64::from).collect()).collect();
    let seeds: Vec<u64> = problems.iter().map(|p| problem_seed_id(&s.dataset, &p.id)).collect();
    let params = SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        max_new_tokens: s.max_new_tokens,
        stop_ids: s.stop_ids.clone(),
    };
    let n_chunks = num_chunks(problems.len(), s.k, s.batch);
    let done = store.committed_chunks()?;
    let mut stats = RunStats { chunks_total: n_chunks, ..Default::default() };
    let t0 = std::time::Instant::now();
    let mut samples_done: usize = done.iter().map(|&c| chunk_pairs(problems.len(), s.k, s.batch, c).len()).sum();
    progress(samples_done, 0);
    for c in 0..n_chunks {
        if done.contains(&c) {
            stats.chunks_skipped += 1;
            continue;
        }
        let pairs = chunk_pairs(problems.len(), s.k, s.batch, c);
        let reqs: Vec<GenRequest> = pairs
            .iter()
            .map(|&(p, j)| GenRequest { prompt: encoded[p].clone(), problem_id: seeds[p], sample_idx: j as u64 })
            .collect();
        let gens = backend.generate(&reqs, &params, s.seed, s.pad_id)?;
        let mut records = Vec::with_capacity(pairs.len());
        let mut chunk_tokens = 0;
        for (&(p, j), g) in pairs.iter().zip(&gens) {
            let ids: Vec<u32> = g.tokens.iter().map(|&t| t as u32).collect();
            let text = tok.decode(&ids, true)?;
            let verdict = verify(&problems[p].answer, &text, Mode::Lenient, Tolerance::MathVerify);
            chunk_tokens += g.tokens.len();
            stats.prompt_tokens += encoded[p].len();
            records.push(SampleRecord {
                problem_id: problems[p].id.clone(),
                sample_index: j as u64,
                text,
                answer: verdict.extracted,
                correct: verdict.correct,
                gold: problems[p].answer.clone(),
                num_tokens: g.tokens.len() as u64,
                finish_reason: if g.stopped { "stop".into() } else { "length".into() },
            });
        }
        store.commit_chunk(c, &records)?;
        stats.chunks_generated += 1;
        stats.samples_generated += records.len();
        stats.tokens_generated += chunk_tokens;
        samples_done += records.len();
        progress(samples_done, chunk_tokens);
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(stats)
}
