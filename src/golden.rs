//! Golden outputs: what CI checks when a change might move a result.
//!
//! `golden/<profile>/golden.json` holds, for one reproduction profile:
//!
//! * **hashes** — SHA-256 of the canonical bytes of every deterministic stage: the generated task
//!   data, tokenization (the mini tokenizer on every held-out prompt; the Qwen tokenizer's prompt
//!   lengths over every dataset), verifier verdicts (MATH-500 reference solutions), pass@k from
//!   fixed correctness (`golden/inputs/passk_counts.jsonl`), and Table 1, the claims table and
//!   every figure's SVG rendered from a fixed run folder (`golden/inputs/report-run/`). These are
//!   pure functions of the code and the committed inputs, so they match bit for bit on every
//!   machine; a mismatch means the code changed what it computes.
//! * **bands** — run-dependent numbers (final pass@k per method, seed and tier at k = 1 and the
//!   largest k; final held-out entropy per method and seed) with a tolerance: training and sampling
//!   run through libtorch and ONNX Runtime kernels whose float rounding may differ between CPUs.
//!
//! Canonical bytes: JSON with sorted keys, no whitespace, floats printed with 6 decimals (−0 as 0),
//! one document per line. `rlvr-decomp golden check` recomputes everything from a run folder and
//! exits non-zero with a diff-style report naming the item, the file and the number that moved;
//! `rlvr-decomp golden bless` rewrites `golden.json` (explicit, never automatic). Provenance (seeds,
//! git commit, crate and wheel versions, device, threads) goes to `manifest.json`, outside the hashes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("{path} is missing: {hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("report from fixed inputs: {0}")]
    Report(#[from] crate::report::ReportError),
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
}

pub type Result<T, E = GoldenError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GoldenError + '_ {
    move |source| GoldenError::Io { path: path.to_path_buf(), source }
}

/// Decimals kept for floats in canonical bytes.
pub const FLOAT_DECIMALS: usize = 6;

/// Canonical text of a JSON value: sorted keys, no whitespace, floats with [`FLOAT_DECIMALS`].
pub fn canonical_json(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, s: &mut String) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                s.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                s.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let t = format!("{f:.FLOAT_DECIMALS$}");
                // −0.000000 and 0.000000 are the same number.
                if t.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
                    s.push_str(t.trim_start_matches('-'));
                } else {
                    s.push_str(&t);
                }
            }
        }
        Value::String(t) => s.push_str(&Value::String(t.clone()).to_string()),
        Value::Array(a) => {
            s.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_canonical(x, s);
            }
            s.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            s.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&Value::String(k.clone()).to_string());
                s.push(':');
                write_canonical(&o[k], s);
            }
            s.push('}');
        }
    }
}

fn read(path: &Path, hint: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            GoldenError::Missing { path: path.to_path_buf(), hint: hint.to_string() }
        } else {
            GoldenError::Io { path: path.to_path_buf(), source: e }
        }
    })
}

/// Canonical bytes of a JSONL file (each line canonicalised, order kept), optionally keeping only
/// some fields of each row.
fn canonical_jsonl(path: &Path, keep: Option<&[&str]>, hint: &str) -> Result<String> {
    let text = read(path, hint)?;
    let mut out = String::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut v: Value = serde_json::from_str(line)
            .map_err(|e| GoldenError::BadFile { path: path.to_path_buf(), msg: format!("line {}: {e}", i + 1) })?;
        if let (Some(keep), Value::Object(o)) = (keep, &mut v) {
            o.retain(|k, _| keep.contains(&k.as_str()));
        }
        out.push_str(&canonical_json(&v));
        out.push('\n');
    }
    Ok(out)
}

fn canonical_json_file(path: &Path, hint: &str) -> Result<String> {
    let text = read(path, hint)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| GoldenError::BadFile { path: path.to_path_buf(), msg: e.to_string() })?;
    Ok(canonical_json(&v) + "\n")
}

/// One hashed item: its name, the files it covers, and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashItem {
    pub sha256: String,
    /// The files (relative to the run, or to the project for fixed inputs) the bytes come from.
    pub files: Vec<String>,
}

/// A run-dependent number with its tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub value: f64,
    /// Absolute tolerance: the check passes when |new − value| ≤ tol.
    pub tol: f64,
    /// Where the number is read from (relative to the run).
    pub file: String,
}

/// `golden/<profile>/golden.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub profile: String,
    pub hashes: BTreeMap<String, HashItem>,
    pub bands: BTreeMap<String, Band>,
}

/// Tolerances of the bands, fixed when blessing (see golden/README.md for why these sizes).
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Absolute, on pass@k.
    pub pass_at_k: f64,
    /// Relative (× the blessed value, at least `entropy_floor` absolute), on held-out entropy.
    pub entropy_rel: f64,
    pub entropy_floor: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances { pass_at_k: 0.10, entropy_rel: 0.5, entropy_floor: 0.02 }
    }
}

/// The project's fixed inputs (committed under `golden/inputs/`).
pub fn inputs_dir(golden_root: &Path) -> PathBuf {
    golden_root.join("inputs")
}

/// Hashes of every deterministic stage of `run`, plus the fixed-input items.
pub fn compute_hashes(run: &Path, golden_root: &Path, claims_file: &Path) -> Result<BTreeMap<String, HashItem>> {
    let mut out = BTreeMap::new();
    let rel = |p: &Path| p.strip_prefix(run).unwrap_or(p).display().to_string();
    let mut item = |name: &str, files: Vec<String>, bytes: &[u8]| {
        out.insert(name.to_string(), HashItem { sha256: crate::rundir::sha256_hex(bytes), files });
    };

    // 1. Task data: the held-out tiers (`mini-data`).
    let mut bytes = String::new();
    let mut files = vec![];
    for tier in crate::mini::Tier::ALL {
        let p = run.join("data").join(format!("tier-{}.jsonl", tier.name()));
        bytes.push_str(&canonical_jsonl(&p, None, "the mini-data stage writes it")?);
        files.push(rel(&p));
    }
    item("task-data", files.clone(), bytes.as_bytes());

    // 2. Tokenization: the mini tokenizer itself and its ids for every held-out prompt.
    let tok_path = run.join("sft/base/tokenizer.json");
    let tok_json = canonical_json_file(&tok_path, "the sft stage writes it")?;
    let tok = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| GoldenError::Tokenizer { path: tok_path.clone(), msg: e.to_string() })?;
    let mut ids_text = String::new();
    for f in &files {
        let p = run.join(f);
        for line in read(&p, "")?.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value =
                serde_json::from_str(line).map_err(|e| GoldenError::BadFile { path: p.clone(), msg: e.to_string() })?;
            let prompt = v.get("problem").and_then(|x| x.as_str()).unwrap_or_default();
            let enc = tok
                .encode(prompt, false)
                .map_err(|e| GoldenError::Tokenizer { path: tok_path.clone(), msg: e.to_string() })?;
            ids_text.push_str(&canonical_json(&serde_json::json!(enc.get_ids())));
            ids_text.push('\n');
        }
    }
    item("tokenization-mini", vec![rel(&tok_path)], format!("{tok_json}{ids_text}").as_bytes());
    // The Qwen tokenizer over every dataset: counts and prompt token lengths (`datasets`).
    // The `file` fields are paths on this machine: left out.
    let ds = run.join("check/datasets.json");
    let text = read(&ds, "the check stage writes it")?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| GoldenError::BadFile { path: ds.clone(), msg: e.to_string() })?;
    if let Value::Array(rows) = &mut v {
        for r in rows.iter_mut().filter_map(|r| r.as_object_mut()) {
            r.remove("file");
        }
    }
    item("data-and-qwen-tokenization", vec![rel(&ds)], (canonical_json(&v) + "\n").as_bytes());

    // 3. Verifier verdicts on MATH-500's reference solutions.
    let v = run.join("check/math500.reference_verdicts.jsonl");
    let verdicts = canonical_jsonl(&v, Some(&["problem_id", "extracted", "correct"]), "the check stage writes it")?;
    item("verifier-verdicts", vec![rel(&v)], verdicts.as_bytes());

    // 4. pass@k from fixed correctness.
    let inputs = inputs_dir(golden_root);
    let counts_path = inputs.join("passk_counts.jsonl");
    let counts_text = read(&counts_path, "a committed input of the golden check")?;
    let mut lines = String::new();
    for (i, line) in counts_text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| GoldenError::BadFile { path: counts_path.clone(), msg: format!("line {}: {e}", i + 1) })?;
        let (n, c) = (v.get("n").and_then(|x| x.as_u64()), v.get("c").and_then(|x| x.as_u64()));
        let (Some(n), Some(c)) = (n, c) else {
            return Err(GoldenError::BadFile {
                path: counts_path.clone(),
                msg: format!("line {}: needs n and c", i + 1),
            });
        };
        let ks = crate::eval::pass_at_k::powers_of_two_up_to(n);
        let curve: BTreeMap<String, Option<f64>> =
            ks.iter().map(|&k| (k.to_string(), crate::eval::pass_at_k::pass_at_k(n, c, k))).collect();
        lines.push_str(&canonical_json(&serde_json::json!({"n": n, "c": c, "pass_at_k": curve})));
        lines.push('\n');
    }
    item("pass-at-k-fixed", vec!["golden/inputs/passk_counts.jsonl".into()], lines.as_bytes());

    // 5. Table 1, claims and every figure's SVG from a fixed run folder, rendered into a temp copy.
    let fixed = inputs.join("report-run");
    if !fixed.is_dir() {
        return Err(GoldenError::Missing { path: fixed, hint: "a committed input of the golden check".into() });
    }
    // A temporary copy (removed when `scratch` drops, error or not), its folder named like the
    // fixture: figure titles carry the run's name.
    let scratch = tempfile::Builder::new().prefix("rlvr-golden-").tempdir().map_err(io_err(&std::env::temp_dir()))?;
    let tmp = scratch.path().join("report-run");
    copy_dir(&fixed, &tmp)?;
    let summary = crate::report::run(&tmp, None)?;
    crate::report::claims::run(&tmp, claims_file)?;
    let mut names: Vec<PathBuf> =
        summary.files.iter().filter(|p| p.extension().is_some_and(|e| e != "png")).cloned().collect();
    names.push(tmp.join("report/claims.json"));
    names.sort();
    for p in names {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        let bytes = if name.ends_with(".json") {
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| GoldenError::BadFile { path: p.clone(), msg: e.to_string() })?;
            canonical_json(&v).into_bytes()
        } else {
            bytes
        };
        item(&format!("report/{name}"), vec![format!("golden/inputs/report-run → report/{name}")], &bytes);
    }
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    for e in std::fs::read_dir(from).map_err(io_err(from))? {
        let e = e.map_err(io_err(from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io_err(&src))?;
        }
    }
    Ok(())
}

/// The run-dependent numbers of `run` (and its experiments), with tolerances.
pub fn compute_bands(run: &Path, tol: Tolerances) -> Result<BTreeMap<String, Band>> {
    let mut out = BTreeMap::new();
    let rows = crate::report::pass_rows(run)?;
    let kmax = rows.iter().map(|r| r.k).max().unwrap_or(1);
    for r in rows.iter().filter(|r| r.k == 1 || r.k == kmax) {
        out.insert(
            format!("pass@{}/{}/seed{}/{}", r.k, r.method, r.seed, r.tier),
            Band {
                value: r.pass_at_k,
                tol: tol.pass_at_k,
                file: format!("eval/{}/seed{}/passk.json", r.method, r.seed),
            },
        );
    }
    for t in crate::report::collect_training(run)? {
        let last = t
            .evals
            .iter()
            .filter(|e| e.get("dataset").and_then(|d| d.as_str()) == Some("math"))
            .max_by_key(|e| e.get("step").and_then(|s| s.as_u64()).unwrap_or(0));
        if let Some(h) = last.and_then(|e| e.get("entropy")).and_then(|h| h.as_f64()) {
            out.insert(
                format!("entropy/{}/seed{}/math", t.method, t.seed),
                Band {
                    value: h,
                    tol: (h * tol.entropy_rel).max(tol.entropy_floor),
                    file: format!("rl/{}/seed{}/eval_metrics.jsonl", t.method, t.seed),
                },
            );
        }
    }
    if out.is_empty() {
        return Err(GoldenError::Missing {
            path: run.join("eval"),
            hint: "no evaluations to take bands from; run the pipeline first".into(),
        });
    }
    Ok(out)
}

/// Everything `golden.json` holds, computed from a run.
pub fn compute(run: &Path, profile: &str, golden_root: &Path, claims_file: &Path, tol: Tolerances) -> Result<Golden> {
    Ok(Golden {
        profile: profile.to_string(),
        hashes: compute_hashes(run, golden_root, claims_file)?,
        bands: compute_bands(run, tol)?,
    })
}

/// Reads `golden/<profile>/golden.json`.
pub fn load(path: &Path) -> Result<Golden> {
    let text = read(path, "bless it first: rlvr-decomp golden bless")?;
    serde_json::from_str(&text).map_err(|e| GoldenError::BadFile { path: path.to_path_buf(), msg: e.to_string() })
}

/// Writes `golden.json` (sorted keys, one canonical pretty file).
pub fn save(path: &Path, g: &Golden) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(g).expect("serializable");
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    crate::durable::write(path, &bytes).map_err(io_err(path))
}

/// One difference between the blessed golden outputs and a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Diff {
    HashChanged { name: String, files: Vec<String>, expected: String, got: String },
    HashMissing { name: String, files: Vec<String> },
    HashNew { name: String },
    BandMoved { name: String, file: String, expected: f64, got: f64, tol: f64 },
    BandMissing { name: String, file: String },
    BandNew { name: String, value: f64 },
}

impl Diff {
    /// Whether the difference fails the check (new items only inform).
    pub fn fails(&self) -> bool {
        !matches!(self, Diff::HashNew { .. } | Diff::BandNew { .. })
    }
}

/// Compares a recomputed set with the blessed one: every hash must match, every band hold.
pub fn compare(blessed: &Golden, now: &Golden) -> Vec<Diff> {
    let mut diffs = vec![];
    for (name, h) in &blessed.hashes {
        match now.hashes.get(name) {
            Some(n) if n.sha256 == h.sha256 => {}
            Some(n) => diffs.push(Diff::HashChanged {
                name: name.clone(),
                files: n.files.clone(),
                expected: h.sha256.clone(),
                got: n.sha256.clone(),
            }),
            None => diffs.push(Diff::HashMissing { name: name.clone(), files: h.files.clone() }),
        }
    }
    for name in now.hashes.keys().filter(|n| !blessed.hashes.contains_key(*n)) {
        diffs.push(Diff::HashNew { name: name.clone() });
    }
    for (name, b) in &blessed.bands {
        match now.bands.get(name) {
            Some(n) if (n.value - b.value).abs() <= b.tol + 1e-12 => {}
            Some(n) => diffs.push(Diff::BandMoved {
                name: name.clone(),
                file: n.file.clone(),
                expected: b.value,
                got: n.value,
                tol: b.tol,
            }),
            None => diffs.push(Diff::BandMissing { name: name.clone(), file: b.file.clone() }),
        }
    }
    for (name, n) in now.bands.iter().filter(|(n, _)| !blessed.bands.contains_key(*n)) {
        diffs.push(Diff::BandNew { name: name.clone(), value: n.value });
    }
    diffs
}

/// The diff-style report: `-` what was blessed, `+` what the run gives.
pub fn render_diffs(golden_file: &Path, run: &Path, diffs: &[Diff], checked: (usize, usize)) -> String {
    let mut s = format!("--- {} (blessed)\n+++ {} (this run)\n", golden_file.display(), run.display());
    for d in diffs {
        match d {
            Diff::HashChanged { name, files, expected, got } => {
                s.push_str(&format!("@@ hash {name} ({})\n- {expected}\n+ {got}\n", files.join(", ")))
            }
            Diff::HashMissing { name, files } => {
                s.push_str(&format!("@@ hash {name}: not produced by this run (expected from {})\n", files.join(", ")))
            }
            Diff::HashNew { name } => s.push_str(&format!("@@ hash {name}: new, not blessed (informational)\n")),
            Diff::BandMoved { name, file, expected, got, tol } => s.push_str(&format!(
                "@@ {name} ({file}) moved by {:+.4}, beyond ±{tol:.4}\n- {expected:.6}\n+ {got:.6}\n",
                got - expected
            )),
            Diff::BandMissing { name, file } => {
                s.push_str(&format!("@@ {name}: missing from this run (expected in {file})\n"))
            }
            Diff::BandNew { name, value } => {
                s.push_str(&format!("@@ {name} = {value:.6}: new, not blessed (informational)\n"))
            }
        }
    }
    let failing = diffs.iter().filter(|d| d.fails()).count();
    s.push_str(&format!(
        "{} hashes, {} bands checked: {}\n",
        checked.0,
        checked.1,
        if failing == 0 { "all match".to_string() } else { format!("{failing} differ") }
    ));
    s
}

/// Provenance of a run or a blessing: kept out of the hashes.
pub fn manifest(run: &Path, profile: &str) -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(crate::paths::project_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    let lock = include_str!("../Cargo.lock");
    let crates: BTreeMap<&str, String> =
        ["tch", "torch-sys", "ort", "polars", "plotters", "tokenizers", "clap", "sha2", "serde_json"]
            .into_iter()
            .filter_map(|name| {
                let head = format!("[[package]]\nname = \"{name}\"\nversion = \"");
                let i = lock.find(&head)? + head.len();
                Some((name, lock[i..].split('"').next()?.to_string()))
            })
            .collect();
    // Seeds: every seed<S> folder under rl/ and samples/ (and the experiments').
    let mut seeds = std::collections::BTreeSet::new();
    let mut stack = vec![run.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(s) = name.strip_prefix("seed").and_then(|s| s.parse::<u64>().ok()) {
                seeds.insert(s);
            } else if e.path().is_dir() && !["checkpoints", "samples", "export", "report"].contains(&name.as_str()) {
                stack.push(e.path());
            }
        }
    }
    let rt = crate::runtime::describe();
    serde_json::json!({
        "profile": profile,
        "run": run,
        "seeds": seeds,
        "git": {"commit": git(&["rev-parse", "HEAD"]), "dirty": dirty},
        "rlvr_decomp": env!("CARGO_PKG_VERSION"),
        "crates": crates,
        "wheels": {"torch": torch_version(), "onnxruntime_library": rt.pointer("/onnxruntime/library").cloned()},
        "device": {
            "cuda_available": tch::Cuda::is_available(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "cpu_model": cpu_model(),
            "torch_threads": tch::get_num_threads(),
        },
    })
}

/// The linked torch wheel's version (`torch/version.py` beside the libtorch folder).
fn torch_version() -> Option<String> {
    let lib = Path::new(option_env!("RLVR_LIBTORCH_LIB")?);
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split(['\'', '"']).nth(1)?.to_string())
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_fixes_floats() {
        let v: Value = serde_json::from_str(r#"{"b": [1, 2.5, -0.0, 1e-9], "a": {"z": "x\"y", "c": true}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":true,"z":"x\"y"},"b":[1,2.500000,0.000000,0.000000]}"#);
    }

    #[test]
    fn compare_names_what_moved() {
        let band = |v: f64| Band { value: v, tol: 0.1, file: "eval/psr/seed0/passk.json".into() };
        let item = |h: &str| HashItem { sha256: h.into(), files: vec!["data/tier-aime.jsonl".into()] };
        let blessed = Golden {
            profile: "smoke".into(),
            hashes: [("task-data".to_string(), item("aa")), ("x".to_string(), item("cc"))].into(),
            bands: [("pass@1/psr/seed0/aime".to_string(), band(0.5)), ("ok".to_string(), band(0.2))].into(),
        };
        let now = Golden {
            profile: "smoke".into(),
            hashes: [("task-data".to_string(), item("bb")), ("x".to_string(), item("cc"))].into(),
            bands: [("pass@1/psr/seed0/aime".to_string(), band(0.75)), ("ok".to_string(), band(0.25))].into(),
        };
        let d = compare(&blessed, &now);
        assert_eq!(d.len(), 2, "{d:?}");
        let text = render_diffs(Path::new("golden/smoke/golden.json"), Path::new("results/smoke"), &d, (2, 2));
        assert!(text.contains("@@ hash task-data (data/tier-aime.jsonl)\n- aa\n+ bb"), "{text}");
        assert!(text.contains("pass@1/psr/seed0/aime (eval/psr/seed0/passk.json) moved by +0.2500"), "{text}");
        assert!(text.ends_with("2 differ\n"), "{text}");
        assert!(compare(&blessed, &blessed).is_empty());
    }
}
