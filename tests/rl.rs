//! The RL trainer (`src/rl/`): objectives through the real model code, `train-step`, `train` with
//! every objective on a toy task, kill -9 resume, the gradient analysis and the paper presets.

mod common;

use rlvr_decomp::model::{self, DType, LoadedModel};
use rlvr_decomp::rl::logprob::{logp_and_entropy, pack, response_hidden, token_stats};
use rlvr_decomp::rl::loss::{backward_micro_batch, LossCoefs, TokenInputs};
use rlvr_decomp::rl::objective::{sequence_advantages, SampleOutcome};
use rlvr_decomp::rl::optim::AdamW;
use rlvr_decomp::rl::task::{Task, TaskItem};
use rlvr_decomp::rl::update::{update, CriticConfig, Learner, UpdateConfig};
use rlvr_decomp::rl::{LossNorm, ObjectiveConfig, ObjectiveKind, OptimConfig, Rollout, TrainConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tch::{Device, Kind, Tensor};

fn tiny_cfg(vocab: i64) -> serde_json::Value {
    tiny_cfg_of("qwen3", vocab)
}

/// A tiny config of `arch` ("qwen3" or "llama"; the shapes are the same).
fn tiny_cfg_of(arch: &str, vocab: i64) -> serde_json::Value {
    let name = if arch == "llama" { "LlamaForCausalLM" } else { "Qwen3ForCausalLM" };
    serde_json::json!({
        "architectures": [name], "model_type": arch,
        "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 256, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 0, "torch_dtype": "float32"
    })
}

fn tiny_model(dir: &Path, vocab: i64, seed: i64) -> LoadedModel {
    common::save_random_hf_model(dir, &tiny_cfg(vocab), seed);
    model::load_model(dir, Device::Cpu, DType::F32).unwrap()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr-decomp"))
}

fn grads(lm: &LoadedModel) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        lm.vs.variables().into_iter().map(|(n, t)| (n, t.grad().detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn zero_grads(lm: &LoadedModel) {
    for (_, mut t) in lm.vs.variables() {
        t.zero_grad();
    }
}

fn max_rel_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let mut worst = 0.0f64;
    for ((n, x), (_, y)) in a.iter().zip(b) {
        let scale = x.abs().max().double_value(&[]).max(y.abs().max().double_value(&[])).max(1e-30);
        let d = (x - y).abs().max().double_value(&[]) / scale;
        assert!(d.is_finite(), "{n}");
        worst = worst.max(d);
    }
    worst
}

/// For 0/1 rewards E_y[∇PSR] = E_y[∇NSR] exactly: Σ_correct π ∇log π = ∇P(correct) = −∇P(incorrect).
/// Enumerating every response of a tiny model (vocab 6, length 2) in f64 checks the sign and the
/// filtering of both objectives through the real packing and log-prob code.
#[test]
fn exact_expectation_psr_equals_nsr_in_f64() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lm = tiny_model(tmp.path(), 6, 3);
    lm.vs.set_kind(Kind::Double);
    let prompt = vec![1i64, 4, 2];
    let responses: Vec<Vec<i64>> = (0..6).flat_map(|a| (0..6).map(move |b| vec![a, b])).collect();
    let rollouts: Vec<Rollout> = responses
        .iter()
        .map(|r| Rollout {
            group: "g".into(),
            prompt_ids: prompt.clone(),
            response_ids: r.clone(),
            reward: ((r[0] + 2 * r[1]) % 3 == 0) as u8 as f32,
        })
        .collect();
    let rows: Vec<&Rollout> = rollouts.iter().collect();
    let outcomes: Vec<SampleOutcome> =
        rollouts.iter().map(|r| SampleOutcome { group: r.group.clone(), reward: r.reward }).collect();
    let mut expected = vec![];
    for kind in [ObjectiveKind::Psr, ObjectiveKind::Nsr] {
        let adv = sequence_advantages(&ObjectiveConfig::paper(kind), &outcomes);
        zero_grads(&lm);
        let p = pack(&rows, 0, Device::Cpu);
        let h = response_hidden(&lm.model, &p).unwrap(); // [N, C]
        let (logp, _) = logp_and_entropy(&lm.model.lm_head(&h), &p.targets); // [N] f64
        let seq_logp = logp.view([36, 2]).sum_dim_intlist(-1, false, Kind::Double); // [36]
        let pi = seq_logp.exp().detach();
        let total_mass = pi.sum(Kind::Double).double_value(&[]);
        assert!((total_mass - 1.0).abs() < 1e-12, "the enumerated responses must cover the output space: {total_mass}");
        let a: Vec<f64> = adv.iter().map(|x| x.unwrap_or(0.0) as f64).collect();
        let loss = -(pi * Tensor::from_slice(&a) * seq_logp).sum(Kind::Double);
        loss.backward();
        expected.push(grads(&lm));
    }
    let correct = rollouts.iter().filter(|r| r.correct()).count();
    assert!(correct > 0 && correct < 36);
    let gnorm: f64 =
        expected[0].iter().map(|(_, g)| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt();
    assert!(gnorm > 1e-3, "the expected gradient must not vanish ({gnorm})");
    let mut worst = 0.0f64;
    for ((n, x), (_, y)) in expected[0].iter().zip(&expected[1]) {
        let d = (x - y).abs().max().double_value(&[]);
        assert!(d < 1e-10, "{n}: E[∇PSR] and E[∇NSR] differ by {d}");
        worst = worst.max(d);
    }
    eprintln!("E[∇PSR] vs E[∇NSR]: max |Δ| = {worst:.2e} (|∇| = {gnorm:.3e})");
}

/// At ratio 1 the clipped surrogate's gradient is the policy gradient −A·∇log π: W-REINFORCE with
/// λ = 1 is REINFORCE. Checked against a plain [B, T, V] autograd of the REINFORCE loss, with the
/// chunked head backward cut into chunks of 3 rows and 2 micro-batches.
#[test]
fn w_reinforce_lambda_one_is_reinforce_and_chunked_backward_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = tiny_model(tmp.path(), 12, 5);
    let rollouts = vec![
        Rollout { group: "a".into(), prompt_ids: vec![1, 2, 3], response_ids: vec![4, 5, 6, 7], reward: 1.0 },
        Rollout { group: "a".into(), prompt_ids: vec![1, 2, 3], response_ids: vec![8, 9], reward: 0.0 },
        Rollout { group: "b".into(), prompt_ids: vec![1, 10], response_ids: vec![11, 3, 2], reward: 0.0 },
    ];
    let rows: Vec<&Rollout> = rollouts.iter().collect();
    let (old, _) = token_stats(&lm.model, &rows, 8, 0).unwrap();
    let w = ObjectiveConfig { lambda: 1.0, ..ObjectiveConfig::paper(ObjectiveKind::WReinforce) };
    let outcomes: Vec<SampleOutcome> =
        rollouts.iter().map(|r| SampleOutcome { group: r.group.clone(), reward: r.reward }).collect();
    let seq: Vec<f32> = sequence_advantages(&w, &outcomes).into_iter().map(Option::unwrap).collect();
    assert_eq!(seq, vec![1.0, -1.0, -1.0], "λ = 1: A = 2r − 1");
    let adv: Vec<f32> = rollouts.iter().zip(&seq).flat_map(|(r, &a)| vec![a; r.response_ids.len()]).collect();
    let n_s = adv.len() as f64;
    let coefs = LossCoefs { clip_eps: 0.2, entropy_coef: 0.0, kl_coef: 0.0 };
    zero_grads(&lm);
    // Two micro-batches: rows [0, 1] and [2]; chunks of 3 head rows.
    let split = rollouts[0].response_ids.len() + rollouts[1].response_ids.len();
    for (mb, range) in [(&rows[..2], 0..split), (&rows[2..], split..adv.len())] {
        let inputs = TokenInputs { old_logp: &old[range.clone()], advantages: &adv[range], ref_logp: None };
        backward_micro_batch(&lm.model, mb, &inputs, &coefs, n_s, 0, 3).unwrap();
    }
    let ours = grads(&lm);
    zero_grads(&lm);
    // REINFORCE: L = −(1/N) Σ_i Σ_t A_i log π(y_it), on full [1, T, V] logits per row.
    let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (r, &a) in rollouts.iter().zip(&seq) {
        let ids: Vec<i64> = r.prompt_ids.iter().chain(&r.response_ids).copied().collect();
        let t = ids.len() as i64;
        let logits = lm.model.forward(&Tensor::from_slice(&ids).view([1, t]), None, None).unwrap(); // [1, T, V]
        let p = r.prompt_ids.len() as i64;
        let n = r.response_ids.len() as i64;
        let lp = logits.narrow(1, p - 1, n).log_softmax(-1, Kind::Float); // [1, n, V]
        let y = Tensor::from_slice(&r.response_ids).view([1, n, 1]);
        loss = loss - lp.gather(-1, &y, false).sum(Kind::Float) * (a as f64 / n_s);
    }
    loss.backward();
    let reference = grads(&lm);
    let d = max_rel_diff(&ours, &reference);
    eprintln!("chunked surrogate vs plain REINFORCE gradient: max relative difference {d:.2e}");
    assert!(d < 1e-5, "{d}");
}

fn learner_update(
    lm: &LoadedModel,
    rollouts: &[Rollout],
    obj: ObjectiveConfig,
    lr: f64,
) -> rlvr_decomp::rl::update::UpdateStats {
    let mut opt =
        AdamW::new(lm.vs.variables().into_iter().collect(), OptimConfig { lr, ..Default::default() }).unwrap();
    let mut learner = Learner { policy: lm, opt: &mut opt, reference: None, critic: None, pad: 0, dist: None };
    let cfg = UpdateConfig {
        objective: obj,
        mini_batch_size: rollouts.len(),
        micro_batch: 2,
        critic: CriticConfig::default(),
    };
    update(&mut learner, rollouts, &cfg).unwrap()
}

#[test]
fn psr_nsr_filtering_and_both_loss_norms() {
    let tmp = tempfile::tempdir().unwrap();
    let rollouts = vec![
        Rollout { group: "a".into(), prompt_ids: vec![1, 2], response_ids: vec![4, 5, 6], reward: 1.0 },
        Rollout { group: "a".into(), prompt_ids: vec![1, 2], response_ids: vec![7], reward: 0.0 },
        Rollout { group: "b".into(), prompt_ids: vec![1, 3], response_ids: vec![8, 9], reward: 0.0 },
        Rollout { group: "b".into(), prompt_ids: vec![1, 3], response_ids: vec![10, 11, 2, 3], reward: 1.0 },
    ];
    let all_tokens = 10;
    for (kind, kept, kept_tokens, pg) in [(ObjectiveKind::Psr, 2, 7, -1.0), (ObjectiveKind::Nsr, 2, 3, 1.0)] {
        let lm = tiny_model(&tmp.path().join(format!("{kind}")), 12, 7);
        let s = learner_update(&lm, &rollouts, ObjectiveConfig::paper(kind), 1e-3);
        assert_eq!((s.kept_samples, s.kept_tokens, s.optimizer_steps), (kept, kept_tokens, 1), "{kind}");
        assert!(
            (s.pg_loss - pg).abs() < 1e-6,
            "{kind}: at ratio 1 the surrogate is −A on every kept token: {}",
            s.pg_loss
        );
        assert_eq!(s.max_abs_log_ratio, 0.0, "old log-probs come from the same micro-batches: ratio exactly 1");
        let lm = tiny_model(&tmp.path().join(format!("{kind}-all")), 12, 7);
        let obj = ObjectiveConfig { loss_norm: LossNorm::AllTokens, ..ObjectiveConfig::paper(kind) };
        let s = learner_update(&lm, &rollouts, obj, 1e-3);
        assert_eq!((s.kept_samples, s.kept_tokens), (4, all_tokens), "{kind}: all-tokens keeps every sample in S");
        let want = pg * kept_tokens as f64 / all_tokens as f64;
        assert!(
            (s.pg_loss - want).abs() < 1e-6,
            "{kind}: the step shrinks with the filtered share: {} vs {want}",
            s.pg_loss
        );
    }
}

fn write_rollouts(path: &Path, rollouts: &[Rollout]) {
    let text: String = rollouts.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn mean_logp(lm: &LoadedModel, rows: &[&Rollout]) -> f64 {
    let (lp, _) = token_stats(&lm.model, rows, 8, 0).unwrap();
    lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64
}

#[test]
fn train_step_psr_raises_correct_and_nsr_lowers_incorrect() {
    for arch in ["qwen3", "llama"] {
        train_step_on(arch);
    }
}

fn train_step_on(arch: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    common::save_random_hf_model(&base, &tiny_cfg_of(arch, 32), 11);
    let lm = model::load_model(&base, Device::Cpu, DType::F32).unwrap();
    let rollouts = vec![
        Rollout { group: "g0".into(), prompt_ids: vec![1, 5, 9], response_ids: vec![7, 8, 2], reward: 1.0 },
        Rollout { group: "g0".into(), prompt_ids: vec![1, 5, 9], response_ids: vec![7, 11, 12, 3], reward: 0.0 },
        Rollout { group: "g1".into(), prompt_ids: vec![1, 6], response_ids: vec![20, 2], reward: 0.0 },
        Rollout { group: "g1".into(), prompt_ids: vec![1, 6], response_ids: vec![21, 22, 23, 2], reward: 1.0 },
    ];
    let file = tmp.path().join("rollouts.jsonl");
    write_rollouts(&file, &rollouts);
    let correct: Vec<&Rollout> = rollouts.iter().filter(|r| r.correct()).collect();
    let incorrect: Vec<&Rollout> = rollouts.iter().filter(|r| !r.correct()).collect();
    let (c0, i0) = (mean_logp(&lm, &correct), mean_logp(&lm, &incorrect));
    for kind in ObjectiveKind::ALL {
        let cfg = tmp.path().join(format!("{kind}.toml"));
        std::fs::write(&cfg, format!("[objective]\nkind = \"{kind}\"\n[optim]\nlr = 1e-3\n")).unwrap();
        let out = tmp.path().join(format!("out-{kind}"));
        let o = bin()
            .args(["train-step", "--model"])
            .arg(&base)
            .arg("--rollouts")
            .arg(&file)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{arch} {kind}: {}", String::from_utf8_lossy(&o.stderr));
        let step: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("step.json")).unwrap()).unwrap();
        for key in ["loss", "pg_loss", "entropy", "kl", "grad_norm", "kept_samples", "kept_tokens", "clip_frac"] {
            assert!(step[key].is_number(), "{kind}: step.json lacks {key}: {step}");
        }
        assert!(step["grad_norm"].as_f64().unwrap() > 0.0);
        assert_eq!(step["clip_frac"], 0.0, "{kind}: on-policy, one mini-batch: nothing is clipped");
        let after = model::load_model(&out, Device::Cpu, DType::F32).unwrap();
        let (c1, i1) = (mean_logp(&after, &correct), mean_logp(&after, &incorrect));
        eprintln!("{arch} {kind}: correct log-prob {c0:.4} → {c1:.4}, incorrect {i0:.4} → {i1:.4}");
        match kind {
            ObjectiveKind::Psr => {
                assert_eq!(step["kept_samples"], 2);
                assert!(c1 > c0, "PSR must raise the log-prob of its correct responses");
            }
            ObjectiveKind::Nsr => {
                assert_eq!(step["kept_samples"], 2);
                assert!(i1 < i0, "NSR must lower the log-prob of its incorrect responses");
            }
            _ => assert_eq!(step["kept_samples"], 4),
        }
    }
}

/// A toy verifiable task: the prompt is [1, a]; a response is correct when it starts with a.
struct EchoTask {
    items: Vec<TaskItem>,
    evals: Vec<(String, Vec<TaskItem>)>,
}

impl EchoTask {
    fn new() -> EchoTask {
        let item = |a: i64| TaskItem {
            id: format!("echo/{a}"),
            seed_id: a as u64,
            prompt_ids: vec![1, a],
            gold: a.to_string(),
        };
        EchoTask { items: (2..8).map(item).collect(), evals: vec![("echo".into(), (2..8).map(item).collect())] }
    }
}

impl Task for EchoTask {
    fn train_items(&self) -> &[TaskItem] {
        &self.items
    }
    fn eval_sets(&self) -> &[(String, Vec<TaskItem>)] {
        &self.evals
    }
    fn reward(&self, item: &TaskItem, response: &[i64]) -> rlvr_decomp::rl::Result<f32> {
        Ok((response.first() == item.prompt_ids.last()) as u8 as f32)
    }
    fn stop_ids(&self) -> Vec<i64> {
        vec![]
    }
    fn pad_id(&self) -> i64 {
        0
    }
    fn decode(&self, ids: &[i64]) -> rlvr_decomp::rl::Result<String> {
        Ok(format!("{ids:?}"))
    }
    fn fingerprint(&self) -> String {
        "echo-v1".into()
    }
}

/// Mean probability of the correct first token over every echo prompt (the expected reward).
fn echo_logp(dir: &Path) -> f64 {
    let lm = model::load_model(dir, Device::Cpu, DType::F32).unwrap();
    let rollouts: Vec<Rollout> = (2..8)
        .map(|a| Rollout { group: "e".into(), prompt_ids: vec![1, a], response_ids: vec![a], reward: 1.0 })
        .collect();
    let rows: Vec<&Rollout> = rollouts.iter().collect();
    let (lp, _) = token_stats(&lm.model, &rows, 8, 0).unwrap();
    lp.iter().map(|&x| (x as f64).exp()).sum::<f64>() / lp.len() as f64
}

fn toy_config(model: &Path, kind: ObjectiveKind, steps: usize) -> TrainConfig {
    let text = format!(
        r#"
[model]
path = "{}"
threads = 1
[task]
kind = "math"
template = "qwen3"
[rollout]
prompts_per_step = 4
n = 8
max_new_tokens = 2
batch = 32
[objective]
kind = "{kind}"
[optim]
lr = 5e-3
[critic]
lr = 5e-3
[train]
steps = {steps}
mini_batches = 2
micro_batch = 4
[eval]
every = 3
max_new_tokens = 2
[checkpoint]
every = 2
"#,
        model.display()
    );
    TrainConfig::from_toml(&text, &[]).unwrap()
}

#[test]
fn every_objective_trains_on_a_toy_task() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model(&base, 8, 1);
    let task = EchoTask::new();
    let mut learned = vec![];
    for kind in ObjectiveKind::ALL {
        let cfg = toy_config(&base, kind, 9);
        let run = tmp.path().join(format!("run-{kind}"));
        let mut seen = vec![];
        let s = rlvr_decomp::rl::trainer::train(&cfg, &run, &task, false, &mut |m, _| seen.push(m.clone())).unwrap();
        assert_eq!(seen.len(), 9);
        let first = seen[..3].iter().map(|m| m.correct_ratio).sum::<f64>() / 3.0;
        let last = seen[6..].iter().map(|m| m.correct_ratio).sum::<f64>() / 3.0;
        eprintln!(
            "{kind}: correct ratio {first:.3} → {last:.3}; per step {:?}; optimizer steps {:?}",
            seen.iter().map(|m| m.correct_ratio).collect::<Vec<_>>(),
            seen.iter().map(|m| m.update.optimizer_steps).collect::<Vec<_>>()
        );
        for m in &seen {
            assert!((0.0..=1.0).contains(&m.correct_ratio) && m.update.grad_norm.is_finite());
            assert!(m.update.optimizer_steps <= 2);
            if kind == ObjectiveKind::Ppo {
                assert!(m.update.value_loss.is_some());
            }
        }
        let ckpt = s.final_checkpoint.unwrap();
        assert!(ckpt.join("policy/model.safetensors").is_file() && ckpt.join("optimizer.safetensors").is_file());
        assert_eq!(kind == ObjectiveKind::Ppo, ckpt.join("critic").is_dir());
        for f in [
            "metrics.jsonl",
            "metrics.parquet",
            "eval_metrics.jsonl",
            "eval_metrics.parquet",
            "config.toml",
            "settings.json",
        ] {
            assert!(run.join(f).is_file(), "{kind}: {f} missing");
        }
        let evals = std::fs::read_to_string(run.join("eval_metrics.jsonl")).unwrap();
        assert_eq!(evals.lines().count(), 4, "eval before training and after steps 3, 6 and 9");
        // The signal without sampling noise: log π(a | [1, a]) over every prompt, before and after.
        let before = echo_logp(&base);
        let after = echo_logp(&ckpt.join("policy"));
        eprintln!("{kind}: expected reward over all prompts {before:.4} → {after:.4}");
        learned.push((kind, before, after));
        // A second `train` without --resume on the same folder is refused.
        let e = rlvr_decomp::rl::trainer::train(&cfg, &run, &task, false, &mut |_, _| {}).err().unwrap().to_string();
        assert!(e.contains("--resume"), "{e}");
    }
    for (kind, before, after) in learned {
        assert!(after > before + 0.05, "{kind} should learn to echo: {before} → {after}");
    }
}

/// `rollout.decode = "static"` (fixed-shape decode step, tokens drawn on the device) trains exactly
/// like the default dynamic loop: same rollouts (sampled and greedy held-out), so the same metrics
/// and the same final weights, bit for bit.
#[test]
fn rollouts_with_the_static_decode_step_train_identically() {
    use rlvr_decomp::model::static_decode::TchDecode;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model(&base, 8, 1);
    let task = EchoTask::new();
    let mut runs = vec![];
    for decode in [TchDecode::Dynamic, TchDecode::Static] {
        let mut cfg = toy_config(&base, ObjectiveKind::Grpo, 4);
        cfg.rollout.decode = decode;
        cfg.rollout.max_new_tokens = 5;
        let run = tmp.path().join(format!("run-{decode:?}"));
        let mut seen = vec![];
        let s = rlvr_decomp::rl::trainer::train(&cfg, &run, &task, false, &mut |m, _| seen.push(m.clone())).unwrap();
        let weights = std::fs::read(s.final_checkpoint.unwrap().join("policy/model.safetensors")).unwrap();
        let ratios: Vec<(f64, f64)> = seen.iter().map(|m| (m.correct_ratio, m.update.grad_norm)).collect();
        let evals = std::fs::read_to_string(run.join("eval_metrics.jsonl")).unwrap();
        let evals: Vec<serde_json::Value> = evals
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("_s") && !k.contains("seconds"));
                v
            })
            .collect();
        runs.push((ratios, evals, weights));
    }
    assert_eq!(runs[0].0, runs[1].0, "per-step correct ratios and gradient norms");
    assert_eq!(runs[0].1, runs[1].1, "held-out metrics");
    assert!(runs[0].2 == runs[1].2, "final weights differ");
    assert!(runs[0].0.iter().any(|r| r.0 > 0.0 && r.0 < 1.0), "some steps should mix correct and incorrect");
}

fn math_run_config(dir: &Path, model: &Path) -> PathBuf {
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[model]
path = "{}"
threads = 1
[task]
kind = "math"
dataset = "math500"
limit = 8
template = "qwen2.5-math"
[rollout]
prompts_per_step = 2
n = 2
max_new_tokens = 6
batch = 4
[objective]
kind = "ppo"
[optim]
lr = 1e-3
[train]
steps = 8
mini_batches = 2
micro_batch = 2
[eval]
every = 0
[checkpoint]
every = 1
keep = 2
"#,
            model.display()
        ),
    )
    .unwrap();
    cfg
}

fn final_weights(run: &Path) -> Vec<u8> {
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/latest.json")).unwrap()).unwrap();
    assert_eq!(latest["step"], 8);
    let dir = run.join("checkpoints").join(latest["dir"].as_str().unwrap());
    let mut bytes = std::fs::read(dir.join("policy/model.safetensors")).unwrap();
    bytes.extend(std::fs::read(dir.join("critic/model.safetensors")).unwrap());
    bytes.extend(std::fs::read(dir.join("optimizer.safetensors")).unwrap());
    bytes
}

/// `train` (PPO: policy, reference, critic and two optimizers) killed with SIGKILL at random
/// points and resumed ends with exactly the weights and metrics of an uninterrupted run.
#[test]
fn kill9_resume_equals_uninterrupted_training() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let cfg_json = common::tiny_qwen3_real_vocab();
    common::save_random_hf_model(&hf, &cfg_json, 2);
    let cfg = math_run_config(tmp.path(), &hf);
    let cmd = |run: &Path, resume: bool| {
        let mut c = bin();
        c.args(["train", "--config"]).arg(&cfg).arg("--out").arg(run).stdout(Stdio::null()).stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let reference = tmp.path().join("ref");
    let t0 = std::time::Instant::now();
    let o = cmd(&reference, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = t0.elapsed().as_millis() as u64;
    let want_metrics = common::deterministic_rows(&reference, "metrics.jsonl");
    assert_eq!(want_metrics.len(), 8);
    let want_weights = final_weights(&reference);

    let run = tmp.path().join("killed");
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let (mut kills, mut finished) = (0, false);
    for _ in 0..16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Kill points spread over the first two thirds of a run's lifetime (it includes start-up).
        let delay = 100 + x % (full * 2 / 3).max(300);
        let mut child = cmd(&run, run.exists()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            if kills == 0 {
                // Finished before the first kill (a busy machine): start over.
                std::fs::remove_dir_all(&run).unwrap();
                continue;
            }
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    if !finished {
        let o = cmd(&run, true).output().unwrap();
        assert!(o.status.success(), "final resume: {}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("uninterrupted run {full} ms; killed {kills} times");
    assert!(kills > 0, "never killed: make the run longer");
    assert_eq!(common::deterministic_rows(&run, "metrics.jsonl"), want_metrics, "metrics of the resumed run differ");
    assert!(final_weights(&run) == want_weights, "final weights of the resumed run differ");
    let kept = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("step-"))
        .count();
    assert_eq!(kept, 2, "checkpoint.keep = 2");
    // A resume with other settings is refused; extending the run is not.
    let o = cmd(&run, true).arg("--set").arg("optim.lr=2e-3").output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("different settings") && e.contains("lr"), "{e}");
}

#[test]
fn gradient_analysis_matches_closed_forms_in_f64() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("m");
    tiny_model(&base, 24, 4);
    let out = tmp.path().join("grad.json");
    let o = bin()
        .args(["gradient-analysis", "--model"])
        .arg(&base)
        .args(["--prompt-ids", "1,5,9", "--response-ids", "3,7,7,2", "--dtype", "f64", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let diff = a["max_abs_diff"].as_f64().unwrap();
    assert!(diff < 1e-10, "autograd vs closed form: {diff}");
    assert_eq!(a["tokens"], serde_json::json!([3, 7, 7, 2]));
    for sign in ["psr", "nsr"] {
        for form in ["prob", "logprob"] {
            let g = a["grad"][sign][form].as_array().unwrap();
            assert_eq!((g.len(), g[0].as_array().unwrap().len()), (4, 24), "{sign}/{form}");
        }
    }
    for (t, pos) in a["summary"].as_array().unwrap().iter().enumerate() {
        let p = pos["prob"].as_f64().unwrap();
        // PSR raises the sampled token, NSR lowers it, by π(1 − π)/T in the prob form.
        let want = p * (1.0 - p) / 4.0;
        assert!((pos["sampled_psr_prob"].as_f64().unwrap() - want).abs() < 1e-12, "position {t}");
        assert!((pos["sampled_nsr_prob"].as_f64().unwrap() + want).abs() < 1e-12, "position {t}");
        // NSR raises every other token in proportion to its probability.
        assert!(pos["ratio_max_deviation"].as_f64().unwrap() < 1e-12);
        for o in pos["top_others"].as_array().unwrap() {
            assert!(o["nsr_prob"].as_f64().unwrap() > 0.0 && o["psr_prob"].as_f64().unwrap() < 0.0);
        }
    }
}

#[test]
fn paper_presets_resolve_and_print_a_memory_plan() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for model in ["qwen2.5-math-7b", "qwen3-4b"] {
        for kind in ["ppo", "grpo", "psr", "nsr", "w-reinforce"] {
            let cfg = root.join(format!("paper/configs/{model}/{kind}.toml"));
            let o = bin().current_dir(&root).args(["train", "--dry-run", "--config"]).arg(&cfg).output().unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{model}/{kind}: {}", String::from_utf8_lossy(&o.stderr));
            assert!(
                out.contains("# memory plan") && out.contains("AdamW state") && out.contains("rollout KV cache"),
                "{out}"
            );
            assert_eq!(out.contains("critic ("), kind == "ppo", "{model}/{kind}");
            assert_eq!(out.contains("reference policy"), kind == "ppo" || kind == "grpo", "{model}/{kind}");
            let resolved = TrainConfig::load(&cfg, &[]).unwrap();
            assert_eq!(
                (resolved.optim.lr, resolved.objective.clip_eps, resolved.objective.entropy_coef),
                (1e-6, 0.2, 1e-4)
            );
            if kind == "w-reinforce" {
                assert_eq!(resolved.objective.lambda, 0.1);
            }
        }
    }
}

/// bf16 compute with f32 master weights and AdamW state (the paper-scale setting) on CPU.
#[test]
fn train_step_in_bf16_keeps_f32_master_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model(&base, 32, 13);
    let lm = model::load_model(&base, Device::Cpu, DType::BF16).unwrap();
    let rollouts = vec![
        Rollout { group: "g".into(), prompt_ids: vec![1, 5, 9], response_ids: vec![7, 8, 2], reward: 1.0 },
        Rollout { group: "g".into(), prompt_ids: vec![1, 5, 9], response_ids: vec![7, 11, 3], reward: 0.0 },
    ];
    let before: Vec<(String, Tensor)> = lm.vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    let mut opt =
        AdamW::new(lm.vs.variables().into_iter().collect(), OptimConfig { lr: 1e-2, ..Default::default() }).unwrap();
    let state = opt.state();
    assert!(state.iter().any(|(n, t)| n.starts_with("master.") && t.kind() == Kind::Float), "f32 master weights");
    assert!(state.iter().filter(|(n, _)| n.starts_with("exp_avg")).all(|(_, t)| t.kind() == Kind::Float));
    let mut learner = Learner { policy: &lm, opt: &mut opt, reference: None, critic: None, pad: 0, dist: None };
    let cfg = UpdateConfig {
        objective: ObjectiveConfig::paper(ObjectiveKind::WReinforce),
        mini_batch_size: 2,
        micro_batch: 2,
        critic: CriticConfig::default(),
    };
    let s = update(&mut learner, &rollouts, &cfg).unwrap();
    assert!(s.grad_norm.is_finite() && s.grad_norm > 0.0 && s.skipped_steps == 0, "{s:?}");
    let after = lm.vs.variables();
    let moved = before
        .iter()
        .filter(|(n, t)| (&after[n].to_kind(Kind::Float) - t.to_kind(Kind::Float)).abs().max().double_value(&[]) > 0.0)
        .count();
    assert!(moved > before.len() / 2, "bf16 weights follow their f32 masters ({moved} of {} moved)", before.len());
    for (n, t) in &after {
        assert_eq!(t.kind(), Kind::BFloat16, "{n} stays bf16");
    }
}

/// Per-layer gradient checkpointing recomputes each layer in the backward pass: the policy's and
/// PPO critic's gradients equal the plain path's (f32, ≤ 1e-6 relative), padding included.
#[test]
fn gradient_checkpointing_gives_the_plain_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_cfg(40);
    cfg["num_hidden_layers"] = 3.into();
    common::save_random_hf_model(tmp.path(), &cfg, 17);
    let rollouts = vec![
        Rollout { group: "a".into(), prompt_ids: vec![1, 2, 3], response_ids: vec![4, 5, 6, 7], reward: 1.0 },
        Rollout { group: "a".into(), prompt_ids: vec![1, 2, 3], response_ids: vec![8, 9], reward: 0.0 },
        Rollout { group: "b".into(), prompt_ids: vec![1, 10], response_ids: vec![11, 3, 2, 30, 31], reward: 0.0 },
        Rollout { group: "b".into(), prompt_ids: vec![1, 10], response_ids: vec![12], reward: 1.0 },
    ];
    let run = |ckpt: bool, kind: ObjectiveKind| {
        let mut lm = model::load_model(tmp.path(), Device::Cpu, DType::F32).unwrap();
        lm.model.gradient_checkpointing = ckpt;
        let mut critic = rlvr_decomp::rl::critic::Critic::init(tmp.path(), Device::Cpu, DType::F32, 3).unwrap();
        critic.body.model.gradient_checkpointing = ckpt;
        let mut opt = AdamW::new(lm.vs.variables().into_iter().collect(), OptimConfig::default()).unwrap();
        let rows: Vec<&Rollout> = rollouts.iter().collect();
        let (old, _) = token_stats(&lm.model, &rows, 8, 0).unwrap();
        let outcomes: Vec<SampleOutcome> =
            rollouts.iter().map(|r| SampleOutcome { group: r.group.clone(), reward: r.reward }).collect();
        let obj = ObjectiveConfig::paper(kind);
        let seq = sequence_advantages(&obj, &outcomes);
        let adv: Vec<f32> =
            rollouts.iter().zip(&seq).flat_map(|(r, a)| vec![a.unwrap_or(0.0); r.response_ids.len()]).collect();
        let coefs = LossCoefs { clip_eps: 0.2, entropy_coef: 1e-3, kl_coef: 0.0 };
        opt.zero_grad();
        let inputs = TokenInputs { old_logp: &old, advantages: &adv, ref_logp: None };
        backward_micro_batch(&lm.model, &rows, &inputs, &coefs, adv.len() as f64, 0, 5).unwrap();
        let g = grads(&lm);
        // The critic's value loss through its own tape.
        let (v, tape) = critic.values_tape(&rows, 0).unwrap();
        let target = Tensor::from_slice(&adv);
        ((v - target).square().sum(Kind::Float) * 0.5).backward();
        tape.backward(&critic.body.model).unwrap();
        let mut cg: Vec<(String, Tensor)> =
            critic.trainable().into_iter().map(|(n, t)| (n, t.grad().detach().copy())).collect();
        cg.sort_by(|a, b| a.0.cmp(&b.0));
        (g, cg)
    };
    for kind in [ObjectiveKind::Grpo, ObjectiveKind::Nsr] {
        let (plain, plain_c) = run(false, kind);
        let (ckpt, ckpt_c) = run(true, kind);
        assert!(plain.iter().all(|(_, t)| t.defined() && t.abs().sum(Kind::Float).double_value(&[]) > 0.0));
        let (d, dc) = (max_rel_diff(&plain, &ckpt), max_rel_diff(&plain_c, &ckpt_c));
        eprintln!("{kind}: checkpointed vs plain gradients, max relative difference policy {d:.2e}, critic {dc:.2e}");
        assert!(d <= 1e-6 && dc <= 1e-6, "{d} {dc}");
    }
}
