//! `train`, `train-step`, `gradient-analysis`: RL training and its analyses (library: `rl`).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rlvr_decomp::dist;
use rlvr_decomp::model::{self, memory, DType};
use rlvr_decomp::rl::critic::Critic;
use rlvr_decomp::rl::gradient::{self, AnalysisDType};
use rlvr_decomp::rl::optim::{AdamW, BUCKET_ELEMS};
use rlvr_decomp::rl::update::{self, CriticConfig, Learner, UpdateConfig};
use rlvr_decomp::rl::{config, rollout, trainer, ObjectiveConfig, OptimConfig, TrainConfig};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Experiment config (TOML; presets in paper/configs/).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override any config key, e.g. --set objective.kind=nsr --set optim.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue the run in --out from its newest checkpoint (the settings must match).
    #[arg(long)]
    pub resume: bool,
    /// Print the resolved config and a memory plan per device, then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: plan for this many data-parallel ranks (default: WORLD_SIZE, else 1).
    #[arg(long, requires = "dry_run")]
    pub world_size: Option<usize>,
    /// Run folder (default: results/<config folder>-<config name>, e.g. results/qwen3-4b-nsr).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

fn dry_run(cfg: &TrainConfig, world: usize) -> Result<()> {
    let cfg_path = {
        let in_model = cfg.model.path.join("config.json");
        match (&cfg.model.config, in_model.is_file()) {
            (_, true) => in_model,
            (Some(c), false) => c.clone(),
            (None, false) => bail!(
                "{} not found: give model.config = a config.json to plan with (the presets name one in paper/models/)",
                in_model.display()
            ),
        }
    };
    let mcfg = model::Config::from_path(&cfg_path)?;
    let dtype: DType = cfg.model.dtype.parse()?;
    let max_prompt = match &cfg.task {
        config::TaskSection::Math(m) => m.max_prompt_tokens,
        config::TaskSection::Mini(_) => 8,
    };
    let shape = memory::TrainShape {
        elt: dtype.kind().elt_size_in_bytes(),
        master: dtype != DType::F32,
        micro_batch: cfg.train.micro_batch,
        seq_len: max_prompt + cfg.rollout.max_new_tokens,
        head_chunk: rlvr_decomp::rl::logprob::head_chunk_rows(mcfg.vocab_size) as usize,
        gen_rows: cfg.rollout.batch,
        prompt_len: max_prompt,
        max_new: cfg.rollout.max_new_tokens,
        reference: cfg.objective.kind.uses_reference(cfg.objective.kl()),
        critic: cfg.objective.kind == rlvr_decomp::rl::ObjectiveKind::Ppo,
        // libtorch 2.11's SDPA takes a fused kernel on CPU (flash, masks included) and on CUDA.
        attention_probs: false,
        world,
        zero1: cfg.train.zero1,
        checkpointing: cfg.train.gradient_checkpointing,
        bucket_elems: BUCKET_ELEMS as usize,
    };
    let plan = memory::training_plan(&mcfg, &shape);
    println!("# resolved config\n{}", cfg.to_toml());
    println!(
        "# memory plan, device {} ({} parameters, {dtype}; from {})",
        cfg.model.device,
        memory::parameter_count(&mcfg),
        cfg_path.display()
    );
    for (what, b) in &plan.items {
        println!("#   {what:<48} {:>12}", memory::human_bytes(*b));
    }
    println!("#   {:<48} {:>12}", "total per device", memory::human_bytes(plan.total()));
    println!(
        "# world size {world}{}, gradient checkpointing {}; on an 80 GB device: {}; on a 141 GB device: {}",
        if cfg.train.zero1 { " with ZeRO-1" } else { "" },
        if cfg.train.gradient_checkpointing { "on" } else { "off" },
        if plan.total() <= 80e9 { "fits" } else { "does not fit" },
        if plan.total() <= 141e9 { "fits" } else { "does not fit" },
    );
    println!(
        "# rollout batch {} samples ({} prompts × {}), {} optimizer steps per batch of {} samples",
        cfg.rollout.prompts_per_step * cfg.rollout.n,
        cfg.rollout.prompts_per_step,
        cfg.rollout.n,
        cfg.train.mini_batches,
        cfg.mini_batch_size()
    );
    Ok(())
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    let cfg = TrainConfig::load(&args.config, &args.sets)?;
    if args.dry_run {
        let world = match args.world_size {
            Some(w) => w,
            None => dist::Launch::from_env()?.map_or(1, |l| l.world),
        };
        if world == 0 {
            bail!("--world-size must be at least 1");
        }
        return dry_run(&cfg, world);
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => {
            let stem =
                args.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            PathBuf::from("results").join(stem)
        }
    };
    let eos = model::Config::from_path(&cfg.model.path)?.eos_token_ids;
    let task = trainer::build_task(&cfg, &eos)?;
    // Under torchrun / srun every rank runs this; only rank 0 reports.
    let lead = dist::Launch::from_env()?.is_none_or(|l| l.rank == 0);
    let pb = ProgressBar::new(cfg.train.steps as u64);
    let tty = lead && std::io::stderr().is_terminal();
    if !tty {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("step {pos}/{len} {bar:30} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut first = true;
    let mut on_step = |m: &rlvr_decomp::rl::metrics::StepMetrics, total: usize| {
        if first {
            pb.set_position(m.step as u64 - 1);
            pb.reset_eta();
            first = false;
        }
        pb.set_position(m.step as u64);
        let line = format!(
            "correct {:.3}, kept {}, loss {:+.4}, grad {:.3}, clip {:.4}, {:.1}+{:.1} s",
            m.correct_ratio,
            m.update.kept_samples,
            m.update.loss,
            m.update.grad_norm,
            m.update.clip_frac,
            m.time_rollout_s,
            m.time_update_s
        );
        if tty {
            pb.set_message(line);
        } else if lead {
            tracing::info!("step {}/{total}: {line}", m.step);
        }
    };
    let s = trainer::train(&cfg, &out, task.as_ref(), args.resume, &mut on_step)
        .with_context(|| format!("training into {}", out.display()))?;
    pb.finish_and_clear();
    if lead {
        println!("{}", serde_json::to_string_pretty(&s)?);
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainStepArgs {
    /// HF model folder (the policy before the step).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Rollouts JSONL: {"group", "prompt_ids", "response_ids", "reward": 0|1} per line.
    #[arg(long, value_name = "FILE")]
    pub rollouts: PathBuf,
    /// Config TOML; only [objective] and [optim] are read (keys left out: the paper's defaults).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output folder: the updated model (HF layout) and step.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Rollouts per forward/backward (default: all of them at once).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Under torchrun/srun: shard the AdamW state across the ranks (ZeRO-1).
    #[arg(long)]
    pub zero1: bool,
    #[command(flatten)]
    pub dev: super::model::DeviceArgs,
}

pub fn run_train_step(args: TrainStepArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    let mut table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    config::apply_overrides(&mut table, &args.sets)?;
    let section = |name: &str| table.get(name).cloned().unwrap_or_else(|| toml::Value::Table(Default::default()));
    let mut objective: ObjectiveConfig = section("objective")
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: [objective]: {}", args.config.display(), e.message()))?;
    objective.resolve();
    objective.validate().map_err(anyhow::Error::msg)?;
    let optim: OptimConfig = section("optim")
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: [optim]: {}", args.config.display(), e.message()))?;
    optim.validate("optim").map_err(anyhow::Error::msg)?;

    let rollouts = rollout::read_jsonl(&args.rollouts)?;
    let device = model::parse_device(&args.dev.device)?;
    let dtype: DType = args.dev.dtype.parse()?;
    // Under torchrun / srun: one global mini-batch split across the ranks (see rl::update).
    let timeout = dist::timeout_from_env(dist::DEFAULT_TIMEOUT)?;
    let (pg, device) = match dist::join_from_env(device, timeout)? {
        Some((pg, d)) => (Some(Arc::new(pg)), d),
        None if args.zero1 => bail!("--zero1 needs a multi-process launch (torchrun or srun)"),
        None => (None, device),
    };
    let mut policy = model::load_model(&args.model, device, dtype)?;
    policy.model.gradient_checkpointing = args.gradient_checkpointing;
    rollout::check_vocab(&rollouts, policy.cfg.vocab_size)?;
    let vars: Vec<(String, tch::Tensor)> = policy.vs.variables().into_iter().collect();
    let mut opt = match &pg {
        Some(pg) => {
            dist::broadcast_named(pg, &vars)?;
            AdamW::distributed(vars, optim.clone(), pg.clone(), args.zero1, BUCKET_ELEMS)?
        }
        None => AdamW::new(vars, optim.clone())?,
    };
    let reference = if objective.kind.uses_reference(objective.kl()) {
        Some(model::load_model(&args.model, device, dtype)?)
    } else {
        None
    };
    let ccfg = CriticConfig::default();
    let mut critic = if objective.kind == rlvr_decomp::rl::ObjectiveKind::Ppo {
        let mut c = Critic::init(&args.model, device, dtype, 0)?;
        c.body.model.gradient_checkpointing = args.gradient_checkpointing;
        let ocfg = OptimConfig { lr: ccfg.lr, ..optim.clone() };
        let o = match &pg {
            Some(pg) => {
                dist::broadcast_named(pg, &c.trainable())?;
                AdamW::distributed(c.trainable(), ocfg, pg.clone(), args.zero1, BUCKET_ELEMS)?
            }
            None => AdamW::new(c.trainable(), ocfg)?,
        };
        Some((c, o))
    } else {
        None
    };
    let pad = policy.cfg.pad_token_id.or(policy.cfg.eos_token_ids.first().copied()).unwrap_or(0);
    let mut learner = Learner {
        policy: &policy,
        opt: &mut opt,
        reference: reference.as_ref(),
        critic: critic.as_mut().map(|(c, o)| (&*c, o)),
        pad,
        dist: pg.as_deref(),
    };
    let cfg = UpdateConfig {
        objective,
        mini_batch_size: rollouts.len(),
        micro_batch: args.micro_batch.unwrap_or(rollouts.len()),
        critic: ccfg,
    };
    let stats = update::update(&mut learner, &rollouts, &cfg)?;
    if let Some(pg) = &pg {
        // Every rank holds the same weights now; rank 0 writes them (and every rank learns whether
        // that worked).
        if pg.rank() != 0 {
            dist::agree(pg, "writing the updated model", Ok::<(), String>(())).map_err(anyhow::Error::msg)?;
            return Ok(());
        }
    }
    let saved = policy.save(&args.out, &Default::default()).map_err(|e| e.to_string());
    if let Some(pg) = &pg {
        dist::agree(pg, "writing the updated model", saved.clone()).map_err(anyhow::Error::msg)?;
    }
    saved.map_err(anyhow::Error::msg)?;
    let json = serde_json::json!({
        "objective": cfg.objective,
        "optim": optim,
        "rollouts": rollouts.len(),
        "loss": stats.loss,
        "pg_loss": stats.pg_loss,
        "entropy": stats.entropy,
        "kl": stats.kl,
        "grad_norm": stats.grad_norm,
        "kept_samples": stats.kept_samples,
        "kept_tokens": stats.kept_tokens,
        "clip_frac": stats.clip_frac,
        "max_abs_log_ratio": stats.max_abs_log_ratio,
        "optimizer_steps": stats.optimizer_steps,
        "skipped_steps": stats.skipped_steps,
        "value_loss": stats.value_loss,
    });
    super::write_json_atomic(&args.out.join("step.json"), &json)?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct GradientArgs {
    /// HF model folder.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Comma-separated prompt token ids (or use --dataset/--index).
    #[arg(long, conflicts_with = "dataset")]
    pub prompt_ids: Option<String>,
    /// Comma-separated response token ids (default with --dataset: a response sampled by the model).
    #[arg(long)]
    pub response_ids: Option<String>,
    /// Take the prompt from a dataset problem (rendered with --template, tokenized with the
    /// model folder's tokenizer.json or the project's).
    #[arg(long, value_enum, conflicts_with = "problems")]
    pub dataset: Option<rlvr_decomp::data::Dataset>,
    /// Take the prompt from a problems file instead (JSONL, as `mini-data` writes).
    #[arg(long, value_name = "FILE")]
    pub problems: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    #[arg(long, value_enum, default_value = "qwen2.5-math")]
    pub template: rlvr_decomp::prompt::Template,
    /// Sampling of the response when --response-ids is not given.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Precision of the analysis.
    #[arg(long, value_enum, default_value = "f64")]
    pub dtype: AnalysisDType,
    /// Unsampled tokens listed per position in the summary.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Output JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: super::DataPathArgs,
}

fn parse_ids(s: &str, flag: &str) -> Result<Vec<i64>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<i64>().with_context(|| format!("bad token id {t:?} in {flag}")))
        .collect()
}

pub fn run_gradient(args: GradientArgs) -> Result<()> {
    let lm = model::load_model(&args.model, tch::Device::Cpu, DType::F32)?;
    let tok_path = Some(args.model.join("tokenizer.json")).filter(|p| p.is_file());
    let tokenizer = || -> Result<rlvr_decomp::prompt::QwenTokenizer> {
        Ok(rlvr_decomp::prompt::QwenTokenizer::from_file(&rlvr_decomp::paths::tokenizer_path(tok_path.as_deref()))?)
    };
    // With a problem (--dataset / --problems): its gold answer, to verify the response.
    let mut problem: Option<rlvr_decomp::data::Problem> = None;
    let prompt = match (&args.prompt_ids, args.dataset, &args.problems) {
        (Some(p), _, _) => parse_ids(p, "--prompt-ids")?,
        (None, ds, file) if ds.is_some() || file.is_some() => {
            let problems = match (ds, file) {
                (Some(ds), _) => rlvr_decomp::data::load(ds, &args.data.roots())?,
                (None, Some(f)) => rlvr_decomp::data::load_problems_file(f)?,
                (None, None) => unreachable!("guarded above"),
            };
            let p = problems
                .get(args.index)
                .with_context(|| format!("--index {} out of range ({} problems)", args.index, problems.len()))?
                .clone();
            let ids = tokenizer()?.encode(&args.template.render(&p.problem))?.into_iter().map(i64::from).collect();
            problem = Some(p);
            ids
        }
        _ => bail!("give --prompt-ids, --dataset or --problems"),
    };
    let response = match &args.response_ids {
        Some(r) => parse_ids(r, "--response-ids")?,
        None => {
            let params = model::SamplingParams {
                temperature: args.temperature,
                max_new_tokens: args.max_new_tokens,
                stop_ids: lm.cfg.eos_token_ids.clone(),
                ..Default::default()
            };
            let req = model::GenRequest { prompt: prompt.clone(), problem_id: 0, sample_idx: 0 };
            let pad = lm.cfg.pad_token_id.unwrap_or(0);
            model::generate(&lm.model, &[req], &params, args.seed, pad)?.remove(0).tokens
        }
    };
    let a = gradient::analyse(&lm.model, &prompt, &response, args.dtype, args.top)?;
    tracing::info!(
        "{} response tokens; max |autograd − closed form| = {:.3e} ({:?})",
        a.tokens.len(),
        a.max_abs_diff,
        args.dtype
    );
    let mut json = serde_json::to_value(&a)?;
    json["prompt_ids"] = serde_json::json!(prompt);
    if let Some(p) = &problem {
        // The response's verdict: the figure puts correct responses under PSR, wrong ones under NSR.
        let ids: Vec<u32> = response.iter().map(|&t| t as u32).collect();
        let text = tokenizer()?.decode(&ids, true)?;
        let v = rlvr_decomp::eval::verify::verify(
            &p.answer,
            &text,
            rlvr_decomp::eval::verify::Mode::Strict,
            rlvr_decomp::eval::verify::Tolerance::MathVerify,
        );
        json["problem_id"] = serde_json::json!(p.id);
        json["response_text"] = serde_json::json!(text);
        json["correct"] = serde_json::json!(v.correct);
    }
    super::write_json_atomic(Path::new(&args.out), &json)?;
    println!("{}", serde_json::json!({"out": args.out, "tokens": a.tokens.len(), "max_abs_diff": a.max_abs_diff}));
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// HF model folder.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Rollouts JSONL (see `train-step`); the whole file is one mini-batch.
    #[arg(long, value_name = "FILE")]
    pub rollouts: PathBuf,
    /// Objective of the timed update (defaults: the paper's, lr 1e-6).
    #[arg(long, value_enum, default_value = "w-reinforce")]
    pub objective: rlvr_decomp::rl::ObjectiveKind,
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Intra-op threads (0 = libtorch default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Recompute each decoder layer in the backward pass (per-layer gradient checkpointing).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Device (cpu, cuda, cuda:N) and parameter dtype (f32; bf16 computes in bf16 with f32 master
    /// weights and AdamW state).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Output JSON (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// The process's peak resident memory so far (Linux `ru_maxrss`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    (unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0).then_some(u.ru_maxrss as u64 * 1024)
}

/// The process's resident memory now (Linux `/proc/self/statm`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    Some(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64)
}

/// `rlvr-decomp bench-train`: seconds per update (old log-probs, forward, loss, backward, AdamW)
/// on fixed rollouts, the same work as one mini-batch of `train` (see `scripts/bench_train.py`).
pub fn run_bench_train(args: BenchTrainArgs) -> Result<()> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    if args.iters == 0 {
        bail!("--iters must be positive");
    }
    let rollouts = rollout::read_jsonl(&args.rollouts)?;
    let start_rss = current_rss_bytes();
    let device = model::parse_device(&args.device)?;
    let dtype: DType = args.dtype.parse()?;
    model::check_dtype_device(dtype, device)?;
    let mut policy = model::load_model(&args.model, device, dtype)?;
    policy.model.gradient_checkpointing = args.gradient_checkpointing;
    rollout::check_vocab(&rollouts, policy.cfg.vocab_size)?;
    let objective = ObjectiveConfig::paper(args.objective);
    if objective.kind.uses_reference(objective.kl()) || objective.kind == rlvr_decomp::rl::ObjectiveKind::Ppo {
        bail!("bench-train times psr, nsr or w-reinforce (no reference model or critic)");
    }
    let mut opt = AdamW::new(policy.vs.variables().into_iter().collect(), OptimConfig::default())?;
    let cfg = UpdateConfig {
        objective,
        mini_batch_size: rollouts.len(),
        micro_batch: rollouts.len(),
        critic: CriticConfig::default(),
    };
    let mut times = vec![];
    let mut last = None;
    let cuda_index = match device {
        tch::Device::Cuda(i) => Some(i),
        _ => None,
    };
    for i in 0..args.warmup + args.iters {
        if let (Some(d), true) = (cuda_index, i == args.warmup) {
            dist::cuda_memory_peaks(d, true)?; // the timed iterations' own peak
        }
        let t0 = std::time::Instant::now();
        let mut learner = Learner { policy: &policy, opt: &mut opt, reference: None, critic: None, pad: 0, dist: None };
        let s = update::update(&mut learner, &rollouts, &cfg)?;
        if device.is_cuda() {
            tch::Cuda::synchronize(cuda_index.unwrap_or(0) as i64);
        }
        let dt = t0.elapsed().as_secs_f64();
        if i >= args.warmup {
            times.push(dt);
        }
        last = Some(s);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let tokens: usize = rollouts.iter().map(|r| r.prompt_ids.len() + r.response_ids.len()).sum();
    // The update's memory plan (what `train --dry-run` adds up) against the measured peak.
    let n_resp: usize = rollouts.iter().map(|r| r.response_ids.len()).sum();
    let shape = memory::TrainShape {
        elt: dtype.kind().elt_size_in_bytes(),
        master: dtype != DType::F32,
        micro_batch: rollouts.len(),
        seq_len: rollouts.iter().map(|r| r.prompt_ids.len() + r.response_ids.len()).max().unwrap_or(1),
        head_chunk: (rlvr_decomp::rl::logprob::head_chunk_rows(policy.cfg.vocab_size) as usize).min(n_resp),
        gen_rows: 0,
        prompt_len: 0,
        max_new: 0,
        reference: false,
        critic: false,
        attention_probs: false,
        world: 1,
        zero1: false,
        checkpointing: args.gradient_checkpointing,
        bucket_elems: BUCKET_ELEMS as usize,
    };
    let plan = memory::update_plan(&policy.cfg, &shape);
    let peak = peak_rss_bytes();
    let cuda_peaks = match cuda_index {
        Some(d) => Some(dist::cuda_memory_peaks(d, false)?),
        None => None,
    };
    let measured = match (cuda_peaks, peak, start_rss) {
        (Some((allocated, _)), _, _) => Some(allocated),
        (None, Some(p), Some(s)) => Some(p.saturating_sub(s)),
        _ => None,
    };
    let json = serde_json::json!({
        "impl": "tch (rlvr-decomp rl::update)",
        "objective": args.objective,
        "rollouts": rollouts.len(),
        "tokens": tokens,
        "threads": tch::get_num_threads(),
        "gradient_checkpointing": args.gradient_checkpointing,
        "device": args.device,
        "dtype": dtype.to_string(),
        "peak_rss_bytes": peak,
        "cuda_peak_allocated_bytes": cuda_peaks.map(|p| p.0),
        "cuda_peak_reserved_bytes": cuda_peaks.map(|p| p.1),
        "tokens_per_s": tokens as f64 / mean,
        "start_rss_bytes": start_rss,
        "plan_bytes": plan.total(),
        "plan": plan.items.iter().map(|(k, v)| serde_json::json!({"what": k, "bytes": v})).collect::<Vec<_>>(),
        "measured_over_plan": measured.map(|m| m as f64 / plan.total()),
        "seconds_per_update": mean,
        "update_seconds": times,
        "last": last,
    });
    let text = serde_json::to_string_pretty(&json)?;
    match &args.out {
        Some(p) => super::write_json_atomic(p, &json)?,
        None => println!("{text}"),
    }
    Ok(())
}
