//! `rlvr-decomp sample`: k samples per problem from an ONNX export (ONNX Runtime), resumable.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rlvr_decomp::data::{self, Dataset};
use rlvr_decomp::prompt::{QwenTokenizer, Template};
use rlvr_decomp::sample::{self, Backend, OrtDevice, OrtModel, OrtOptions, Preset, SampleSettings, SampleStore};
use sha2::{Digest, Sha256};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// ONNX export directory (from `rlvr-decomp export`).
    #[arg(long, value_name = "DIR", required_unless_present = "model")]
    pub onnx: Option<PathBuf>,
    /// HF model directory, for `--backend tch` (benchmarks / cross-checks).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Generation backend: ort (ONNX Runtime, the default) or tch (libtorch, needs --model).
    #[arg(long, default_value = "ort", value_parser = ["ort", "tch"])]
    pub backend: String,
    #[arg(long, value_enum)]
    pub dataset: Dataset,
    /// Sampling preset (sets T, top-p, top-k, k and template; explicit flags override).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Prompt template (default: the preset's; required without --preset).
    #[arg(long, value_enum)]
    pub template: Option<Template>,
    /// Samples per problem.
    #[arg(long)]
    pub k: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    /// 0 disables.
    #[arg(long)]
    pub top_k: Option<usize>,
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
    /// Write throughput (tokens/s, samples/s) of this invocation as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub bench_json: Option<PathBuf>,
    /// tokenizer.json (default: the ONNX dir's, else the project one).
    #[arg(long, env = "RLVR_TOKENIZER", value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub data: super::DataPathArgs,
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn file_sha(path: &Path) -> Result<String> {
    Ok(sha_hex(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?))
}

pub fn run(args: SampleArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be positive");
    }
    let (mut temperature, mut top_p, mut top_k, mut k, mut template) = (1.0, 1.0, 0, 1, None);
    if let Some(p) = args.preset {
        let v = sample::preset_values(p);
        (temperature, top_p, top_k, k, template) = (v.0, v.1, v.2, v.3, Some(v.4));
    }
    let template = args.template.or(template).context("--template is required without --preset")?;
    temperature = args.temperature.unwrap_or(temperature);
    top_p = args.top_p.unwrap_or(top_p);
    top_k = args.top_k.unwrap_or(top_k);
    k = args.k.unwrap_or(k);
    if k == 0 {
        bail!("--k must be positive");
    }

    // Model and its identity.
    let model_dir = match args.backend.as_str() {
        "ort" => args.onnx.clone().context("--onnx is required for --backend ort")?,
        _ => args.model.clone().context("--model is required for --backend tch")?,
    };
    let tok_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None if model_dir.join("tokenizer.json").is_file() => model_dir.join("tokenizer.json"),
        None => rlvr_decomp::paths::tokenizer_path(None),
    };
    let tok = QwenTokenizer::from_file(&tok_path)?;

    let roots = args.data.roots();
    let mut problems = data::load(args.dataset, &roots)?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        bail!("no problems selected");
    }
    let ids: Vec<&str> = problems.iter().map(|p| p.id.as_str()).collect();

    let mut ort_model;
    let tch_model;
    let (mut backend, model_id, eos, ep) = match args.backend.as_str() {
        "ort" => {
            let device: OrtDevice = args.device.parse()?;
            ort_model = OrtModel::load(&model_dir, &OrtOptions { device, threads: args.threads })
                .with_context(|| format!("loading {}", model_dir.display()))?;
            let m = &ort_model.manifest;
            let id = format!("onnx:{}:{}", file_sha(&model_dir.join(rlvr_decomp::export::MANIFEST))?, m.data_bytes);
            let eos = m.eos_token_ids.clone();
            let ep = ort_model.execution_provider.clone();
            (Backend::Ort(&mut ort_model), id, eos, ep)
        }
        _ => {
            let dev = rlvr_decomp::model::parse_device(&args.device)?;
            if args.threads > 0 {
                tch::set_num_threads(args.threads as i32);
            }
            tch_model = rlvr_decomp::model::load_model(&model_dir, dev, rlvr_decomp::model::DType::F32)?;
            let id = format!("hf:{}", file_sha(&model_dir.join("config.json"))?);
            let eos = tch_model.cfg.eos_token_ids.clone();
            (Backend::Tch(&tch_model.model), id, eos, format!("tch:{}", args.device))
        }
    };
    tracing::info!("backend {} on {ep}", args.backend);

    let mut stop_ids: Vec<i64> = if args.ignore_eos {
        vec![]
    } else {
        let mut s = vec![tok.im_end as i64, tok.endoftext as i64];
        s.extend(eos);
        s
    };
    stop_ids.sort_unstable();
    stop_ids.dedup();
    let settings = SampleSettings {
        dataset: args.dataset.name().to_string(),
        num_problems: problems.len(),
        problems_sha256: sha_hex(ids.join("\n").as_bytes()),
        k,
        batch: args.batch,
        temperature,
        top_p,
        top_k,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        template,
        stop_ids,
        pad_id: tok.endoftext as i64,
        backend: args.backend.clone(),
        model: model_id,
    };
    let store = SampleStore::open_or_create(&args.out, settings)?;

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
    let stats = sample::run(&store, &problems, &tok, &mut backend, &mut progress)?;
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
            "backend": args.backend,
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
