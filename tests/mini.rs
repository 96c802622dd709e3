//! The embedded mini task end to end at test size: SFT of the tiny Qwen3 base on design C, its
//! held-out evaluation, then RL on the mini task with the trainer, logging strategy shares and
//! entropy split by position.

use rlvr_decomp::rl::{trainer, TrainConfig};
use rlvr_decomp::sft::{self, SftConfig};

#[test]
fn sft_then_rl_on_the_mini_task() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SftConfig::from_toml(
        "steps = 120\nbatch = 64\neval_every = 60\neval_samples = 8\nthreads = 1\n[task]\ndesign = \"c\"\nseed = 3\neval_per_tier = 10\nrl_pool = 256\n",
        &[],
    )
    .unwrap();
    let out = tmp.path().join("sft");
    let mut lines = vec![];
    let s = sft::run(&cfg, &out, &mut |l| lines.push(l.clone())).unwrap();
    assert!(!s.skipped);
    let first = lines.first().unwrap().loss;
    let last = lines.iter().rev().find(|l| l.loss > 0.0).unwrap().loss;
    assert!(last < first * 0.5, "SFT loss must fall: {first} → {last}");
    assert_eq!(s.final_eval.len(), 3, "one evaluation per tier");
    let math = s.final_eval.iter().find(|e| e.tier == "math").unwrap();
    let aime = s.final_eval.iter().find(|e| e.tier == "aime").unwrap();
    eprintln!(
        "after 120 SFT steps: math pass@1 {:.3}, aime pass@1 {:.3} pass@8 {:.3}",
        math.pass_at_1, aime.pass_at_1, aime.pass_at_n
    );
    assert!(math.pass_at_1 > aime.pass_at_1, "the common heuristic is right on the math tier");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "fingerprint.json"] {
        assert!(s.base.join(f).is_file(), "base lacks {f}");
    }
    // A finished run with the same settings is not redone.
    assert!(sft::run(&cfg, &out, &mut |_| {}).unwrap().skipped);

    let rl = format!(
        r#"
[model]
path = "{}"
threads = 1
[task]
kind = "mini"
design = "c"
seed = 3
eval_per_tier = 10
rl_pool = 256
[rollout]
prompts_per_step = 8
n = 4
max_new_tokens = 16
batch = 32
[objective]
kind = "nsr"
[optim]
lr = 1e-4
[train]
steps = 3
mini_batches = 2
micro_batch = 16
[eval]
every = 3
n = 2
temperature = 1.0
max_new_tokens = 16
"#,
        s.base.display()
    );
    let cfg = TrainConfig::from_toml(&rl, &[]).unwrap();
    let task = trainer::build_task(&cfg, &[]).unwrap();
    let mut seen = vec![];
    trainer::train(&cfg, &tmp.path().join("rl"), task.as_ref(), false, &mut |m, _| seen.push(m.clone())).unwrap();
    assert_eq!(seen.len(), 3);
    for m in &seen {
        for key in ["s2_share", "s2_share_easy", "s2_share_hard", "entropy_strategy", "entropy_answer"] {
            assert!(m.extra.contains_key(key), "step metrics lack {key}: {:?}", m.extra);
        }
        assert!((0.0..=1.0).contains(&m.extra["s2_share"]) && m.extra["entropy_strategy"].is_finite());
    }
    let evals = std::fs::read_to_string(tmp.path().join("rl/eval_metrics.jsonl")).unwrap();
    assert_eq!(evals.lines().count(), 6, "three tiers before training and after step 3");
}

/// `mini-data` reads the mini task from an SFT or a mini RL config, with overrides; a config of
/// another task is refused.
#[test]
fn task_config_from_sft_and_rl_configs() {
    use rlvr_decomp::mini::Design;
    use rlvr_decomp::sft::SftConfig;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let c = SftConfig::task_from_toml(&read("paper/configs/mini/sft.toml"), &[]).unwrap();
    assert_eq!((c.design, c.eval_per_tier), (Design::C, 50));
    let h = SftConfig::task_from_toml(&read("paper/configs/mini/psr.toml"), &["task.design=h".into()]).unwrap();
    assert_eq!(h.design, Design::H);
    let e = SftConfig::task_from_toml(&read("paper/configs/qwen3-4b/psr.toml"), &[]).unwrap_err().to_string();
    assert!(e.contains("not the mini task"), "{e}");
}
