//! End to end on real MATH-500 prompts with the real Qwen tokenizer: a small random Qwen2
//! (vocab 151936, head_dim 16 so the fused export applies too) saved by our tch code → `export`
//! → `sample` (ONNX Runtime) → `eval` (counts + pass@k as JSON and parquet). pass@k is ~0 for a
//! random model; the point is the pipeline. Also checks that continuous batching, the fused
//! export and the tch backend draw the same samples.

use polars::prelude::*;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn random_hf_model(dir: &Path) {
    let cfg_json = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 151936, "hidden_size": 64, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 4096, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151643, "torch_dtype": "float32"
    });
    common::save_random_hf_model(dir, &cfg_json, 1);
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr-decomp"))
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("chunk-"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn export_sample_eval_on_math500() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    random_hf_model(&hf);
    let onnx = tmp.path().join("onnx");
    run_ok(bin().args(["export", "--model"]).arg(&hf).arg("--out").arg(&onnx));
    for f in ["model.onnx", "model.onnx.data", "export.json", "config.json", "generation_config.json"] {
        assert!(onnx.join(f).is_file(), "export is missing {f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(onnx.join("export.json")).unwrap()).unwrap();
    assert_eq!(manifest["arch"], "qwen2");
    assert_eq!(manifest["vocab_size"], 151936);

    let run = tmp.path().join("results/e2e");
    let samples = run.join("samples/math500");
    let common = |c: &mut Command| {
        c.args(["sample", "--dataset", "math500", "--limit", "4", "--k", "8", "--max-new-tokens", "16"]).args([
            "--preset",
            "qwen2.5-math",
            "--batch",
            "16",
            "--seed",
            "3",
            "--threads",
            "2",
        ]);
    };
    let bench = tmp.path().join("bench.json");
    let mut c = bin();
    common(&mut c);
    run_ok(c.arg("--onnx").arg(&onnx).arg("--out").arg(&samples).arg("--bench-json").arg(&bench));

    let recs = records(&samples);
    assert_eq!(recs.len(), 32);
    let mut pairs: Vec<(String, u64)> = recs
        .iter()
        .map(|r| (r["problem_id"].as_str().unwrap().to_string(), r["sample_index"].as_u64().unwrap()))
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 32, "duplicate (problem, sample) pairs");
    for r in &recs {
        let n = r["num_tokens"].as_u64().unwrap();
        assert!((1..=16).contains(&n));
        let fr = r["finish_reason"].as_str().unwrap();
        assert!(fr == "stop" || (fr == "length" && n == 16));
        assert_eq!(r["token_ids"].as_array().unwrap().len() as u64, n);
        assert!(r["text"].is_string() && r["gold"].is_string() && r["correct"].is_boolean());
    }
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bench).unwrap()).unwrap();
    assert!(b["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(b["samples"], 32);

    // eval → <run>/eval/
    run_ok(bin().args(["eval", "--samples"]).arg(&samples));
    let eval = run.join("eval");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("passk.json")).unwrap()).unwrap();
    let d = &j["datasets"]["math500"];
    assert_eq!(d["complete"], true);
    let keys: Vec<&str> = d["report"]["pass_at_k"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["1", "2", "4", "8"]);
    let per = ParquetReader::new(std::fs::File::open(eval.join("per_problem.parquet")).unwrap()).finish().unwrap();
    assert_eq!(per.height(), 4);
    assert_eq!(per.column("n").unwrap().u64().unwrap().sum(), Some(32));
    let curve = ParquetReader::new(std::fs::File::open(eval.join("pass_at_k.parquet")).unwrap()).finish().unwrap();
    assert_eq!(curve.height(), 4);

    // Continuous batching (5 slots, so chunks of 5 pairs stream through and refill) gives the same
    // samples as the fixed batches of 16 above.
    let samples_cont = run.join("samples/math500-continuous");
    run_ok(
        bin()
            .args(["sample", "--dataset", "math500", "--limit", "4", "--k", "8", "--max-new-tokens", "16"])
            .args(["--preset", "qwen2.5-math", "--batch", "5", "--seed", "3", "--threads", "2", "--continuous"])
            .arg("--onnx")
            .arg(&onnx)
            .arg("--out")
            .arg(&samples_cont),
    );
    let key = |r: &serde_json::Value| {
        (r["problem_id"].to_string(), r["sample_index"].as_u64().unwrap(), r["token_ids"].to_string())
    };
    let mut fixed: Vec<_> = recs.iter().map(key).collect();
    let mut cont: Vec<_> = records(&samples_cont).iter().map(key).collect();
    fixed.sort();
    cont.sort();
    assert_eq!(cont, fixed, "continuous batching changed samples");

    // The fused export (GroupQueryAttention over a pre-allocated cache) draws the same samples
    // (logits within ~1e-5 of the standard graph's: a near-tie may flip one), fixed and continuous.
    let fused = tmp.path().join("onnx-fused");
    run_ok(bin().args(["export", "--graph", "fused", "--model"]).arg(&hf).arg("--out").arg(&fused));
    for (name, batch, extra) in [("fused", "16", None), ("fused-continuous", "5", Some("--continuous"))] {
        let dir = run.join(format!("samples/math500-{name}"));
        let mut c = bin();
        c.args(["sample", "--dataset", "math500", "--limit", "4", "--k", "8", "--max-new-tokens", "16"])
            .args(["--preset", "qwen2.5-math", "--batch", batch, "--seed", "3", "--threads", "2"])
            .args(extra)
            .arg("--onnx")
            .arg(&fused)
            .arg("--out")
            .arg(&dir);
        run_ok(&mut c);
        let mut got: Vec<_> = records(&dir).iter().map(key).collect();
        got.sort();
        let same = got.iter().zip(&fixed).filter(|(a, b)| a == b).count();
        eprintln!("{name} vs standard: {same}/{} identical samples", fixed.len());
        assert!(same >= fixed.len() - 1, "{name}: {} of {} samples differ", fixed.len() - same, fixed.len());
    }

    // The tch backend draws the same samples (same seeding + sampler, logits equal to ~1e-5).
    let samples_tch = run.join("samples/math500-tch");
    let mut c = bin();
    common(&mut c);
    run_ok(c.args(["--backend", "tch", "--model"]).arg(&hf).arg("--out").arg(&samples_tch));
    let a: Vec<String> = recs.iter().map(|r| r["text"].to_string()).collect();
    let t: Vec<String> = records(&samples_tch).iter().map(|r| r["text"].to_string()).collect();
    let same = a.iter().zip(&t).filter(|(x, y)| x == y).count();
    eprintln!("ort vs tch: {same}/{} identical samples", a.len());
    assert!(same >= a.len() - 1, "ORT and tch samples differ in {} of {}", a.len() - same, a.len());
}
