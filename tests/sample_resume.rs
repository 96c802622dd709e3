//! `rlvr-decomp sample` is resumable and loss-free: killed (SIGKILL) at random points and
//! rerun until it finishes, it ends with exactly the records of an uninterrupted run
//! (same set, byte for byte, after sorting) — with fixed batches and with `--continuous`;
//! rerunning with other settings is refused.

mod common;

use rlvr_decomp::export::{ExportOptions, GraphKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small random Qwen3 with the real vocabulary size (so the Qwen tokenizer's ids fit),
/// saved by our tch code, then exported to ONNX. Returns the export dir.
fn random_model_export(root: &Path) -> PathBuf {
    random_model_export_as(root, 8, GraphKind::Standard)
}

/// The same model with heads of `head_dim` (the fused graph needs a multiple of 16), exported
/// as `graph`.
fn random_model_export_as(root: &Path, head_dim: i64, graph: GraphKind) -> PathBuf {
    let cfg_json = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "vocab_size": 151936, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": head_dim,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 4096, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float32"
    });
    let hf = root.join("hf");
    common::save_random_hf_model(&hf, &cfg_json, 0);
    let onnx = root.join("onnx");
    rlvr_decomp::export::export(&hf, &onnx, &ExportOptions { graph, ..Default::default() }).unwrap();
    onnx
}

fn sample_cmd(onnx: &Path, out: &Path, temperature: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rlvr-decomp"));
    c.args(["sample", "--dataset", "math500", "--limit", "4", "--k", "4", "--batch", "2", "--max-new-tokens", "16"])
        .args(["--template", "qwen2.5-math", "--top-p", "0.95", "--seed", "11", "--threads", "1"])
        .arg("--temperature")
        .arg(temperature)
        .arg("--onnx")
        .arg(onnx)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Every record line of every chunk, sorted.
fn sorted_lines(dir: &Path) -> Vec<String> {
    let mut lines = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n.starts_with("chunk-") && n.ends_with(".jsonl") {
            lines.extend(std::fs::read_to_string(&p).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

#[test]
fn kill9_resume_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = random_model_export(tmp.path());

    let (want, run_ms) = reference_run(&onnx, &tmp.path().join("ref"));

    let out = tmp.path().join("killed");
    kill_until_done(&onnx, &out, &[], &want, run_ms);
    // no temporary files left behind once a run completes
    let o = sample_cmd(&onnx, &out, "1.0").output().unwrap();
    assert!(o.status.success());
    assert_eq!(sorted_lines(&out), want, "a rerun of a finished run changed it");

    // different settings are refused, naming the difference
    let o = sample_cmd(&onnx, &out, "0.5").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different settings") && err.contains("temperature"), "unexpected error: {err}");

    // The same with continuous batching: chunks commit whole as their last pair finishes, so the
    // killed-and-resumed run ends with the records of the uninterrupted fixed-batch run.
    kill_until_done(&onnx, &tmp.path().join("killed-continuous"), &["--continuous"], &want, run_ms);
}

/// The fused export (pre-allocated cache updated in place, slots refilled as rows finish) is
/// just as resumable, with fixed batches and with `--continuous`.
#[test]
fn kill9_resume_fused_export_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = random_model_export_as(tmp.path(), 16, GraphKind::Fused);
    let (want, run_ms) = reference_run(&onnx, &tmp.path().join("ref"));
    kill_until_done(&onnx, &tmp.path().join("killed"), &[], &want, run_ms);
    kill_until_done(&onnx, &tmp.path().join("killed-continuous"), &["--continuous"], &want, run_ms);
}

/// An uninterrupted run into `out`: its sorted records and how long it took (ms).
fn reference_run(onnx: &Path, out: &Path) -> (Vec<String>, u64) {
    let t0 = std::time::Instant::now();
    let o = sample_cmd(onnx, out, "1.0").output().unwrap();
    let run_ms = t0.elapsed().as_millis() as u64;
    assert!(o.status.success(), "reference run failed: {}", String::from_utf8_lossy(&o.stderr));
    let want = sorted_lines(out);
    assert_eq!(want.len(), 16);
    (want, run_ms)
}

/// Runs `sample` (with `extra` flags) into `out`, SIGKILLing it at pseudo-random points and
/// rerunning until it finishes; checks every partial state and the final records against `want`.
/// `run_ms`: how long an uninterrupted run took here, so that the kills land inside runs on any
/// machine (a fixed delay can fall before the first chunk on a slow one and test nothing).
fn kill_until_done(onnx: &Path, out: &Path, extra: &[&str], want: &[String], run_ms: u64) {
    // Deterministic pseudo-random kill delays (xorshift), spread over a run's lifetime.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut kills = 0;
    let mut finished = false;
    let mut progress = vec![];
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = run_ms * (20 + x % 60) / 100;
        let mut child = sample_cmd(onnx, out, "1.0").args(extra).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        // partial state is always a subset of the reference
        let got = sorted_lines(out);
        progress.push(got.len());
        assert!(got.iter().all(|l| want.binary_search(l).is_ok()), "a partial run wrote a record not in the reference");
    }
    if !finished {
        let o = sample_cmd(onnx, out, "1.0").args(extra).output().unwrap();
        assert!(o.status.success(), "final resume failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!(
        "{extra:?}: killed {kills} times before the run completed; records on disk after each kill: {progress:?}"
    );
    assert!(kills > 0, "never killed: make the run longer");
    assert_eq!(sorted_lines(out), want, "{extra:?}: resumed run differs from the uninterrupted one");
}

#[test]
fn store_commits_atomically_and_cleans_temp_files() {
    use rlvr_decomp::eval::verify::{Mode, Tolerance};
    use rlvr_decomp::prompt::Template;
    use rlvr_decomp::sample::{BackendKind, FinishReason, SampleRecord, SampleSettings, SampleStore, VerifierSettings};
    let tmp = tempfile::tempdir().unwrap();
    let settings = SampleSettings {
        dataset: rlvr_decomp::data::DatasetName::Known(rlvr_decomp::data::Dataset::Math500),
        num_problems: 1,
        selection_sha256: "x".into(),
        k: 2,
        batch: 2,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 4,
        seed: 0,
        template: Template::Qwen3,
        tokenizer_sha256: "t".into(),
        stop_ids: vec![],
        pad_id: 0,
        backend: BackendKind::Ort,
        model: "m".into(),
        verifier: VerifierSettings { mode: Mode::Lenient, tolerance: Tolerance::MathVerify },
    };
    let mut s = SampleStore::open_or_create(tmp.path(), settings.clone()).unwrap();
    std::fs::write(tmp.path().join(".chunk-000001.jsonl.999.tmp"), "partial").unwrap();
    let rec = SampleRecord {
        problem_id: "p".into(),
        sample_index: 0,
        text: "t".into(),
        answer: None,
        correct: false,
        gold: "1".into(),
        num_tokens: 1,
        finish_reason: FinishReason::Length,
        token_ids: vec![7],
    };
    s.commit_chunk(0, std::slice::from_ref(&rec)).unwrap();
    drop(s);
    let s = SampleStore::open_or_create(tmp.path(), settings.clone()).unwrap();
    assert!(!tmp.path().join(".chunk-000001.jsonl.999.tmp").exists());
    assert_eq!(s.committed_chunks().into_iter().collect::<Vec<_>>(), vec![0]);
    drop(s);
    let (stored, records) = SampleStore::read_verified(tmp.path()).unwrap();
    assert_eq!((stored, records), (settings.clone(), vec![rec]));
    let other = SampleSettings { seed: 1, ..settings };
    let e = SampleStore::open_or_create(tmp.path(), other).err().unwrap().to_string();
    assert!(e.contains("seed: stored 0, requested 1"), "{e}");
}
