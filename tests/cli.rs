//! The binary end to end: prompt, passk, datasets — and one-line errors on bad input.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr-decomp"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("spawn rlvr-decomp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// stderr's `error:` line, asserting it is the only line that says so.
fn one_error_line(stderr: &str) -> String {
    let errs: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errs.len(), 1, "expected one error line, got: {stderr}");
    errs[0].to_string()
}

#[test]
fn prompt_prints_rendered_prompt_and_token_count() {
    let (ok, out, err) = run(&["prompt", "--dataset", "math500", "--template", "qwen3", "--index", "0"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("<|im_start|>system\nYou are a helpful assistant."), "{out}");
    assert!(out.contains("Convert the point $(0,3)$"), "{out}");
    assert!(out.contains("<think>\n\n</think>\n"), "{out}");
    assert!(out.contains("| 86 tokens"), "{out}");
}

#[test]
fn prompt_index_out_of_range() {
    let (ok, _, err) = run(&["prompt", "--dataset", "aime2025", "--index", "30"]);
    assert!(!ok);
    let line = one_error_line(&err);
    assert!(line.contains("--index 30") && line.contains("30 problems"), "{line}");
}

#[test]
fn passk_counts_and_verdict_lists_with_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"problem_id\": \"p1\", \"n\": 6, \"c\": 3}\n\
         {\"problem_id\": 2, \"correct\": [true, false, false, false, false, false]}\n\
         {\"problem_id\": \"p3\", \"correct\": true}\n{\"problem_id\": \"p3\", \"correct\": false}\n\
         {\"problem_id\": \"p3\", \"correct\": false}\n{\"problem_id\": \"p3\", \"correct\": false}\n\
         {\"problem_id\": \"p3\", \"correct\": false}\n{\"problem_id\": \"p3\", \"correct\": false}\n",
    )
    .unwrap();
    let out = dir.path().join("sub/passk.json");
    let (ok, stdout, err) =
        run(&["passk", "--input", input.to_str().unwrap(), "--k", "1,2,4", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("3 problems, 18 samples"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["n_problems"], 3);
    let p1 = (0.4999999999999999 + 1.0 / 6.0 + 1.0 / 6.0) / 3.0;
    assert!((v["pass_at_k"]["1"].as_f64().unwrap() - p1).abs() < 1e-12, "{v}");
    assert_eq!(v["per_problem"]["2"]["c"], 1);
    assert_eq!(v["per_problem"]["p3"]["n"], 6);
    let keys: Vec<&String> = v["pass_at_k"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["1", "2", "4"]);

    // Default k grid: powers of two up to the smallest n (6 → 1, 2, 4).
    let (ok, stdout, _) = run(&["passk", "--input", input.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains("     4  ") && !stdout.contains("     8  "), "{stdout}");
}

#[test]
fn passk_bad_k_bad_line_missing_file_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"problem_id\": \"p1\", \"n\": 4, \"c\": 1}\n").unwrap();
    let inp = input.to_str().unwrap();

    let (ok, _, err) = run(&["passk", "--input", inp, "--k", "1,zero"]);
    assert!(!ok);
    assert!(one_error_line(&err).contains("k must be a positive integer, got \"zero\""), "{err}");

    let (ok, _, err) = run(&["passk", "--input", inp, "--k", "8"]);
    assert!(!ok);
    assert!(one_error_line(&err).contains("pass@8 is undefined"), "{err}");

    std::fs::write(
        &input,
        "{\"problem_id\": \"p1\", \"n\": 4, \"c\": 1}\n{\"problem_id\": \"p2\", \"n\": 2, \"c\": 5}\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["passk", "--input", inp]);
    assert!(!ok);
    let line = one_error_line(&err);
    assert!(line.contains("in.jsonl, line 2") && line.contains("c=5 exceeds n=2"), "{line}");

    let (ok, _, err) = run(&["passk", "--input", "/nonexistent.jsonl"]);
    assert!(!ok);
    assert!(one_error_line(&err).contains("/nonexistent.jsonl"), "{err}");
}

#[test]
fn datasets_missing_dir_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&["datasets", "--dataset", "amc23", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!ok);
    let line = one_error_line(&err);
    assert!(line.contains("amc23/test.parquet") && line.contains("not found"), "{line}");
}

#[test]
fn datasets_summary_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.json");
    let (ok, _, err) =
        run(&["datasets", "--dataset", "aime2025", "--template", "qwen3", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v[0]["rows"], 30);
    assert!(v[0]["prompt_tokens"]["qwen3"]["max"].as_u64().unwrap() > 100);
}

#[test]
fn env_reports_runtimes_and_a_missing_ort_says_how_to_fix() {
    let out = bin().arg("env").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["onnxruntime"]["ok"], true, "{v}");
    assert!(v["libtorch"]["cuda_available"].is_boolean());

    let out = bin().arg("env").env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["onnxruntime"]["ok"], false);
    let msg = v["onnxruntime"]["error"].as_str().unwrap();
    assert!(msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("make setup"), "{msg}");
}

fn fixture(arch: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("golden/fixtures/tiny-{arch}"))
}

/// Exit status 1 with one error line (never a panic's 101 or an abort's 134).
fn clean_error(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("spawn rlvr-decomp");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: expected exit 1, got {:?}: {err}", out.status);
    one_error_line(&err)
}

#[test]
fn impossible_sizes_and_bad_flags_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("qwen2")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = 1_000_000_000_000i64.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let big = tmp.path().to_str().unwrap();
    let line = clean_error(&["logits", "--model", big, "--input-ids", "1,2"]);
    assert!(line.contains("the model needs") && line.contains("available"), "{line}");

    let m = fixture("qwen2");
    let m = m.to_str().unwrap();
    let line = clean_error(&["generate", "--model", m, "--input-ids", "1,2", "--max-new-tokens", "100000000000"]);
    assert!(line.contains("max_new_tokens 100000000000 exceeds the model's context"), "{line}");
    let line = clean_error(&["generate", "--model", m, "--input-ids", "1,2", "--n", "100000000"]);
    assert!(line.contains("for 100000000 rows"), "{line}");
    let line = clean_error(&["generate", "--model", m, "--input-ids", "1,2", "--temperature", "-1"]);
    assert!(line.contains("temperature must be finite and >= 0"), "{line}");
    let line = clean_error(&["generate", "--model", m, "--input-ids", "1,2", "--n", "0"]);
    assert!(line.contains("--n must be positive"), "{line}");
    // An OS error is printed once, not once per layer of context.
    let line = clean_error(&["logits", "--model", "/nonexistent-model-dir", "--input-ids", "1"]);
    assert_eq!(line.matches("os error 2").count(), 1, "{line}");
}

/// `generate --profile-ops` profiles the chosen decode steps with libtorch's profiler in both
/// loops: a Chrome trace and a per-op summary (self times that add up, the attention and LM-head
/// matmuls among the ops), the same tokens as without profiling; bad step ranges and a range the
/// generation never reaches are one-line errors.
#[test]
fn generate_profiles_decode_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("qwen2");
    let m = m.to_str().unwrap();
    let base = ["generate", "--model", m, "--input-ids", "5,17,99,230", "--n", "6", "--max-new-tokens", "20"];
    let gen = |extra: &[&str]| {
        let (ok, out, err) = run(&[&base[..], &["--ignore-eos", "--top-k", "20"], extra].concat());
        assert!(ok, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        (j["samples"].clone(), err)
    };
    let (plain, _) = gen(&[]);
    for decode in ["dynamic", "static"] {
        let prefix = tmp.path().join(format!("ops-{decode}"));
        let p = prefix.to_str().unwrap();
        let (samples, err) = gen(&["--decode", decode, "--profile-ops", p, "--profile-steps", "3:7"]);
        assert_eq!(samples, plain, "{decode}: profiling changed the tokens");
        assert!(err.contains("profiled decode steps 3..7 (4)"), "{err}");
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{p}.json")).unwrap()).unwrap();
        let s = &j["summary"];
        assert_eq!(s["steps"], 4);
        let ops = s["host_ops"].as_array().unwrap();
        let names: Vec<&str> = ops.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"aten::mm") && names.contains(&"aten::topk"), "{decode}: {names:?}");
        let share: f64 = ops.iter().map(|r| r["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-9, "{share}");
        assert!(s["host_ms_per_step"].as_f64().unwrap() > 0.0);
        assert_eq!(s["device_ops"].as_array().unwrap().len(), 0, "no CUDA here");
        let trace: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{p}.trace.json")).unwrap()).unwrap();
        assert!(!trace["traceEvents"].as_array().unwrap().is_empty());
    }
    let p = tmp.path().join("never");
    let p = p.to_str().unwrap();
    for (steps, want) in [("0:4", "need 1 <= FIRST < END"), ("5:5", "need 1 <= FIRST < END"), ("x", "FIRST:END")] {
        let (ok, _, err) = run(&[&base[..], &["--profile-ops", p, "--profile-steps", steps]].concat());
        assert!(!ok && err.contains(want), "{steps}: {err}");
    }
    let line = clean_error(&[&base[..], &["--ignore-eos", "--profile-ops", p, "--profile-steps", "30:40"]].concat());
    assert!(line.contains("no decode step 30 ran"), "{line}");
}
