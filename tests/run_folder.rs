//! Run folders you can trust (the run-folder contract, `src/rundir.rs`, as `sample` and `eval`
//! use it): one writer at a time, content fingerprints for models and problem selections,
//! manifest-checked chunks on resume and on evaluation. Each test reproduces a case that once
//! produced a mixed folder or a silently stale result.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CFG: fn() -> serde_json::Value = || {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "vocab_size": 151936, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 4096, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float32"
    })
};

/// A random tiny Qwen3 (real vocabulary size) with weights seeded by `seed`, exported to `onnx`.
fn export_random(root: &Path, seed: i64, onnx: &Path) {
    let hf = root.join(format!("hf-{seed}"));
    common::save_random_hf_model(&hf, &CFG(), seed);
    rlvr_decomp::export::export(&hf, onnx, &Default::default()).unwrap();
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rlvr-decomp"))
}

/// `sample` on 4 problems × 4 samples in chunks of 2; `extra` (flag, value) pairs replace the
/// defaults of the same flag or add to them.
fn sample_cmd(onnx: &Path, out: &Path, temperature: &str, extra: &[&str]) -> Command {
    let mut flags: Vec<(String, String)> = [
        ("--dataset", "math500"),
        ("--limit", "4"),
        ("--k", "4"),
        ("--batch", "2"),
        ("--max-new-tokens", "12"),
        ("--template", "qwen2.5-math"),
        ("--seed", "5"),
        ("--threads", "1"),
        ("--temperature", temperature),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for kv in extra.chunks(2) {
        match flags.iter_mut().find(|(f, _)| f == kv[0]) {
            Some(slot) => slot.1 = kv[1].to_string(),
            None => flags.push((kv[0].to_string(), kv[1].to_string())),
        }
    }
    let mut c = bin();
    c.arg("sample");
    for (f, v) in flags {
        c.arg(format!("{f}={v}"));
    }
    c.arg("--onnx").arg(onnx).arg("--out").arg(out).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed: {}", stderr(&o));
    stderr(&o)
}

/// The `error:` line of a failed run (exit status 1, exactly one such line).
fn err_line(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a clean error (exit 1), got {:?}: {e}", o.status);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {e}");
    lines[0].to_string()
}

/// Every record line of every chunk, sorted.
fn sorted_lines(dir: &Path) -> Vec<String> {
    let mut lines = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n.starts_with("chunk-") && n.ends_with(".jsonl") && p.is_file() {
            lines.extend(std::fs::read_to_string(&p).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn chunk(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("chunk-{i:06}.jsonl"))
}

#[test]
fn concurrent_starts_never_mix_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let mut reference = std::collections::HashMap::new();
    for t in ["0.7", "1.0"] {
        let dir = tmp.path().join(format!("ref-{t}"));
        ok(sample_cmd(&onnx, &dir, t, &[]).output().unwrap());
        reference.insert(t, sorted_lines(&dir));
    }
    let (mut lock_refusals, mut settings_refusals) = (0, 0);
    for trial in 0..6 {
        // Different settings, started together: never both, never a mix.
        let out = tmp.path().join(format!("race-{trial}"));
        let a = sample_cmd(&onnx, &out, "0.7", &[]).spawn().unwrap();
        let b = sample_cmd(&onnx, &out, "1.0", &[]).spawn().unwrap();
        let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert!(!(oa.status.success() && ob.status.success()), "both runs succeeded on one folder");
        let (winner, loser, t) = if oa.status.success() { (&oa, &ob, "0.7") } else { (&ob, &oa, "1.0") };
        assert!(winner.status.success(), "neither run succeeded: {} / {}", stderr(&oa), stderr(&ob));
        let line = err_line(loser);
        if line.contains("in use by another process") {
            assert!(line.contains("pid ") && line.contains("rlvr-decomp"), "the holder is not named: {line}");
            lock_refusals += 1;
        } else {
            assert!(line.contains("different settings") && line.contains("temperature"), "{line}");
            settings_refusals += 1;
        }
        let settings: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("settings.json")).unwrap()).unwrap();
        assert_eq!(settings["temperature"].as_f64().unwrap(), t.parse::<f64>().unwrap());
        assert_eq!(sorted_lines(&out), reference[t], "the folder holds other samples than the winner's");

        // Equal settings, started together: one computes, the other is refused or finds it done.
        let out = tmp.path().join(format!("same-{trial}"));
        let a = sample_cmd(&onnx, &out, "1.0", &[]).spawn().unwrap();
        let b = sample_cmd(&onnx, &out, "1.0", &[]).spawn().unwrap();
        let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        for o in [&oa, &ob] {
            if !o.status.success() {
                assert!(err_line(o).contains("in use by another process"), "{}", stderr(o));
            }
        }
        assert!(oa.status.success() || ob.status.success());
        assert_eq!(sorted_lines(&out), reference["1.0"]);
    }
    eprintln!("refused by the lock {lock_refusals} times, by the settings check {settings_refusals} times");
}

#[test]
fn a_model_is_its_content_not_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let out = tmp.path().join("samples");
    ok(sample_cmd(&onnx, &out, "1.0", &["--limit", "2"]).output().unwrap());
    // Other weights of the same shape exported into the same folder: a resume is refused.
    export_random(tmp.path(), 1, &onnx);
    let line = err_line(&sample_cmd(&onnx, &out, "1.0", &["--limit", "2"]).output().unwrap());
    assert!(line.contains("different settings") && line.contains("model: stored \"onnx:"), "{line}");
    // Every weight scaled in place (same size): the export no longer matches its fingerprint.
    let data = onnx.join("model.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    for w in bytes.chunks_exact_mut(4) {
        let v = f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * 2.0;
        w.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&data, bytes).unwrap();
    let line = err_line(&sample_cmd(&onnx, &tmp.path().join("fresh"), "1.0", &[]).output().unwrap());
    assert!(line.contains("model.onnx.data does not match fingerprint.json") && line.contains("sha256"), "{line}");
    // An export without its fingerprint (interrupted, or made by an older version) is refused.
    std::fs::remove_file(onnx.join("fingerprint.json")).unwrap();
    let line = err_line(&sample_cmd(&onnx, &tmp.path().join("fresh"), "1.0", &[]).output().unwrap());
    assert!(line.contains("no fingerprint.json"), "{line}");
}

#[test]
fn an_edited_problem_or_gold_answer_is_a_different_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let math = tmp.path().join("math");
    std::fs::create_dir_all(math.join("math_oai")).unwrap();
    let src = rlvr_decomp::paths::math_dir(None).join("math_oai/test.jsonl");
    let text = std::fs::read_to_string(&src).unwrap();
    std::fs::write(math.join("math_oai/test.jsonl"), &text).unwrap();
    let out = tmp.path().join("samples");
    let math_flag = ["--math-dir", math.to_str().unwrap()];
    ok(sample_cmd(&onnx, &out, "1.0", &math_flag).output().unwrap());
    // Change the first problem's gold answer, keeping its id.
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut row: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    row["answer"] = "999".into();
    lines[0] = row.to_string();
    std::fs::write(math.join("math_oai/test.jsonl"), lines.join("\n") + "\n").unwrap();
    let line = err_line(&sample_cmd(&onnx, &out, "1.0", &math_flag).output().unwrap());
    assert!(line.contains("different settings") && line.contains("selection_sha256"), "{line}");
}

#[test]
fn damaged_chunks_are_moved_aside_and_redrawn_and_eval_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let reference = tmp.path().join("ref/samples");
    ok(sample_cmd(&onnx, &reference, "1.0", &[]).output().unwrap());
    let want = sorted_lines(&reference);
    assert_eq!(want.len(), 16);

    let out = tmp.path().join("run/samples");
    copy_dir(&reference, &out);
    std::fs::write(chunk(&out, 0), "").unwrap(); // emptied
    let c1 = std::fs::read(chunk(&out, 1)).unwrap();
    std::fs::write(chunk(&out, 1), &c1[..c1.len() / 2]).unwrap(); // truncated
    let c2 = std::fs::read(chunk(&out, 2)).unwrap();
    std::fs::write(chunk(&out, 2), vec![b'x'; c2.len()]).unwrap(); // garbage of the same size
    std::fs::remove_file(chunk(&out, 3)).unwrap();
    std::fs::create_dir(chunk(&out, 3)).unwrap(); // a folder in its place
                                                  // A verdict flipped by hand (valid JSON, same size).
    let c4 = std::fs::read_to_string(chunk(&out, 4)).unwrap();
    let flipped = if c4.contains("\"correct\":false") {
        c4.replacen("\"correct\":false", "\"correct\":true ", 1)
    } else {
        c4.replacen("\"correct\":true", "\"correct\":false", 1).replacen("\"correct\":false,", "\"correct\":false", 1)
    };
    assert_ne!(flipped, c4);
    std::fs::write(chunk(&out, 4), flipped).unwrap();

    // eval refuses rather than scoring damaged or edited chunks.
    let o = bin().args(["eval", "--samples"]).arg(&out).output().unwrap();
    let line = err_line(&o);
    assert!(line.contains("chunk-000000.jsonl") && line.contains("does not match its manifest entry"), "{line}");

    // The resume moves every bad chunk aside, warns, and redraws exactly the reference records.
    let o = sample_cmd(&onnx, &out, "1.0", &[]).output().unwrap();
    let e = ok(o);
    assert_eq!(e.matches("moved to").count(), 5, "{e}");
    assert_eq!(sorted_lines(&out), want);
    assert_eq!(std::fs::read_dir(out.join("rejected")).unwrap().count(), 5);
    ok(bin().args(["eval", "--samples"]).arg(&out).output().unwrap());

    // Results without settings are refused, by sample and by eval, never silently mixed.
    let bare = tmp.path().join("bare/samples");
    copy_dir(&reference, &bare);
    std::fs::remove_file(bare.join("settings.json")).unwrap();
    let line = err_line(&sample_cmd(&onnx, &bare, "0.5", &[]).output().unwrap());
    assert!(line.contains("no settings.json"), "{line}");
    let line = err_line(&bin().args(["eval", "--samples"]).arg(&bare).output().unwrap());
    assert!(line.contains("no settings.json"), "{line}");
}

#[test]
fn eval_refuses_two_folders_of_one_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let (a, b) = (tmp.path().join("r/samples/a"), tmp.path().join("r/samples/b"));
    ok(sample_cmd(&onnx, &a, "1.0", &["--limit", "1"]).output().unwrap());
    ok(sample_cmd(&onnx, &b, "0.7", &["--limit", "1"]).output().unwrap());
    let o = bin().args(["eval", "--samples"]).arg(&a).arg(&b).arg("--out").arg(tmp.path().join("ev")).output().unwrap();
    let line = err_line(&o);
    assert!(line.contains("both hold samples of math500"), "{line}");
}

#[test]
fn nonsensical_sampling_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("onnx");
    export_random(tmp.path(), 0, &onnx);
    let out = tmp.path().join("s");
    for (flags, want) in [
        (vec!["--temperature", "-0.5"], "temperature must be >= 0"),
        (vec!["--top-p", "0"], "top-p must be in (0, 1]"),
        (vec!["--max-new-tokens", "0"], "max-new-tokens must be positive"),
        (vec!["--k", "0"], "k must be positive"),
        (vec!["--batch", "0"], "batch must be positive"),
        (vec!["--max-new-tokens", "100000000000"], "exceeds the model's context"),
        (vec!["--batch", "100000000", "--k", "100000000"], "needs"),
    ] {
        let mut c = sample_cmd(&onnx, &out, "1.0", &flags);
        let line = err_line(&c.output().unwrap());
        assert!(line.contains(want), "{flags:?}: {line}");
    }
}
