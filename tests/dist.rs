//! Data-parallel training on libtorch's c10d (Gloo, two ranks on this machine): the collectives
//! under torchrun, `train-step` split across ranks equal to one process (with and without ZeRO-1),
//! and a rank that dies making the other fail with a clear error within the timeout.

mod common;

use rlvr_decomp::model::{self, DType};
use rlvr_decomp::rl::Rollout;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{Device, Kind};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rlvr-decomp")
}

fn torchrun() -> PathBuf {
    let t = root().join(".venv/bin/torchrun");
    assert!(t.is_file(), "{} not found: `make setup` installs torch (with torchrun) into .venv", t.display());
    t
}

/// A port nobody listens on now (tests run in parallel: each launch gets its own).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `torchrun --nproc-per-node N --no-python BIN args…` on this machine (Gloo).
fn torchrun_bin(n: usize, args: &[&str]) -> Output {
    let port = free_port().to_string();
    Command::new(torchrun())
        .args(["--nproc-per-node", &n.to_string(), "--master-addr", "127.0.0.1", "--master-port", &port])
        .args(["--no-python", bin()])
        .args(args)
        .env("RLVR_DIST_TIMEOUT_S", "60")
        .output()
        .unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what} failed: {err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn collectives_under_torchrun() {
    let o = torchrun_bin(2, &["dist-check"]);
    let out = ok(&o, "torchrun dist-check");
    for r in 0..2 {
        assert!(out.contains(&format!("dist-check: rank {r} of 2 (gloo")), "{out}");
    }
    assert!(out.contains("torchrun's agent store"), "{out}");
}

fn tiny_cfg() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "vocab_size": 48, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 256, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 0, "torch_dtype": "float32"
    })
}

/// Seven rollouts in three groups, of varied lengths (an odd count: the ranks' shares differ).
fn rollouts() -> Vec<Rollout> {
    let r = |g: &str, p: Vec<i64>, y: Vec<i64>, reward: f32| Rollout {
        group: g.into(),
        prompt_ids: p,
        response_ids: y,
        reward,
    };
    vec![
        r("a", vec![1, 5, 9], vec![7, 8, 2], 1.0),
        r("a", vec![1, 5, 9], vec![7, 11, 12, 3, 40], 0.0),
        r("a", vec![1, 5, 9], vec![30], 0.0),
        r("b", vec![1, 6], vec![20, 2], 0.0),
        r("b", vec![1, 6], vec![21, 22, 23, 2, 17, 18], 1.0),
        r("c", vec![1, 6, 44, 45], vec![9, 9, 9, 2], 1.0),
        r("c", vec![1, 6, 44, 45], vec![10, 2], 0.0),
    ]
}

fn step_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("step.json")).unwrap()).unwrap()
}

/// Max over tensors of max |a − b| / max |a| (the updated weights of two runs).
fn weight_diff(a: &Path, b: &Path) -> f64 {
    let (x, y) = (
        model::load_model(a, Device::Cpu, DType::F32).unwrap(),
        model::load_model(b, Device::Cpu, DType::F32).unwrap(),
    );
    let yv = y.vs.variables();
    let mut worst = 0.0f64;
    for (n, t) in x.vs.variables() {
        let u = &yv[&n];
        let scale = t.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max((&t - u).abs().max().to_kind(Kind::Double).double_value(&[]) / scale);
    }
    worst
}

#[test]
fn train_step_split_across_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    common::save_random_hf_model(&base, &tiny_cfg(), 21);
    let file = tmp.path().join("rollouts.jsonl");
    let text: String = rollouts().iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(&file, text).unwrap();
    for kind in ["grpo", "psr", "nsr", "ppo"] {
        let cfg = tmp.path().join(format!("{kind}.toml"));
        std::fs::write(&cfg, format!("[objective]\nkind = \"{kind}\"\n[optim]\nlr = 1e-2\ngrad_clip = 0.5\n")).unwrap();
        let args = |out: &Path| -> Vec<String> {
            vec![
                "train-step".into(),
                "--model".into(),
                base.display().to_string(),
                "--rollouts".into(),
                file.display().to_string(),
                "--config".into(),
                cfg.display().to_string(),
                "--micro-batch".into(),
                "2".into(),
                "--out".into(),
                out.display().to_string(),
            ]
        };
        let single = tmp.path().join(format!("{kind}-single"));
        let o = Command::new(bin()).args(args(&single)).env_remove("WORLD_SIZE").output().unwrap();
        ok(&o, "single-process train-step");
        let s = step_json(&single);
        for zero1 in [false, true] {
            let out = tmp.path().join(format!("{kind}-dp-zero1-{zero1}"));
            let mut a = args(&out);
            if zero1 {
                a.push("--zero1".into());
            }
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            ok(&torchrun_bin(2, &a), &format!("2-rank train-step {kind} zero1={zero1}"));
            let d = step_json(&out);
            for key in
                ["loss", "pg_loss", "entropy", "grad_norm", "kept_samples", "kept_tokens", "clip_frac", "value_loss"]
            {
                let (x, y) = (&s[key], &d[key]);
                if x.is_null() {
                    assert!(y.is_null(), "{kind} {key}");
                    continue;
                }
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                // Relative 1e-6; the losses are token means of terms of size |A| ≈ 1 that nearly
                // cancel (PPO's whitened advantages), so they are compared at the terms' scale.
                let scale = if key.ends_with("loss") { x.abs().max(1.0) } else { x.abs().max(1e-6) };
                assert!((x - y).abs() <= 1e-6 * scale, "{kind} zero1={zero1} {key}: one process {x}, two ranks {y}");
            }
            let w = weight_diff(&single, &out);
            eprintln!("{kind} zero1={zero1}: 2 ranks vs 1 process, max relative weight difference {w:.2e}");
            assert!(w <= 1e-6, "{kind} zero1={zero1}: {w}");
        }
    }
}

/// Two ranks started by hand (rank 0 hosts the store); rank 1 is killed with SIGKILL mid-run: rank 0
/// must exit non-zero with a one-line c10d error well within its timeout, never hang.
#[test]
fn a_rank_that_dies_makes_the_other_fail_with_a_clear_error() {
    let port = free_port().to_string();
    let spawn = |rank: &str| {
        Command::new(bin())
            .args(["dist-check", "--rounds", "200", "--pause-ms", "50", "--timeout-s", "20"])
            .env("WORLD_SIZE", "2")
            .env("RANK", rank)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let r0 = spawn("0");
    let mut r1 = spawn("1");
    std::thread::sleep(Duration::from_millis(1500));
    r1.kill().unwrap();
    let killed = Instant::now();
    let _ = r1.wait();
    let o = r0.wait_with_output().unwrap();
    let waited = killed.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "rank 0 must fail when rank 1 dies: {err}");
    let last = err.lines().filter(|l| l.starts_with("error:")).last().unwrap_or_default().to_string();
    assert!(last.contains("c10d") && last.contains("rank 0 of 2"), "{err}");
    assert!(waited < Duration::from_secs(20), "rank 0 took {waited:?} to notice");
    eprintln!("rank 0 failed {waited:?} after rank 1 was killed: {last}");
}

/// Joining a group whose other rank never comes: a one-line error after the timeout.
#[test]
fn a_missing_rank_times_out_with_a_clear_error() {
    let port = free_port().to_string();
    let t0 = Instant::now();
    let o = Command::new(bin())
        .args(["dist-check", "--timeout-s", "2"])
        .env("WORLD_SIZE", "2")
        .env("RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port)
        .env_remove("RLVR_DIST_TIMEOUT_S")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cannot join the process group") && err.contains("timeout"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
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
eval_datasets = ["math500"]
eval_limit = 3
template = "qwen2.5-math"
[rollout]
prompts_per_step = 3
n = 2
max_new_tokens = 6
batch = 4
[objective]
kind = "ppo"
[optim]
lr = 1e-3
[train]
steps = 6
mini_batches = 2
micro_batch = 2
zero1 = true
[eval]
every = 3
n = 1
max_new_tokens = 4
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

/// The newest checkpoint's weights and every optimizer shard, as bytes.
fn final_state(run: &Path) -> Vec<(String, Vec<u8>)> {
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/latest.json")).unwrap()).unwrap();
    assert_eq!(latest["step"], 6);
    let dir = run.join("checkpoints").join(latest["dir"].as_str().unwrap());
    let mut files: Vec<String> = ["policy/model.safetensors", "critic/model.safetensors"].map(String::from).to_vec();
    for stem in ["optimizer", "critic_optimizer"] {
        for r in 0..2 {
            files.push(format!("{stem}.rank{r}.safetensors"));
        }
    }
    files.into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}")))).collect()
}

/// `torchrun … train` as its own process group (so SIGKILL reaches the workers too).
fn torchrun_train(cfg: &Path, run: &Path, resume: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let port = free_port().to_string();
    let mut c = Command::new(torchrun());
    c.args(["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", &port, "--no-python", bin()])
        .args(["train", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(run)
        .env("RLVR_DIST_TIMEOUT_S", "60")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if resume {
        c.arg("--resume");
    }
    c.spawn().unwrap()
}

/// A 2-rank PPO run with ZeRO-1 (sharded optimizer checkpoints) killed with SIGKILL at random points
/// and resumed with torchrun ends with exactly the weights, optimizer shards and metrics of an
/// uninterrupted 2-rank run; a resume without ZeRO-1 is refused, on every rank.
#[test]
fn two_rank_train_killed_and_resumed_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let cfg_json = common::tiny_qwen3_real_vocab();
    common::save_random_hf_model(&hf, &cfg_json, 2);
    let cfg = math_run_config(tmp.path(), &hf);
    let reference = tmp.path().join("ref");
    let t0 = Instant::now();
    let o = torchrun_train(&cfg, &reference, false).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = t0.elapsed().as_millis() as u64;
    let (want_m, want_e) = (
        common::deterministic_rows(&reference, "metrics.jsonl"),
        common::deterministic_rows(&reference, "eval_metrics.jsonl"),
    );
    assert_eq!(want_m.len(), 6);
    assert_eq!(want_e.len(), 3, "held-out evaluation before training, at step 3 and at step 6");
    let want = final_state(&reference);

    let run = tmp.path().join("killed");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut kills, mut finished) = (0, false);
    for _ in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = 1500 + x % (full * 2 / 3).max(500);
        let mut child = torchrun_train(&cfg, &run, run.exists());
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            if kills == 0 {
                std::fs::remove_dir_all(&run).unwrap();
                continue;
            }
            finished = true;
            break;
        }
        // SIGKILL to the whole group: torchrun and both workers.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().unwrap();
        kills += 1;
    }
    if !finished {
        let o = torchrun_train(&cfg, &run, true).wait_with_output().unwrap();
        assert!(o.status.success(), "final resume: {}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("uninterrupted 2-rank run {full} ms; killed {kills} times");
    assert!(kills > 0, "never killed: make the run longer");
    assert_eq!(common::deterministic_rows(&run, "metrics.jsonl"), want_m, "metrics of the resumed run differ");
    assert_eq!(common::deterministic_rows(&run, "eval_metrics.jsonl"), want_e, "held-out metrics differ");
    for ((f, a), (_, b)) in final_state(&run).iter().zip(&want) {
        assert!(a == b, "{f} of the resumed run differs");
    }
    // Resuming a ZeRO-1 run without ZeRO-1 is refused with the reason.
    let port = free_port().to_string();
    let o = Command::new(torchrun())
        .args(["--nproc-per-node", "2", "--master-port", &port, "--no-python", bin(), "train", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&run)
        .args(["--resume", "--set", "train.zero1=false", "--set", "train.steps=7"])
        .env("RLVR_DIST_TIMEOUT_S", "30")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("zero1"), "{e}");
    // Rank 0 alone checks the folder; rank 1 learns of the failure and stops with a pointer to it.
    assert!(e.contains("setting up the run folder failed on 1 of 2 ranks"), "{e}");
}

/// The memory plan of `train --dry-run` at paper scale: ZeRO-1 divides the f32 master weights and
/// AdamW moments by the world size, checkpointing keeps one layer's activations plus every layer's
/// input, and the CLI states what fits on 80 GB and 141 GB devices.
#[test]
fn memory_plan_shards_and_checkpoints() {
    use rlvr_decomp::model::{memory, Config};
    let cfg = Config::from_path(&root().join("paper/models/qwen3-4b.config.json")).unwrap();
    let shape = |world: usize, zero1: bool, checkpointing: bool| memory::TrainShape {
        elt: 2,
        master: true,
        micro_batch: 1,
        seq_len: 8192,
        head_chunk: 442,
        gen_rows: 8,
        prompt_len: 1024,
        max_new: 7168,
        reference: false,
        critic: false,
        attention_probs: false,
        world,
        zero1,
        checkpointing,
        bucket_elems: rlvr_decomp::rl::optim::BUCKET_ELEMS as usize,
    };
    let item = |p: &memory::Plan, prefix: &str| -> f64 {
        p.items.iter().filter(|(w, _)| w.starts_with(prefix)).map(|(_, b)| b).sum()
    };
    let params = memory::parameter_count(&cfg);
    let single = memory::update_plan(&cfg, &shape(1, false, false));
    let zero = memory::update_plan(&cfg, &shape(8, true, false));
    assert_eq!(item(&single, "AdamW state"), params * 8.0);
    assert_eq!(item(&zero, "AdamW state"), params * 8.0 / 8.0);
    assert_eq!(item(&zero, "f32 master weights"), params * 4.0 / 8.0);
    assert_eq!(item(&zero, "gradients"), item(&single, "gradients"), "ZeRO-1 does not shard gradients");
    let ckpt = memory::update_plan(&cfg, &shape(1, false, true));
    let plain_act = item(&single, "activations");
    let ckpt_act = item(&ckpt, "layer inputs") + item(&ckpt, "one layer");
    assert!(ckpt_act < plain_act / 5.0, "checkpointing keeps {ckpt_act} of {plain_act} bytes");
    assert!(zero.total() < single.total() && ckpt.total() < single.total());

    let o = Command::new(bin())
        .current_dir(root())
        .args(["train", "--dry-run", "--config", "paper/configs/qwen3-4b/nsr.toml", "--world-size", "8"])
        .args(["--set", "train.zero1=true", "--set", "train.gradient_checkpointing=true"])
        .output()
        .unwrap();
    let out = ok(&o, "dry-run");
    assert!(out.contains("ZeRO-1 shard") && out.contains("layer inputs kept by checkpointing"), "{out}");
    assert!(out.contains("world size 8 with ZeRO-1, gradient checkpointing on; on an 80 GB device:"), "{out}");
}
