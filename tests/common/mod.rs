//! Helpers shared by integration tests (`mod common;` in each test file that needs them).
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rlvr_decomp::model::{self, Config, SaveOptions};
use std::path::Path;

/// Saves a random model built by our tch code from an HF `config.json` value into `dir`
/// (HF layout). Norm weights are 1, every other weight is N(0, 0.5²), drawn from a ChaCha stream
/// seeded by `seed` and the tensor's name (never libtorch's global RNG, which tests running in
/// parallel threads would share).
pub fn save_random_hf_model(dir: &Path, cfg_json: &serde_json::Value, seed: i64) {
    let cfg = Config::from_json_str(&cfg_json.to_string(), Path::new("config.json")).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = model::Qwen::new(&cfg, vs.root());
    let mut vars: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut v) in vars {
            if name.ends_with("norm.weight") {
                let _ = v.fill_(1.0);
                continue;
            }
            let tag = name
                .bytes()
                .fold(seed as u64 ^ 0x9E37_79B9_7F4A_7C15, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(tag);
            let vals: Vec<f32> = (0..v.numel())
                .map(|_| {
                    let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
                    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.5) as f32
                })
                .collect();
            v.copy_(&tch::Tensor::from_slice(&vals).view(v.size().as_slice()));
        }
    });
    model::save_checkpoint(&vs, &cfg, dir, &SaveOptions::default()).unwrap();
}

/// A 1-layer Qwen3 config with the real Qwen3 vocabulary (so real prompts tokenize into it).
pub fn tiny_qwen3_real_vocab() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "vocab_size": 151936, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 4096, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float32"
    })
}

/// The rows of a run's JSONL log (`metrics.jsonl`, `eval_metrics.jsonl`) without wall-clock columns.
pub fn deterministic_rows(run: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join(file))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.starts_with("time_"));
            v
        })
        .collect()
}
