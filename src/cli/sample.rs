//! `rlvr-decomp sample`: k samples per problem from an ONNX export (ONNX Runtime), resumable.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rlvr_decomp::data::{self, Dataset, DatasetName};
use rlvr_decomp::eval::verify::{Mode, Tolerance};
use rlvr_decomp::model::static_decode::TchDecode;
use rlvr_decomp::prompt::{QwenTokenizer, Template};
use rlvr_decomp::sample::{
    self, Backend, BackendKind, OrtDevice, OrtModel, OrtOptions, Preset, SampleSettings, SampleStore, VerifierSettings,
};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// ONNX export directory (from `rlvr-decomp export`).
    #[arg(long, value_name = "DIR", required_unless_present = "model")]
    pub onnx: Option<PathBuf>,
    /// HF model directory, for `--backend tch` (benchmarks / cross-checks).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Generation backend: ort (ONNX Runtime, the default) or tch (libtorch, needs --model).
    #[arg(long, value_enum, default_value_t = BackendKind::Ort)]
    pub backend: BackendKind,
    /// A dataset the harness knows (or give --problems).
    #[arg(long, value_enum, required_unless_present = "problems", conflicts_with = "problems")]
    pub dataset: Option<Dataset>,
    /// A problems file instead (JSONL of problems, as `datasets --dump` and `mini-data` write);
    /// its name in settings and reports is the file name without `.jsonl`.
    #[arg(long, value_name = "FILE")]
    pub problems: Option<PathBuf>,
    /// Sampling preset (sets T, top-p, top-k, k and template; explicit flags override).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Prompt template (default: the preset's; required without --preset).
    #[arg(long, value_enum)]
    pub template: Option<Template>,
    /// Samples per problem (positive).
    #[arg(long)]
    pub k: Option<usize>,
    /// Sampling temperature, >= 0 (0 = greedy).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Nucleus mass in (0, 1] (1 disables).
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens; 0 disables.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Most tokens per response (positive; checked against memory with --batch).
    #[arg(long, default_value_t = 4096)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples directory, e.g. results/<run>/samples/math500 (resumed if it exists).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Only the first N problems of the dataset.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows per generation batch (and per durable chunk).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cpu | cuda | cuda:N (CUDA needs onnxruntime-gpu; failure to get it is an error).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Intra-op threads (0 = runtime default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Do not stop at end-of-turn tokens (fixed-length generation, for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Prefill every row itself instead of once per distinct prompt of a batch (same tokens; for
    /// measuring what the shared prefill saves).
    #[arg(long)]
    pub no_shared_prefill: bool,
    /// Continuous batching (ONNX Runtime): keep `--batch` rows in flight and refill finished rows'
    /// slots instead of decoding fixed batches where each row waits for the batch's longest. Same
    /// tokens where the kernels are batch-invariant; the default fixed batches reproduce a resumed
    /// run bit for bit on any kernels.
    #[arg(long)]
    pub continuous: bool,
    /// Draw top-k / greedy steps from the full logits copied to the host instead of the graph's
    /// own `TopK` output (same tokens; for measuring what selecting in the graph saves).
    #[arg(long)]
    pub no_graph_top_k: bool,
    /// Write ONNX Runtime's per-operator profile (its JSON trace, one event per node run) to a
    /// file named after PREFIX when the run ends (`scripts/ort_profile.py` sums it per op type).
    #[arg(long, value_name = "PREFIX")]
    pub ort_profile: Option<PathBuf>,
    /// The tch backend's decode loop: `dynamic` (the attention window grows a position a step,
    /// tokens drawn on the host), `static` (fixed-shape steps over slot caches, tokens drawn on the
    /// device, the host polling every few steps) or `cuda-graph` (the static step captured as CUDA
    /// graphs, one per attention window, and replayed: CUDA and a `--features cuda` build). Same
    /// tokens either way.
    #[arg(long, value_enum, default_value_t = TchDecode::Dynamic)]
    pub tch_decode: TchDecode,
    /// Answer extraction for verdicts: lenient (evaluation, the default) or strict (as training rewards).
    #[arg(long, value_enum, default_value_t = Mode::Lenient)]
    pub verifier_mode: Mode,
    /// Equivalence tolerance for verdicts.
    #[arg(long, value_enum, default_value_t = Tolerance::MathVerify)]
    pub tolerance: Tolerance,
    /// Write throughput (tokens/s, samples/s) of this invocation as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub bench_json: Option<PathBuf>,
    /// tokenizer.json (default: the ONNX dir's, else the project one).
    #[arg(long, env = "RLVR_TOKENIZER", value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub data: super::DataPathArgs,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let choice = sample::SamplingRequest {
        preset: args.preset,
        template: args.template,
        k: args.k,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        batch: args.batch,
    }
    .resolve()?;
    let k = choice.k;

    let model_dir = match args.backend {
        BackendKind::Ort => args.onnx.clone().context("--onnx is required for --backend ort")?,
        BackendKind::Tch => args.model.clone().context("--model is required for --backend tch")?,
    };
    let tok_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None if model_dir.join("tokenizer.json").is_file() => model_dir.join("tokenizer.json"),
        None => rlvr_decomp::paths::tokenizer_path(None),
    };
    let tok = QwenTokenizer::from_file(&tok_path)?;
    let tokenizer_sha256 = rlvr_decomp::fingerprint::digest_file(&tok_path)?.sha256;

    let roots = args.data.roots();
    let (dataset, mut problems) = match (&args.problems, args.dataset) {
        (Some(f), _) => {
            let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "problems".into());
            (DatasetName::File(name), data::load_problems_file(f)?)
        }
        (None, Some(d)) => (DatasetName::Known(d), data::load(d, &roots)?),
        (None, None) => bail!("give --dataset or --problems"),
    };
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        bail!("no problems selected");
    }

    // The model, identified by the content of its files (checked against fingerprint.json).
    let mut ort_model;
    let tch_model;
    let (mut backend, model_id, eos, ep) = match args.backend {
        BackendKind::Ort => {
            let device: OrtDevice = args.device.parse()?;
            ort_model = OrtModel::load(
                &model_dir,
                &OrtOptions {
                    device,
                    threads: args.threads,
                    shared_prefill: !args.no_shared_prefill,
                    continuous: args.continuous,
                    graph_top_k: !args.no_graph_top_k,
                    profile: args.ort_profile.clone(),
                },
            )
            .with_context(|| format!("loading {}", model_dir.display()))?;
            let id = format!("onnx:{}", ort_model.fingerprint.sha256);
            let eos = ort_model.manifest.eos_token_ids.clone();
            let ep = ort_model.execution_provider.clone();
            (Backend::Ort(&mut ort_model), id, eos, ep)
        }
        BackendKind::Tch => {
            let dev = rlvr_decomp::model::parse_device(&args.device)?;
            if args.threads > 0 {
                tch::set_num_threads(args.threads as i32);
            }
            tch_model = rlvr_decomp::model::load_model(&model_dir, dev, rlvr_decomp::model::DType::F32)?;
            let id = format!("hf:{}", tch_model.fingerprint.sha256);
            let eos = tch_model.cfg.eos_token_ids.clone();
            (Backend::Tch(&tch_model.model, args.tch_decode), id, eos, format!("tch:{}", args.device))
        }
    };
    tracing::info!("backend {:?} on {ep}", args.backend);

    let settings = SampleSettings {
        dataset,
        num_problems: problems.len(),
        selection_sha256: sample::selection_sha256(&problems, choice.template),
        k,
        batch: args.batch,
        temperature: choice.temperature,
        top_p: choice.top_p,
        top_k: choice.top_k,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        template: choice.template,
        tokenizer_sha256,
        stop_ids: sample::stop_ids(&tok, &eos, args.ignore_eos),
        pad_id: sample::pad_id(&tok),
        backend: args.backend,
        model: model_id,
        verifier: VerifierSettings { mode: args.verifier_mode, tolerance: args.tolerance },
    };
    let mut store = SampleStore::open_or_create(&args.out, settings)?;

    let total = (problems.len() * k) as u64;
    let pb = ProgressBar::new(total);
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} samples  {per_sec}  ETA {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut first = true;
    let mut progress = |done: usize, toks: usize| {
        pb.set_position(done as u64);
        if first {
            pb.reset_eta();
            first = false;
        }
        tokens += toks;
        pb.set_message(format!("{:.1} tok/s", tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9)));
    };
    let stats = sample::run(&mut store, &problems, &tok, &mut backend, &mut progress)?;
    pb.finish_and_clear();
    let tps = stats.tokens_generated as f64 / stats.seconds.max(1e-9);
    tracing::info!(
        "{} samples in {} new chunks ({} already done) in {:.1}s: {:.1} tokens/s, {:.2} samples/s → {}",
        stats.samples_generated,
        stats.chunks_generated,
        stats.chunks_skipped,
        stats.seconds,
        tps,
        stats.samples_generated as f64 / stats.seconds.max(1e-9),
        args.out.display()
    );
    if let Some(path) = &args.bench_json {
        let j = serde_json::json!({
            "backend": store.settings.backend,
            "execution_provider": ep,
            "threads": args.threads,
            "batch": args.batch,
            "k": k,
            "num_problems": problems.len(),
            "max_new_tokens": args.max_new_tokens,
            "ignore_eos": args.ignore_eos,
            "samples": stats.samples_generated,
            "tokens_generated": stats.tokens_generated,
            "prompt_tokens": stats.prompt_tokens,
            "seconds": stats.seconds,
            "tokens_per_s": tps,
            "samples_per_s": stats.samples_generated as f64 / stats.seconds.max(1e-9),
        });
        super::write_json_atomic(path, &j)?;
    }
    Ok(())
}
