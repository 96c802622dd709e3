//! Helpers shared by integration tests (`mod common;` in each test file that needs them).
#![allow(dead_code)]

use rlvr_decomp::model::{self, Config, SaveOptions};
use std::path::Path;

/// Saves a random model built by our tch code from an HF `config.json` value into `dir`
/// (HF layout). Norm weights are 1, every other weight is N(0, 0.5²), seeded by `seed`.
pub fn save_random_hf_model(dir: &Path, cfg_json: &serde_json::Value, seed: i64) {
    let cfg = Config::from_json_str(&cfg_json.to_string(), Path::new("config.json")).unwrap();
    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = model::Qwen::new(&cfg, vs.root());
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.ends_with("norm.weight") {
                let _ = v.fill_(1.0);
            } else {
                v.copy_(&(tch::Tensor::randn(v.size(), (tch::Kind::Float, tch::Device::Cpu)) * 0.5));
            }
        }
    });
    model::save_checkpoint(&vs, &cfg, dir, &SaveOptions::default()).unwrap();
}
