//! The training loop: each step samples `prompts_per_step × n` rollouts from the current policy,
//! scores them, updates ([`crate::rl::update`]), logs metrics, and every `checkpoint.every` steps
//! writes a crash-safe checkpoint. `kill -9` at any moment, then `--resume`, continues from the
//! last checkpoint and ends (on CPU) with exactly the weights and metrics of an uninterrupted run.
//!
//! The run folder (`results/<run>/`) is a [`crate::rundir`] run folder:
//!
//! | file | what |
//! |---|---|
//! | `settings.json` | the resolved config (less `train.steps`, `checkpoint.keep`), the base model's and the task's fingerprints: a resume with anything else is refused |
//! | `config.toml` | the resolved config, every key |
//! | `metrics.jsonl`, `metrics.parquet` | one row per step ([`super::metrics::StepMetrics`]) |
//! | `eval_metrics.jsonl`, `.parquet` | one row per (evaluation step, held-out set) |
//! | `checkpoints/step-NNNNNN/` | `policy/` (HF layout + fingerprint), `optimizer.safetensors`, `critic/` + `critic_optimizer.safetensors` (PPO), `state.json` |
//! | `checkpoints/latest.json` | the newest complete checkpoint (written after it is in place) |
//!
//! Nothing here draws from a global RNG: the data order of epoch e is a permutation seeded by
//! (seed, e); rollout r of prompt p at step s is seeded by (seed, s, p, r).

use super::config::{TaskSection, TrainConfig};
use super::critic::Critic;
use super::logprob::token_stats;
use super::metrics::{EvalMetrics, Log, StepMetrics, EVAL_JSONL, EVAL_PARQUET, METRICS_JSONL, METRICS_PARQUET};
use super::optim::BUCKET_ELEMS;
use super::optim::{AdamW, OptimConfig};
use super::rollout::{self, Rollout};
use super::task::{MathTask, MiniTask, Task, TaskItem};
use super::update::{update, Learner, UpdateConfig};
use super::{io_err, ObjectiveKind, Result, RlError};
use crate::dist::{self, ProcessGroup};
use crate::model::{self, DType, LoadedModel, SamplingParams};
use crate::rundir::{Layout, RunDir};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::Tensor;

pub const CHECKPOINTS: &str = "checkpoints";
pub const LATEST: &str = "latest.json";
pub const CONFIG_FILE: &str = "config.toml";
const OPT_FILE: &str = "optimizer.safetensors";
const CRITIC_OPT_FILE: &str = "critic_optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// The run folder's layout: results are checkpoints (verified by their fingerprints) and logs.
const LAYOUT: Layout = Layout { is_result: |_| false };

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: usize,
    /// The data cursor after this step: epoch and position within its permutation.
    pub epoch: usize,
    pub position: usize,
    pub policy_fingerprint: String,
    pub optimizer_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_optimizer_sha256: Option<String>,
    /// ZeRO-1 runs: sha256 of every rank's optimizer shard (`optimizer.rank<r>.safetensors`),
    /// in rank order (`optimizer_sha256` is then rank 0's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optimizer_shards: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critic_optimizer_shards: Vec<String>,
}

/// A rank's optimizer-shard file name (ZeRO-1 checkpoints).
fn shard_file(stem: &str, rank: usize) -> String {
    format!("{stem}.rank{rank}.safetensors")
}

/// `checkpoints/latest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latest {
    pub step: usize,
    pub dir: String,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for (run seed, purpose, index): stable across versions and platforms.
pub fn derive_seed(seed: u64, purpose: &str, index: u64) -> u64 {
    let tag = purpose.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    splitmix64(splitmix64(seed ^ tag) ^ index)
}

/// The prompts of step `step` (1-based): epoch-wise seeded permutations, `drop_last` like verl.
/// Returns (item indices, epoch, position after the step). Needs `per_step <= n_items`.
pub fn step_prompts(
    n_items: usize,
    per_step: usize,
    seed: u64,
    shuffle: bool,
    step: usize,
) -> (Vec<usize>, usize, usize) {
    let per_epoch = (n_items / per_step).max(1);
    let epoch = (step - 1) / per_epoch;
    let k = (step - 1) % per_epoch;
    let mut perm: Vec<usize> = (0..n_items).collect();
    if shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive_seed(seed, "epoch", epoch as u64));
        perm.shuffle(&mut rng);
    }
    let idx = perm[k * per_step..(k + 1) * per_step].to_vec();
    (idx, epoch, (k + 1) * per_step)
}

/// Builds the task a config names.
pub fn build_task(cfg: &TrainConfig, model_eos: &[i64]) -> Result<Box<dyn Task>> {
    match &cfg.task {
        TaskSection::Math(m) => Ok(Box::new(MathTask::new(m, &cfg.model.path, model_eos)?)),
        TaskSection::Mini(m) => Ok(Box::new(MiniTask::new(m, &cfg.model.path.join("tokenizer.json"))?)),
    }
}

/// What a finished `train` call did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps_done: usize,
    pub resumed_from: Option<usize>,
    pub final_checkpoint: Option<PathBuf>,
    pub last: Option<StepMetrics>,
}

/// Per-step callback (progress bars, logs).
pub type OnStep<'a> = &'a mut dyn FnMut(&StepMetrics, usize);

struct State {
    policy: LoadedModel,
    opt: AdamW,
    reference: Option<LoadedModel>,
    critic: Option<(Critic, AdamW)>,
}

fn dtype_of(cfg: &TrainConfig) -> Result<DType> {
    cfg.model.dtype.parse::<DType>().map_err(|e| RlError::Config(format!("model.dtype: {e}")))
}

/// Trains as `cfg` says into `run_dir` on `task` (`resume`: continue from the newest checkpoint).
pub fn train(
    cfg: &TrainConfig,
    run_dir: &Path,
    task: &dyn Task,
    resume: bool,
    on_step: OnStep<'_>,
) -> Result<TrainSummary> {
    cfg.validate()?;
    let device = model::parse_device(&cfg.model.device)?;
    if cfg.model.threads > 0 {
        tch::set_num_threads(cfg.model.threads as i32);
    }
    // Under torchrun / srun: join the data-parallel group (one GPU per process: cuda:LOCAL_RANK).
    let timeout = dist::timeout_from_env(dist::DEFAULT_TIMEOUT).map_err(dist_err)?;
    let (pg, device) = match dist::join_from_env(device, timeout).map_err(dist_err)? {
        Some((pg, d)) => (Some(Arc::new(pg)), d),
        None => (None, device),
    };
    if cfg.train.zero1 && pg.is_none() {
        return Err(RlError::Config(
            "train.zero1 shards the optimizer across data-parallel ranks: launch with torchrun or srun".into(),
        ));
    }
    let (rank, world) = pg.as_ref().map_or((0, 1), |p| (p.rank(), p.world()));
    let lead = rank == 0;
    let dtype = dtype_of(cfg)?;
    let mut policy = model::load_model(&cfg.model.path, device, dtype)?;
    policy.model.gradient_checkpointing = cfg.train.gradient_checkpointing;
    let mut settings = serde_json::json!({
        "config": cfg.settings_value(),
        "base_model": policy.fingerprint.sha256,
        "task": task.fingerprint(),
    });
    if world > 1 {
        // Rollouts are split across ranks and ZeRO-1 shards per rank: resume with the same world.
        settings["world_size"] = world.into();
    }
    // Held for the whole run by rank 0 (the folder lives on storage every rank shares): the lock,
    // the settings check and the newest checkpoint, which rank 0 alone reads and hands to the others
    // (so every rank resumes from the same step, whatever their file caches show).
    let ckpts = run_dir.join(CHECKPOINTS);
    let metrics = Log::new(run_dir, METRICS_JSONL, METRICS_PARQUET);
    let evals = Log::new(run_dir, EVAL_JSONL, EVAL_PARQUET);
    let setup = || -> Result<(Option<RunDir>, Option<Latest>)> {
        if !lead {
            return Ok((None, None));
        }
        let run = RunDir::open(run_dir, &settings, LAYOUT)?;
        let latest = read_latest(&ckpts)?;
        if !resume && (latest.is_some() || !metrics.rows()?.is_empty()) {
            return Err(RlError::Config(format!(
                "{} already holds a run; pass --resume to continue it, or choose another folder",
                run_dir.display()
            )));
        }
        crate::durable::write(&run_dir.join(CONFIG_FILE), cfg.to_toml().as_bytes()).map_err(io_err(run_dir))?;
        Ok((Some(run), latest))
    };
    let (_run, latest) = match &pg {
        None => setup()?,
        Some(pg) => {
            let (run, latest) = dist::agree(pg, "setting up the run folder", setup()).map_err(RlError::Dist)?;
            let bytes = serde_json::to_vec(&latest).expect("serializable");
            let all = pg.all_gather_bytes(&bytes).map_err(dist_err)?;
            let latest: Option<Latest> = serde_json::from_slice(&all[0])
                .map_err(|e| RlError::Dist(format!("rank 0's checkpoint pointer: {e}")))?;
            (run, latest)
        }
    };

    let trainable = |lm: &LoadedModel| lm.vs.variables().into_iter().collect::<Vec<_>>();
    let make_opt = |vars: Vec<(String, Tensor)>, ocfg: OptimConfig| -> Result<AdamW> {
        match &pg {
            Some(pg) => {
                // Rank 0's initial weights everywhere, then a data-parallel optimizer.
                dist::broadcast_named(pg, &vars).map_err(dist_err)?;
                AdamW::distributed(vars, ocfg, pg.clone(), cfg.train.zero1, BUCKET_ELEMS)
            }
            None => AdamW::new(vars, ocfg),
        }
    };
    let opt = make_opt(trainable(&policy), cfg.optim.clone())?;
    let kl = cfg.objective.kl();
    let reference = if cfg.objective.kind.uses_reference(kl) {
        Some(model::load_model(&cfg.model.path, device, dtype)?)
    } else {
        None
    };
    let critic = if cfg.objective.kind == ObjectiveKind::Ppo {
        let mut c = Critic::init(&cfg.model.path, device, dtype, derive_seed(cfg.train.seed, "critic-head", 0))?;
        c.body.model.gradient_checkpointing = cfg.train.gradient_checkpointing;
        let copt = make_opt(c.trainable(), OptimConfig { lr: cfg.critic.lr, ..cfg.optim.clone() })?;
        Some((c, copt))
    } else {
        None
    };
    let mut st = State { policy, opt, reference, critic };

    let mut start = 0;
    if let Some(l) = &latest {
        let loaded = load_checkpoint(&mut st, &ckpts.join(&l.dir), device, dtype, rank);
        match &pg {
            Some(pg) => dist::agree(pg, "loading the checkpoint", loaded).map_err(RlError::Dist)?,
            None => loaded?,
        }
        start = l.step;
        tracing::info!("resuming from {} (step {})", ckpts.join(&l.dir).display(), l.step);
    }
    // A resume rewinds the logs to its checkpoint. The held-out evaluation of step `start` was
    // logged before that checkpoint was written, except at step 0 (no checkpoint): that one runs
    // again, so a killed run's step-0 rows go.
    let eval_bound = if start == 0 { 0 } else { start + 1 };
    let truncated = if lead { metrics.truncate_to(start).and_then(|_| evals.keep_before(eval_bound)) } else { Ok(()) };
    match &pg {
        Some(pg) => dist::agree(pg, "truncating the logs", truncated).map_err(RlError::Dist)?,
        None => truncated?,
    }
    let resumed_from = latest.as_ref().map(|l| l.step);

    let items = task.train_items();
    if items.len() < cfg.rollout.prompts_per_step {
        return Err(RlError::Config(format!(
            "rollout.prompts_per_step = {} but the task has only {} training prompts",
            cfg.rollout.prompts_per_step,
            items.len()
        )));
    }
    // Rollouts and validation generations must fit the context and the memory: check before
    // anything is allocated.
    let shape = model::memory::GenShape::from_config(&st.policy.cfg, st.policy.model.kind().elt_size_in_bytes());
    let max_pos = st.policy.cfg.max_position_embeddings as usize;
    let longest = |it: &[TaskItem]| it.iter().map(|i| i.prompt_ids.len()).max().unwrap_or(0);
    let rows = cfg.rollout.batch.min(cfg.rollout.prompts_per_step * cfg.rollout.n);
    model::generate::preflight(&shape, max_pos, rows, longest(items), cfg.rollout.max_new_tokens, device)?;
    if cfg.eval.every > 0 {
        for (_, set) in task.eval_sets() {
            let rows = cfg.eval.batch.min(set.len() * cfg.eval.n);
            model::generate::preflight(&shape, max_pos, rows, longest(set), cfg.eval.max_new_tokens, device)?;
        }
    }
    let upd = UpdateConfig {
        objective: cfg.objective.clone(),
        mini_batch_size: cfg.mini_batch_size(),
        micro_batch: cfg.train.micro_batch,
        critic: cfg.critic.clone(),
    };
    let r = &cfg.rollout;
    let params = SamplingParams {
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        max_new_tokens: r.max_new_tokens,
        stop_ids: task.stop_ids(),
    };
    if start == 0 && cfg.eval.every > 0 && cfg.eval.before_train {
        run_eval(cfg, task, &st.policy, 0, &evals, pg.as_deref())?;
    }
    let mut last = None;
    let mut final_ckpt = latest.as_ref().map(|l| ckpts.join(&l.dir));
    for step in start + 1..=cfg.train.steps {
        let (idx, epoch, position) =
            step_prompts(items.len(), r.prompts_per_step, cfg.train.seed, cfg.train.shuffle, step);
        let t0 = Instant::now();
        let base_seed = derive_seed(cfg.train.seed, "rollout", step as u64);
        // Each rank samples its contiguous share of the step's prompts (seeds depend on the prompt
        // and sample, not on the rank), then every rank gets the whole batch in prompt order.
        let mine = super::update::owned_rows(&idx, rank, world);
        let step_items: Vec<&TaskItem> = mine.iter().map(|&i| &items[i]).collect();
        let local = rollout::generate(&st.policy.model, task, &step_items, r.n, &params, base_seed, r.batch, r.decode)?;
        let rollouts = match &pg {
            Some(pg) => gather_rollouts(pg, local)?,
            None => local,
        };
        let t_roll = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut learner = Learner {
            policy: &st.policy,
            opt: &mut st.opt,
            reference: st.reference.as_ref(),
            critic: st.critic.as_mut().map(|(c, o)| (&*c, o)),
            pad: task.pad_id(),
            dist: pg.as_deref(),
        };
        let u = update(&mut learner, &rollouts, &upd)?;
        let t_upd = t1.elapsed().as_secs_f64();
        let mut m = step_metrics(step, epoch, &rollouts, &params, u, t_roll, t_upd);
        m.extra = task_metrics(task, &rollouts, &m.update.rollout_token_entropy);
        let logged = if lead { metrics.append(&m) } else { Ok(()) };
        match &pg {
            Some(pg) => dist::agree(pg, "writing the metrics", logged).map_err(RlError::Dist)?,
            None => logged?,
        }
        on_step(&m, cfg.train.steps);
        if cfg.eval.every > 0 && step % cfg.eval.every == 0 {
            run_eval(cfg, task, &st.policy, step, &evals, pg.as_deref())?;
        }
        let every = cfg.checkpoint.every;
        if step == cfg.train.steps || (every > 0 && step % every == 0) {
            final_ckpt = Some(save_checkpoint(&st, &ckpts, step, epoch, position, cfg.checkpoint.keep, pg.as_deref())?);
            if lead {
                metrics.write_parquet()?;
                evals.write_parquet()?;
            }
        }
        last = Some(m);
    }
    if lead {
        metrics.write_parquet()?;
        evals.write_parquet()?;
    }
    Ok(TrainSummary {
        run_dir: run_dir.to_path_buf(),
        steps_done: cfg.train.steps,
        resumed_from,
        final_checkpoint: final_ckpt,
        last,
    })
}

fn step_metrics(
    step: usize,
    epoch: usize,
    rollouts: &[Rollout],
    params: &SamplingParams,
    update: super::update::UpdateStats,
    t_roll: f64,
    t_upd: f64,
) -> StepMetrics {
    let mut groups: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in rollouts {
        let g = groups.entry(&r.group).or_default();
        g.0 += 1;
        g.1 += r.correct() as usize;
    }
    let n = rollouts.len().max(1) as f64;
    let gen_tokens: usize = rollouts.iter().map(|r| r.response_ids.len()).sum();
    let all_tokens: usize = rollouts.iter().map(|r| r.response_ids.len() + r.prompt_ids.len()).sum();
    let truncated = rollouts
        .iter()
        .filter(|r| {
            r.response_ids.len() >= params.max_new_tokens
                && !params.stop_ids.contains(r.response_ids.last().unwrap_or(&-1))
        })
        .count();
    StepMetrics {
        step,
        epoch,
        prompts: groups.len(),
        correct_ratio: rollouts.iter().filter(|r| r.correct()).count() as f64 / n,
        fully_solved_ratio: groups.values().filter(|(t, c)| c == t).count() as f64 / groups.len().max(1) as f64,
        fully_unsolved_ratio: groups.values().filter(|(_, c)| *c == 0).count() as f64 / groups.len().max(1) as f64,
        response_length_mean: gen_tokens as f64 / n,
        response_length_max: rollouts.iter().map(|r| r.response_ids.len()).max().unwrap_or(0),
        truncated_ratio: truncated as f64 / n,
        update,
        time_rollout_s: t_roll,
        time_rollout_tokens_per_s: gen_tokens as f64 / t_roll.max(1e-9),
        time_update_s: t_upd,
        time_update_tokens_per_s: all_tokens as f64 / t_upd.max(1e-9),
        extra: Default::default(),
    }
}

/// The task's own metrics plus the rollout entropy split by the task's position classes
/// (`entropy_<class>`: mean over the tokens of that class).
fn task_metrics(task: &dyn Task, rollouts: &[Rollout], entropy: &[Vec<f32>]) -> BTreeMap<String, f64> {
    let mut out = task.rollout_metrics(rollouts);
    let mut sums: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    for (r, ent) in rollouts.iter().zip(entropy) {
        for (t, &e) in ent.iter().enumerate() {
            if let Some(class) = task.position_class(&r.response_ids, t) {
                let s = sums.entry(class).or_default();
                s.0 += e as f64;
                s.1 += 1;
            }
        }
    }
    for (class, (s, n)) in sums {
        out.insert(format!("entropy_{class}"), s / n.max(1) as f64);
    }
    out
}

/// Validation generations on every held-out set: accuracy and mean token entropy.
/// Held-out accuracy and entropy; data-parallel ranks evaluate contiguous shares of each set and
/// the sums are all-reduced (rank 0 logs).
fn run_eval(
    cfg: &TrainConfig,
    task: &dyn Task,
    policy: &LoadedModel,
    step: usize,
    log: &Log,
    pg: Option<&ProcessGroup>,
) -> Result<()> {
    let e = &cfg.eval;
    let params = SamplingParams {
        temperature: e.temperature,
        top_p: e.top_p,
        top_k: e.top_k,
        max_new_tokens: e.max_new_tokens,
        stop_ids: task.stop_ids(),
    };
    for (name, items) in task.eval_sets() {
        if items.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        let (rank, world) = pg.map_or((0, 1), |p| (p.rank(), p.world()));
        let all: Vec<usize> = (0..items.len()).collect();
        let refs: Vec<&TaskItem> = super::update::owned_rows(&all, rank, world).iter().map(|&i| &items[i]).collect();
        let seed = derive_seed(cfg.train.seed, "eval", step as u64);
        let rollouts = if refs.is_empty() {
            vec![]
        } else {
            rollout::generate(&policy.model, task, &refs, e.n, &params, seed, e.batch, cfg.rollout.decode)?
        };
        let rows: Vec<&Rollout> = rollouts.iter().collect();
        let ent = if rows.is_empty() {
            vec![]
        } else {
            token_stats(&policy.model, &rows, cfg.train.micro_batch, task.pad_id())?.1
        };
        let mut off = 0;
        // [samples, correct, Σ per-sequence mean entropy, Σ response length]
        let mut sums = [rollouts.len() as f64, rollouts.iter().filter(|r| r.correct()).count() as f64, 0.0, 0.0];
        for r in &rollouts {
            let n = r.response_ids.len();
            sums[2] += ent[off..off + n].iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64;
            sums[3] += n as f64;
            off += n;
        }
        if let Some(pg) = pg {
            pg.all_reduce_f64(&mut sums, crate::dist::ReduceOp::Sum).map_err(dist_err)?;
        }
        let samples = sums[0].max(1.0);
        let m = EvalMetrics {
            step,
            dataset: name.clone(),
            problems: items.len(),
            samples: sums[0] as usize,
            accuracy: sums[1] / samples,
            entropy: sums[2] / samples,
            response_length_mean: sums[3] / samples,
            time_s: t0.elapsed().as_secs_f64(),
        };
        let logged = if rank == 0 {
            tracing::info!("eval step {step} {name}: accuracy {:.4}, entropy {:.4}", m.accuracy, m.entropy);
            log.append(&m)
        } else {
            Ok(())
        };
        match pg {
            Some(pg) => crate::dist::agree(pg, "writing the held-out metrics", logged).map_err(RlError::Dist)?,
            None => logged?,
        }
    }
    Ok(())
}

/// The policy folder of a training run's newest complete checkpoint
/// (`<run>/checkpoints/<latest.dir>/policy`), or `None` when the run has no checkpoint yet.
pub fn latest_policy(run: &Path) -> Result<Option<PathBuf>> {
    let ckpts = run.join("checkpoints");
    Ok(read_latest(&ckpts)?.map(|l| ckpts.join(l.dir).join("policy")))
}

/// Every rank's rollouts, concatenated in rank order (the single-process order: ranks hold
/// contiguous shares of the step's prompts).
fn gather_rollouts(pg: &ProcessGroup, local: Vec<Rollout>) -> Result<Vec<Rollout>> {
    let bytes = serde_json::to_vec(&local).map_err(|e| RlError::Dist(format!("serializing rollouts: {e}")))?;
    let mut all = vec![];
    for (r, b) in pg.all_gather_bytes(&bytes).map_err(dist_err)?.into_iter().enumerate() {
        let mut part: Vec<Rollout> =
            serde_json::from_slice(&b).map_err(|e| RlError::Dist(format!("rank {r}'s rollouts: {e}")))?;
        all.append(&mut part);
    }
    Ok(all)
}

fn dist_err(e: crate::dist::DistError) -> RlError {
    RlError::Dist(e.to_string())
}

fn read_latest(ckpts: &Path) -> Result<Option<Latest>> {
    let path = ckpts.join(LATEST);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            serde_json::from_str(&t).map(Some).map_err(|e| RlError::Checkpoint(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn write_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<String> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(tch::Device::Cpu))).collect();
    Tensor::write_safetensors(&cpu, path).map_err(|e| RlError::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok(crate::fingerprint::digest_file(path)?.sha256)
}

fn read_tensors(path: &Path, sha: &str) -> Result<Vec<(String, Tensor)>> {
    let got = crate::fingerprint::digest_file(path)?.sha256;
    if got != sha {
        return Err(RlError::Checkpoint(format!(
            "{} does not match the sha256 in state.json: the checkpoint changed after it was written",
            path.display()
        )));
    }
    Tensor::read_safetensors(path).map_err(|e| RlError::Checkpoint(format!("{}: {e}", path.display())))
}

/// Writes `checkpoints/step-NNNNNN/` whole (staging folder, then swapped in), then points
/// `latest.json` at it, then prunes to the newest `keep`.
///
/// Data parallel: the weights (equal on every rank) are written by rank 0. With ZeRO-1 every rank
/// first writes its optimizer shard into `checkpoints/.shards-step-NNNNNN/`; once every rank
/// reports success rank 0 moves them into the staging folder and records their sha256s, and no
/// rank runs ahead of a checkpoint that is not in place (an I/O error anywhere stops every rank).
fn save_checkpoint(
    st: &State,
    ckpts: &Path,
    step: usize,
    epoch: usize,
    position: usize,
    keep: usize,
    pg: Option<&ProcessGroup>,
) -> Result<PathBuf> {
    let name = format!("step-{step:06}");
    let shards_dir = ckpts.join(format!(".shards-{name}"));
    let rank = pg.map_or(0, |p| p.rank());
    let shard = || -> Result<()> {
        if st.opt.is_sharded() && rank != 0 {
            std::fs::create_dir_all(&shards_dir).map_err(io_err(&shards_dir))?;
            write_tensors(&st.opt.state(), &shards_dir.join(shard_file("optimizer", rank)))?;
            if let Some((_, copt)) = &st.critic {
                write_tensors(&copt.state(), &shards_dir.join(shard_file("critic_optimizer", rank)))?;
            }
        }
        Ok(())
    };
    let Some(pg) = pg else { return write_checkpoint(st, ckpts, step, epoch, position, keep, 1) };
    dist::agree(pg, "writing the optimizer shards", shard()).map_err(RlError::Dist)?;
    let res = if rank == 0 {
        write_checkpoint(st, ckpts, step, epoch, position, keep, pg.world())
    } else {
        Ok(ckpts.join(&name))
    };
    dist::agree(pg, "writing the checkpoint", res).map_err(RlError::Dist)
}

/// Rank 0's part of [`save_checkpoint`] (all of it in a single process).
fn write_checkpoint(
    st: &State,
    ckpts: &Path,
    step: usize,
    epoch: usize,
    position: usize,
    keep: usize,
    world: usize,
) -> Result<PathBuf> {
    let name = format!("step-{step:06}");
    let dir = ckpts.join(&name);
    let shards_dir = ckpts.join(format!(".shards-{name}"));
    let sharded = st.opt.is_sharded();
    let stage = crate::durable::staging_dir(&dir).map_err(io_err(&dir))?;
    let fp = st.policy.save(&stage.join("policy"), &Default::default())?;
    // Rank 0's own shard, then the others' moved in; their sha256s in rank order.
    let collect = |stem: &str, own: Vec<(String, Tensor)>| -> Result<(String, Vec<String>)> {
        if !sharded {
            let file = if stem == "optimizer" { OPT_FILE } else { CRITIC_OPT_FILE };
            return Ok((write_tensors(&own, &stage.join(file))?, vec![]));
        }
        let mut shas = vec![write_tensors(&own, &stage.join(shard_file(stem, 0)))?];
        for r in 1..world {
            let (src, dst) = (shards_dir.join(shard_file(stem, r)), stage.join(shard_file(stem, r)));
            std::fs::rename(&src, &dst).map_err(io_err(&src))?;
            shas.push(crate::fingerprint::digest_file(&dst)?.sha256);
        }
        Ok((shas[0].clone(), shas))
    };
    let (optimizer_sha256, optimizer_shards) = collect("optimizer", st.opt.state())?;
    let (critic_optimizer_sha256, critic_optimizer_shards) = match &st.critic {
        Some((c, copt)) => {
            c.save(&stage.join("critic"))?;
            let (sha, shards) = collect("critic_optimizer", copt.state())?;
            (Some(sha), shards)
        }
        None => (None, vec![]),
    };
    let state = CheckpointState {
        step,
        epoch,
        position,
        policy_fingerprint: fp.sha256,
        optimizer_sha256,
        critic_optimizer_sha256,
        optimizer_shards,
        critic_optimizer_shards,
    };
    let spath = stage.join(STATE_FILE);
    std::fs::write(&spath, serde_json::to_string_pretty(&state).expect("serializable")).map_err(io_err(&spath))?;
    crate::durable::replace_dir(&stage, &dir).map_err(io_err(&dir))?;
    let latest = Latest { step, dir: name.clone() };
    let lpath = ckpts.join(LATEST);
    crate::durable::write(&lpath, serde_json::to_string_pretty(&latest).expect("serializable").as_bytes())
        .map_err(io_err(&lpath))?;
    if keep > 0 {
        let mut steps: Vec<String> = std::fs::read_dir(ckpts)
            .map_err(io_err(ckpts))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("step-") && *n != name)
            .collect();
        steps.sort();
        let excess = (steps.len() + 1).saturating_sub(keep);
        for old in steps.iter().take(excess) {
            std::fs::remove_dir_all(ckpts.join(old)).map_err(io_err(&ckpts.join(old)))?;
        }
    }
    if shards_dir.exists() {
        std::fs::remove_dir_all(&shards_dir).map_err(io_err(&shards_dir))?;
    }
    Ok(dir)
}

fn load_checkpoint(st: &mut State, dir: &Path, device: tch::Device, dtype: DType, rank: usize) -> Result<()> {
    let spath = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&spath).map_err(io_err(&spath))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| RlError::Checkpoint(format!("{}: {e}", spath.display())))?;
    let pdir = dir.join("policy");
    let fp = crate::fingerprint::verify(&pdir, &[], Some("checkpoint"))?;
    if fp.sha256 != state.policy_fingerprint {
        return Err(RlError::Checkpoint(format!(
            "{}: the policy's fingerprint differs from state.json",
            pdir.display()
        )));
    }
    let weights = model::checkpoint::WeightFiles::open(&pdir)?;
    model::checkpoint::load_weights(&st.policy.vs, &weights)?;
    // The optimizer state: one file, or (ZeRO-1) this rank's shard.
    let sharded = st.opt.is_sharded();
    let opt_file = |stem: &str, file: &str, single: Option<&str>, shards: &[String]| -> Result<(PathBuf, String)> {
        if sharded {
            let sha = shards.get(rank).ok_or_else(|| {
                RlError::Checkpoint(format!(
                    "{}: no {stem} shard for rank {rank} ({} shards): resume with train.zero1 and the same world size",
                    spath.display(),
                    shards.len()
                ))
            })?;
            Ok((dir.join(shard_file(stem, rank)), sha.clone()))
        } else {
            if !shards.is_empty() {
                return Err(RlError::Checkpoint(format!(
                    "{}: the optimizer state is sharded (ZeRO-1, {} ranks): resume with train.zero1 and the same world size",
                    spath.display(),
                    shards.len()
                )));
            }
            let sha = single.ok_or_else(|| RlError::Checkpoint(format!("{}: no {stem} state", spath.display())))?;
            Ok((dir.join(file), sha.to_string()))
        }
    };
    let (f, sha) = opt_file("optimizer", OPT_FILE, Some(&state.optimizer_sha256), &state.optimizer_shards)?;
    st.opt.load_state(read_tensors(&f, &sha)?)?;
    if st.critic.is_some() {
        let (f, sha) = opt_file(
            "critic_optimizer",
            CRITIC_OPT_FILE,
            state.critic_optimizer_sha256.as_deref(),
            &state.critic_optimizer_shards,
        )?;
        let (critic, copt) = st.critic.as_mut().expect("checked");
        // Copy the saved critic into this one (its optimizer holds this one's tensors; the
        // gradient-checkpointing switch stays as configured).
        let saved = Critic::load(&dir.join("critic"), device, dtype)?;
        let saved: std::collections::HashMap<String, Tensor> = saved.trainable().into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (n, mut t) in critic.trainable() {
                let src = saved.get(&n).ok_or_else(|| RlError::Checkpoint(format!("critic checkpoint lacks {n}")))?;
                t.f_copy_(src)?;
            }
            Ok(())
        })?;
        copt.load_state(read_tensors(&f, &sha)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_seeded_epoch_permutations_with_drop_last() {
        // 10 prompts, 3 per step: 3 steps per epoch, one prompt left out each epoch.
        let steps: Vec<Vec<usize>> = (1..=6).map(|s| step_prompts(10, 3, 7, true, s).0).collect();
        for epoch in steps.chunks(3) {
            let mut seen: Vec<usize> = epoch.iter().flatten().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 9, "no prompt twice within an epoch: {epoch:?}");
        }
        assert_ne!(steps[0..3], steps[3..6], "each epoch has its own permutation");
        assert_eq!(
            step_prompts(10, 3, 7, true, 5),
            step_prompts(10, 3, 7, true, 5),
            "a step's prompts depend only on (seed, step)"
        );
        assert_eq!(step_prompts(10, 3, 7, false, 2).0, vec![3, 4, 5]);
        assert_eq!((step_prompts(10, 3, 7, true, 4).1, step_prompts(10, 3, 7, true, 4).2), (1, 3));
        assert_ne!(derive_seed(0, "rollout", 1), derive_seed(0, "eval", 1));
    }
}
