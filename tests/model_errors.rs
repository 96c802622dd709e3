//! Bad inputs give one-line, specific `ModelError`s.

use rlvr_decomp::model::{self, DType, ModelError};
use std::path::{Path, PathBuf};
use tch::Device;

fn fixture_dir(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("golden/fixtures/tiny-{arch}"))
}

/// Copies a fixture checkpoint into a temp dir so it can be broken.
fn copy_fixture(arch: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_dir(arch)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    tmp
}

fn load_err(dir: &Path) -> ModelError {
    match model::load_model(dir, Device::Cpu, DType::F32) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error message should be one line: {msg:?}");
            eprintln!("error: {msg}");
            e
        }
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn missing_shard() {
    let tmp = copy_fixture("qwen2");
    let lm = model::load_model(tmp.path(), Device::Cpu, DType::F32).unwrap();
    let out = tmp.path().join("sharded");
    let opts = model::SaveOptions { max_shard_bytes: 100_000, ..Default::default() };
    lm.save(&out, &opts).unwrap();
    // the shard count depends on tensor sizes: remove whichever file is the second shard
    let second = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("model-00002-of-"))
        .expect("a sharded checkpoint with at least 2 shards");
    std::fs::remove_file(&second).unwrap();
    let e = load_err(&out);
    assert!(matches!(e, ModelError::MissingShard { .. }), "{e:?}");
    assert!(e.to_string().contains("model-00002-of-"), "{e}");
}

#[test]
fn no_weights_at_all() {
    let tmp = copy_fixture("qwen3");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    assert!(matches!(load_err(tmp.path()), ModelError::NoWeights(_)));
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let tmp = copy_fixture("qwen2");
    edit_config(tmp.path(), |v| v["intermediate_size"] = 96.into());
    let e = load_err(tmp.path());
    match &e {
        ModelError::ShapeMismatch { name, expected, found } => {
            assert!(name.contains("mlp"), "{name}");
            assert!(expected.contains(&96) && found.contains(&128), "{expected:?} {found:?}");
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("model.layers.0.mlp.down_proj.weight") && msg.contains("[64, 128]") && msg.contains("[64, 96]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor() {
    let tmp = copy_fixture("qwen3");
    // qwen3 fixture is tied; untying it requires lm_head.weight, which is not in the file
    edit_config(tmp.path(), |v| v["tie_word_embeddings"] = false.into());
    let e = load_err(tmp.path());
    assert!(matches!(&e, ModelError::MissingTensor { name, .. } if name == "lm_head.weight"), "{e:?}");
}

#[test]
fn unknown_architecture() {
    let tmp = copy_fixture("qwen2");
    edit_config(tmp.path(), |v| v["architectures"] = serde_json::json!(["MistralForCausalLM"]));
    let e = load_err(tmp.path());
    assert!(matches!(&e, ModelError::UnknownArchitecture(a) if a == "MistralForCausalLM"), "{e:?}");
}

/// Llama options we do not implement: biases on the MLP, RoPE scalings other than Llama 3.1's; and a
/// `llama3` scaling missing a field names it.
#[test]
fn unsupported_llama_options_are_errors() {
    for (key, val) in [
        ("mlp_bias", serde_json::json!(true)),
        ("rope_parameters", serde_json::json!({"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0})),
        ("rope_scaling", serde_json::json!({"rope_type": "dynamic", "factor": 2.0})),
    ] {
        let tmp = copy_fixture("llama");
        edit_config(tmp.path(), |v| v[key] = val.clone());
        let e = load_err(tmp.path());
        assert!(matches!(e, ModelError::UnsupportedOption(_)), "{key}: {e:?}");
        assert!(e.to_string().contains(key), "{e}");
    }
    let tmp = copy_fixture("llama3");
    edit_config(tmp.path(), |v| {
        v["rope_parameters"].as_object_mut().unwrap().remove("low_freq_factor");
    });
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::InvalidConfig { .. }) && e.to_string().contains("low_freq_factor"), "{e:?}");
}

#[test]
fn unsupported_options_are_errors() {
    for (key, val) in [
        ("use_sliding_window", serde_json::json!(true)),
        ("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0})),
        ("rope_parameters", serde_json::json!({"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
        ("hidden_act", serde_json::json!("gelu")),
    ] {
        let tmp = copy_fixture("qwen2");
        edit_config(tmp.path(), |v| v[key] = val.clone());
        let e = load_err(tmp.path());
        assert!(matches!(e, ModelError::UnsupportedOption(_)), "{key}: {e:?}");
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn config_not_json() {
    let tmp = copy_fixture("qwen2");
    std::fs::write(tmp.path().join("config.json"), "{ this is not json").unwrap();
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::InvalidJson { .. }), "{e:?}");
    assert!(e.to_string().contains("config.json"), "{e}");
}

#[test]
fn missing_config_field() {
    let tmp = copy_fixture("qwen2");
    edit_config(tmp.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::InvalidConfig { .. }) && e.to_string().contains("hidden_size"), "{e:?}");
}

#[test]
fn dtype_not_supported_on_device() {
    match model::load_model(&fixture_dir("qwen2"), Device::Cpu, DType::F16) {
        Err(e @ ModelError::DtypeNotSupported { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("f16") && msg.contains("cpu"), "{msg}");
        }
        Err(e) => panic!("expected DtypeNotSupported, got {e:?}"),
        Ok(_) => panic!("f16 on cpu should be rejected"),
    }
    // bf16 on CPU is fine
    model::load_model(&fixture_dir("qwen2"), Device::Cpu, DType::BF16).unwrap();
}

#[test]
fn cuda_requested_without_gpu() {
    if tch::Cuda::is_available() {
        return; // nothing to test on a GPU machine
    }
    let e = model::parse_device("cuda").unwrap_err();
    assert!(matches!(e, ModelError::DeviceUnavailable(_)), "{e:?}");
    assert!(matches!(model::parse_device("tpu"), Err(ModelError::BadInput(_))));
}

#[test]
fn bad_input_ids_shape() {
    let lm = model::load_model(&fixture_dir("qwen2"), Device::Cpu, DType::F32).unwrap();
    let x = tch::Tensor::from_slice(&[1i64, 2, 3]); // 1-D: missing batch dim
    let e = lm.model.forward(&x, None, None).unwrap_err();
    assert!(matches!(e, ModelError::BadInput(_)), "{e:?}");
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let tmp = copy_fixture("qwen2");
    let lm = model::load_model(tmp.path(), Device::Cpu, DType::F32).unwrap();
    tch::no_grad(|| {
        let w = lm.vs.variables()["model.layers.1.self_attn.k_proj.weight"].shallow_clone();
        let _ = w.get(0).get(3).fill_(f64::NAN);
    });
    let bad = tmp.path().join("nan");
    lm.save(&bad, &Default::default()).unwrap();
    let e = load_err(&bad);
    assert!(
        matches!(&e, ModelError::NonFiniteWeights { name, .. } if name == "model.layers.1.self_attn.k_proj.weight"),
        "{e:?}"
    );
    let e = rlvr_decomp::export::export(&bad, &tmp.path().join("onnx"), &Default::default()).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight") && e.contains("non-finite"), "{e}");
}

#[test]
fn sizes_are_checked_before_allocating() {
    // A vocabulary of 10^12 would need terabytes: refused before the var store is built.
    let tmp = copy_fixture("qwen2");
    edit_config(tmp.path(), |v| v["vocab_size"] = 1_000_000_000_000i64.into());
    let e = load_err(tmp.path());
    assert!(matches!(e, ModelError::OutOfMemory { .. }), "{e:?}");
    assert!(e.to_string().contains("parameters (f32)"), "{e}");

    let lm = model::load_model(&fixture_dir("qwen2"), Device::Cpu, DType::F32).unwrap();
    let req = |n: usize| {
        (0..n)
            .map(|i| model::GenRequest { prompt: vec![1, 2, 3], problem_id: 0, sample_idx: i as u64 })
            .collect::<Vec<_>>()
    };
    let params = |max_new_tokens| model::SamplingParams { max_new_tokens, ..Default::default() };
    // The fixture's context is 256 positions: more new tokens than that is refused, and a row
    // whose prompt + max_new_tokens passes the context stops at its end.
    let e = model::generate(&lm.model, &req(1), &params(100_000_000_000), 0, 0).unwrap_err();
    assert!(matches!(e, ModelError::BadInput(_)) && e.to_string().contains("exceeds the model's context"), "{e}");
    let g = model::generate(&lm.model, &req(1), &params(256), 0, 0).unwrap();
    assert_eq!(g[0].tokens.len(), 256 - 3, "stopped at the end of the context");
    let long = vec![model::GenRequest { prompt: vec![1; 256], problem_id: 0, sample_idx: 0 }];
    let e = model::generate(&lm.model, &long, &params(4), 0, 0).unwrap_err();
    assert!(e.to_string().contains("leaves no room"), "{e}");
    let e = model::generate(&lm.model, &req(100_000_000), &params(8), 0, 0).unwrap_err();
    assert!(matches!(e, ModelError::OutOfMemory { .. }) && e.to_string().contains("KV cache"), "{e}");
    let neg = model::SamplingParams { temperature: -1.0, ..params(4) };
    let e = model::generate(&lm.model, &req(1), &neg, 0, 0).unwrap_err();
    assert!(e.to_string().contains("temperature must be finite and >= 0"), "{e}");
}

#[test]
fn non_finite_logits_are_found_in_unfinished_rows_only() {
    use rlvr_decomp::model::generate::non_finite_row;
    let logits = [0.0, 1.0, f32::NEG_INFINITY, 2.0, f32::NAN, 0.0, 1.0, f32::INFINITY, 0.0];
    assert_eq!(non_finite_row(&logits, 3, &[false, false, false]), Some(1));
    assert_eq!(non_finite_row(&logits, 3, &[false, true, false]), Some(2));
    assert_eq!(non_finite_row(&logits, 3, &[false, true, true]), None);
}
