//! Supervised fine-tuning of the mini base model (`rlvr-decomp sft`): a tiny Qwen3-architecture
//! model (the same `src/model/` code as paper scale), initialised from a seeded stream, trained on
//! the mini task's demonstrations ([`crate::mini::MiniData::sft_batch`]) with the loss on response
//! tokens through `<|im_end|>`, and evaluated on the held-out tiers as it trains (pass@1, pass@n,
//! strategy-2 share), so the stopping point is visible in `sft_metrics.jsonl`.
//!
//! The output folder is a [`crate::rundir`] run folder: `settings.json` (the resolved config),
//! `init/` (the initial weights), `base/` (the final model in HF layout with the task's
//! `tokenizer.json` and a fingerprint), `sft_metrics.jsonl`. A finished run with the same settings
//! is not redone.

use crate::eval::pass_at_k::pass_at_k;
use crate::mini::{strategy_of, MiniConfig};
use crate::model::{self, Config, DType, SaveOptions};
use crate::rl::logprob::{logp_and_entropy, pack, response_hidden};
use crate::rl::optim::{AdamW, OptimConfig};
use crate::rl::task::{MiniTask, Task, TaskItem};
use crate::rl::{io_err, Result, RlError, Rollout};
use crate::rundir::{Layout, RunDir};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The base model's shape (a Qwen3 config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TinyModel {
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    #[serde(default = "d_kv")]
    pub num_key_value_heads: i64,
    #[serde(default = "d_head_dim")]
    pub head_dim: i64,
    #[serde(default = "d_inter")]
    pub intermediate_size: i64,
    #[serde(default = "d_pos")]
    pub max_position_embeddings: i64,
}

fn d_hidden() -> i64 {
    96
}
fn d_layers() -> i64 {
    3
}
fn d_heads() -> i64 {
    4
}
fn d_kv() -> i64 {
    2
}
fn d_head_dim() -> i64 {
    24
}
fn d_inter() -> i64 {
    384
}
fn d_pos() -> i64 {
    64
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            hidden_size: d_hidden(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            num_key_value_heads: d_kv(),
            head_dim: d_head_dim(),
            intermediate_size: d_inter(),
            max_position_embeddings: d_pos(),
        }
    }
}

/// `rlvr-decomp sft` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// The mini task (the same section as the RL config's `[task]`, `kind` left out).
    pub task: MiniConfig,
    #[serde(default)]
    pub model: TinyModel,
    /// Optimizer steps and demonstrations per step.
    #[serde(default = "d_steps")]
    pub steps: usize,
    #[serde(default = "d_batch")]
    pub batch: usize,
    #[serde(default)]
    pub optim: SftOptim,
    /// Seeds the initial weights (the data stream is the task's seed).
    #[serde(default)]
    pub seed: u64,
    /// Intra-op threads (0 = libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Evaluate the held-out tiers every N steps (and at the end); 0 = only at the end.
    #[serde(default = "d_eval_every")]
    pub eval_every: usize,
    /// Samples per held-out problem in those evaluations (T = 1).
    #[serde(default = "d_eval_n")]
    pub eval_samples: usize,
}

/// AdamW for SFT (the prototypes: lr 1e-3, batch 128).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftOptim {
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
}

impl Default for SftOptim {
    fn default() -> Self {
        SftOptim { lr: d_lr(), weight_decay: 0.0, grad_clip: d_clip() }
    }
}

fn d_steps() -> usize {
    1000
}
fn d_batch() -> usize {
    128
}
fn d_lr() -> f64 {
    1e-3
}
fn d_clip() -> f64 {
    1.0
}
fn d_eval_every() -> usize {
    250
}
fn d_eval_n() -> usize {
    16
}

impl SftConfig {
    pub fn from_toml(text: &str, sets: &[String]) -> Result<SftConfig> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| RlError::Config(e.message().to_string()))?;
        crate::rl::config::apply_overrides(&mut table, sets)?;
        let cfg: SftConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| RlError::Config(e.message().to_string()))?;
        if cfg.steps == 0 || cfg.batch == 0 || cfg.eval_samples == 0 {
            return Err(RlError::Config("steps, batch and eval_samples must be positive".into()));
        }
        OptimConfig {
            lr: cfg.optim.lr,
            weight_decay: cfg.optim.weight_decay,
            grad_clip: cfg.optim.grad_clip,
            ..Default::default()
        }
        .validate("optim")
        .map_err(RlError::Config)?;
        Ok(cfg)
    }

    /// The mini task of any config with a mini `[task]` table (an SFT config, or a mini RL config whose
    /// `[task]` also says `kind = "mini"`), after `--set` overrides: what `mini-data` generates from.
    pub fn task_from_toml(text: &str, sets: &[String]) -> Result<crate::mini::MiniConfig> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| RlError::Config(e.message().to_string()))?;
        crate::rl::config::apply_overrides(&mut table, sets)?;
        let mut task = table
            .remove("task")
            .and_then(|t| t.as_table().cloned())
            .ok_or_else(|| RlError::Config("no [task] table".into()))?;
        if let Some(kind) = task.remove("kind") {
            if kind.as_str() != Some("mini") {
                return Err(RlError::Config(format!("[task] kind = {kind}: not the mini task")));
            }
        }
        toml::Value::Table(task)
            .try_into()
            .map_err(|e: toml::de::Error| RlError::Config(format!("[task]: {}", e.message())))
    }

    /// The HF `config.json` of the base model.
    pub fn hf_config(&self) -> serde_json::Value {
        let m = &self.model;
        let vocab = crate::mini::tokenizer::vocab().len();
        serde_json::json!({
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "vocab_size": vocab, "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
            "num_hidden_layers": m.num_hidden_layers, "num_attention_heads": m.num_attention_heads,
            "num_key_value_heads": m.num_key_value_heads, "head_dim": m.head_dim,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
            "max_position_embeddings": m.max_position_embeddings, "hidden_act": "silu", "attention_bias": false,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"
        })
    }
}

/// Held-out metrics of one tier at one SFT step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftEval {
    pub step: usize,
    pub tier: String,
    pub samples_per_problem: usize,
    pub pass_at_1: f64,
    pub pass_at_n: f64,
    pub s2_share: f64,
    pub entropy: f64,
}

/// One line of `sft_metrics.jsonl`: the mean loss since the previous line and, at evaluation
/// steps, the tiers' metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftLine {
    pub step: usize,
    pub loss: f64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eval: Vec<SftEval>,
}

/// What a finished SFT run produced.
#[derive(Debug, Clone, Serialize)]
pub struct SftSummary {
    pub base: PathBuf,
    pub skipped: bool,
    pub seconds: f64,
    pub final_eval: Vec<SftEval>,
}

/// `n` draws of N(0, std²) from a seeded stream (Box–Muller).
fn normal(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

/// Writes a freshly initialised model (HF's Qwen3 init: N(0, 0.02²) weights, unit norms) with the
/// mini tokenizer into `dir`.
pub fn init_model(cfg: &SftConfig, dir: &Path) -> Result<()> {
    let hf = cfg.hf_config();
    let mcfg = Config::from_json_str(&hf.to_string(), Path::new("config.json"))?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = model::Qwen::new(&mcfg, vs.root());
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (i, (name, mut v)) in vars.into_iter().enumerate() {
            if name.ends_with("norm.weight") {
                let _ = v.fill_(1.0);
            } else {
                let seed = crate::rl::trainer::derive_seed(cfg.seed, "sft-init", i as u64);
                v.copy_(&Tensor::from_slice(&normal(v.numel(), 0.02, seed)).view(v.size().as_slice()));
            }
        }
    });
    let src = dir.with_extension("tokenizer");
    std::fs::create_dir_all(&src).map_err(io_err(&src))?;
    crate::mini::tokenizer::write(&src).map_err(io_err(&src))?;
    model::save_checkpoint(&vs, &mcfg, dir, &SaveOptions { source_dir: Some(src.clone()), ..Default::default() })?;
    std::fs::remove_dir_all(&src).map_err(io_err(&src))?;
    Ok(())
}

/// pass@1, pass@n, strategy-2 share and mean token entropy of `policy` on every held-out tier.
pub fn evaluate_tiers(
    policy: &model::LoadedModel,
    task: &MiniTask,
    n: usize,
    seed: u64,
    step: usize,
) -> Result<Vec<SftEval>> {
    let params =
        model::SamplingParams { temperature: 1.0, max_new_tokens: 48, stop_ids: task.stop_ids(), ..Default::default() };
    let design = task.data().cfg.design;
    let mut out = vec![];
    for (tier, items) in task.eval_sets() {
        let refs: Vec<&TaskItem> = items.iter().collect();
        let rollouts = crate::rl::rollout::generate(
            &policy.model,
            task,
            &refs,
            n,
            &params,
            crate::rl::trainer::derive_seed(seed, "sft-eval", step as u64),
            512,
            Default::default(),
        )?;
        let rows: Vec<&Rollout> = rollouts.iter().collect();
        let (_, ent) = crate::rl::logprob::token_stats(&policy.model, &rows, 256, task.pad_id())?;
        let (mut p1, mut pn, mut s2, mut e) = (0.0, 0.0, 0usize, 0.0);
        for chunk in rollouts.chunks(n) {
            let c = chunk.iter().filter(|r| r.correct()).count() as u64;
            p1 += pass_at_k(n as u64, c, 1).unwrap_or(0.0);
            pn += pass_at_k(n as u64, c, n as u64).unwrap_or(0.0);
        }
        let mut off = 0;
        for r in &rollouts {
            let text = task.decode(&r.response_ids)?;
            s2 += (strategy_of(design, &text) == 2) as usize;
            let len = r.response_ids.len();
            e += ent[off..off + len].iter().map(|&x| x as f64).sum::<f64>() / len.max(1) as f64;
            off += len;
        }
        let np = items.len().max(1) as f64;
        out.push(SftEval {
            step,
            tier: tier.clone(),
            samples_per_problem: n,
            pass_at_1: p1 / np,
            pass_at_n: pn / np,
            s2_share: s2 as f64 / rollouts.len().max(1) as f64,
            entropy: e / rollouts.len().max(1) as f64,
        });
    }
    Ok(out)
}

const LAYOUT: Layout = Layout { is_result: |_| false };

/// Runs SFT into `out` (a run folder); `on_line` sees every metrics line.
pub fn run(cfg: &SftConfig, out: &Path, on_line: &mut dyn FnMut(&SftLine)) -> Result<SftSummary> {
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    let _run = RunDir::open(out, &serde_json::to_value(cfg).expect("serializable"), LAYOUT)?;
    let base = out.join("base");
    let done = out.join("done.json");
    if done.is_file() && crate::fingerprint::verify(&base, &[], Some("base model")).is_ok() {
        let text = std::fs::read_to_string(&done).map_err(io_err(&done))?;
        let final_eval: Vec<SftEval> = serde_json::from_str(&text).unwrap_or_default();
        return Ok(SftSummary { base, skipped: true, seconds: 0.0, final_eval });
    }
    let init = out.join("init");
    init_model(cfg, &init)?;
    let lm = model::load_model(&init, tch::Device::Cpu, DType::F32)?;
    let task = MiniTask::new(&cfg.task, &init.join("tokenizer.json"))?;
    let tok = crate::prompt::QwenTokenizer::from_file(&init.join("tokenizer.json"))?;
    let im_end = tok.im_end as i64;
    let o = &cfg.optim;
    let mut opt = AdamW::new(
        lm.vs.variables().into_iter().collect(),
        OptimConfig { lr: o.lr, weight_decay: o.weight_decay, grad_clip: o.grad_clip, ..Default::default() },
    )?;
    let metrics = out.join("sft_metrics.jsonl");
    let _ = std::fs::remove_file(&metrics);
    let log = crate::rl::metrics::Log::new(out, "sft_metrics.jsonl", "sft_metrics.parquet");
    let t0 = std::time::Instant::now();
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    let mut last_eval = vec![];
    for step in 1..=cfg.steps {
        let pairs = task.data().sft_batch(step as u64, cfg.batch);
        let prompts: Vec<String> = pairs.iter().map(|(p, _)| p.clone()).collect();
        let responses: Vec<String> = pairs.iter().map(|(_, r)| r.clone()).collect();
        let (pe, re) = (tok.encode_batch(&prompts)?, tok.encode_batch(&responses)?);
        let rows: Vec<Rollout> = pe
            .into_iter()
            .zip(re)
            .map(|(p, r)| {
                let mut resp: Vec<i64> = r.into_iter().map(i64::from).collect();
                resp.push(im_end);
                Rollout {
                    group: String::new(),
                    prompt_ids: p.into_iter().map(i64::from).collect(),
                    response_ids: resp,
                    reward: 0.0,
                }
            })
            .collect();
        let refs: Vec<&Rollout> = rows.iter().collect();
        let packed = pack(&refs, task.pad_id(), tch::Device::Cpu);
        let h = response_hidden(&lm.model, &packed)?; // [N, C]
        let (logp, _) = logp_and_entropy(&lm.model.lm_head(&h), &packed.targets); // [N]
        let loss = -logp.mean(Kind::Float);
        opt.zero_grad();
        loss.f_backward()?;
        opt.step()?;
        loss_sum += loss.f_double_value(&[])?;
        loss_n += 1;
        let eval_now = step == cfg.steps || (cfg.eval_every > 0 && step % cfg.eval_every == 0);
        if eval_now || step % 50 == 0 {
            let eval =
                if eval_now { evaluate_tiers(&lm, &task, cfg.eval_samples, cfg.task.seed, step)? } else { vec![] };
            let line = SftLine { step, loss: loss_sum / loss_n as f64, seconds: t0.elapsed().as_secs_f64(), eval };
            log.append(&line)?;
            on_line(&line);
            if eval_now {
                last_eval = line.eval.clone();
            }
            (loss_sum, loss_n) = (0.0, 0);
        }
    }
    lm.save(&base, &Default::default())?;
    crate::durable::write(&done, serde_json::to_string_pretty(&last_eval).expect("serializable").as_bytes())
        .map_err(io_err(&done))?;
    Ok(SftSummary { base, skipped: false, seconds: t0.elapsed().as_secs_f64(), final_eval: last_eval })
}
