//! Parity with transformers on tiny random Qwen2 / Qwen3 / Llama checkpoints
//! (`golden/fixtures/`, produced by `scripts/make_fixtures.py`), and the reverse direction:
//! checkpoints we save are loaded by transformers (`scripts/check_hf_load.py`).
//!
//! f32 on CPU: max |Δlogit| ≤ 1e-4 and identical greedy tokens, with and without the KV
//! cache, single and batched with left padding.

use rlvr_decomp::model::{self, DType, GenRequest, LoadedModel, SamplingParams, SaveOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;
const ARCHES: [&str; 4] = ["qwen2", "qwen3", "llama", "llama3"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Fixture {
    lm: LoadedModel,
    rec: Value,
}

fn fixture(arch: &str) -> Fixture {
    let dir = root().join("golden/fixtures");
    let json = dir.join(format!("tiny-{arch}.json"));
    let text =
        std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", json.display()));
    let rec: Value = serde_json::from_str(&text).unwrap();
    let lm = model::load_model(&dir.join(format!("tiny-{arch}")), Device::Cpu, DType::F32).unwrap();
    Fixture { lm, rec }
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Reference logits block {shape: [T, V], logits: flat} → Tensor [T, V].
fn reference(v: &Value) -> Tensor {
    let shape = ids_of(&v["shape"]);
    Tensor::from_slice(&floats(&v["logits"])).view([shape[0], shape[1]])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}

fn row_tensor(ids: &[i64]) -> Tensor {
    Tensor::from_slice(ids).view([1, ids.len() as i64])
}

fn batch_inputs(rec: &Value) -> (Tensor, Tensor, Vec<Vec<i64>>) {
    let b = &rec["batch"];
    let ids: Vec<Vec<i64>> = b["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
    let mask: Vec<Vec<i64>> = b["attention_mask"].as_array().unwrap().iter().map(ids_of).collect();
    let (n, l) = (ids.len() as i64, ids[0].len() as i64);
    let t_ids = Tensor::from_slice(&ids.concat()).view([n, l]);
    let t_mask = Tensor::from_slice(&mask.concat()).view([n, l]);
    let rows = ids
        .iter()
        .zip(&mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    (t_ids, t_mask, rows)
}

fn report(name: &str, d: f64) {
    eprintln!("parity {name}: max |dlogit| = {d:.3e}");
    assert!(d <= TOL, "{name}: max |dlogit| = {d:e} > {TOL:e}");
}

#[test]
fn full_forward_matches_transformers() {
    for arch in ARCHES {
        let f = fixture(arch);
        let ids = ids_of(&f.rec["single"]["input_ids"]);
        let got = tch::no_grad(|| f.lm.model.forward(&row_tensor(&ids), None, None).unwrap()).squeeze_dim(0);
        report(&format!("{arch} single full"), max_abs_diff(&got, &reference(&f.rec["single"])));
    }
}

#[test]
fn padded_batch_matches_transformers_and_unpadded_rows() {
    for arch in ARCHES {
        let f = fixture(arch);
        let (ids, mask, rows) = batch_inputs(&f.rec);
        let l = ids.size()[1];
        let got = tch::no_grad(|| f.lm.model.forward(&ids, Some(&mask), None).unwrap()); // [B, L, V]
        let mut worst: f64 = 0.0;
        for (b, row) in rows.iter().enumerate() {
            let n = row.len() as i64;
            let ours = got.get(b as i64).narrow(0, l - n, n); // [n, V]
            worst = worst.max(max_abs_diff(&ours, &reference(&f.rec["batch"]["rows"][b])));
            let alone = tch::no_grad(|| f.lm.model.forward(&row_tensor(row), None, None).unwrap()).squeeze_dim(0);
            worst = worst.max(max_abs_diff(&ours, &alone));
        }
        report(&format!("{arch} padded batch full"), worst);
    }
}

#[test]
fn kv_cache_incremental_matches_full() {
    for arch in ARCHES {
        let f = fixture(arch);
        let m = &f.lm.model;
        let ids = ids_of(&f.rec["single"]["input_ids"]);
        let want = reference(&f.rec["single"]); // [T, V]
        let t = ids.len() as i64;
        // prefill 4, then a chunk of 2 (cache offset + causal mask), then one at a time
        let mut cache = model::KvCache::new(&m.cfg, 1, 2, Kind::Float, Device::Cpu); // tiny capacity: exercises growth
        let mut pieces = vec![];
        tch::no_grad(|| {
            pieces.push(m.forward(&row_tensor(&ids[..4]), None, Some(&mut cache)).unwrap());
            pieces.push(m.forward(&row_tensor(&ids[4..6]), None, Some(&mut cache)).unwrap());
            for i in 6..ids.len() {
                pieces.push(m.forward(&row_tensor(&ids[i..i + 1]), None, Some(&mut cache)).unwrap());
            }
        });
        let got = Tensor::cat(&pieces, 1).squeeze_dim(0); // [T, V]
        assert_eq!(cache.seq_len(), t);
        report(&format!("{arch} single kv-cache"), max_abs_diff(&got, &want));
    }
}

#[test]
fn kv_cache_padded_batch_matches_transformers() {
    for arch in ARCHES {
        let f = fixture(arch);
        let m = &f.lm.model;
        let (ids, mask, rows) = batch_inputs(&f.rec);
        let (b, l) = (ids.size()[0], ids.size()[1]);
        let k = 3; // decode the last k columns one step at a time
        let mut cache = model::KvCache::new(&m.cfg, b, l, Kind::Float, Device::Cpu);
        let mut pieces = vec![];
        tch::no_grad(|| {
            pieces
                .push(m.forward(&ids.narrow(1, 0, l - k), Some(&mask.narrow(1, 0, l - k)), Some(&mut cache)).unwrap());
            for j in l - k..l {
                pieces
                    .push(m.forward(&ids.narrow(1, j, 1), Some(&mask.narrow(1, 0, j + 1)), Some(&mut cache)).unwrap());
            }
        });
        let got = Tensor::cat(&pieces, 1); // [B, L, V]
        let mut worst: f64 = 0.0;
        for (r, row) in rows.iter().enumerate() {
            let n = row.len() as i64;
            let ours = got.get(r as i64).narrow(0, l - n, n);
            worst = worst.max(max_abs_diff(&ours, &reference(&f.rec["batch"]["rows"][r])));
        }
        report(&format!("{arch} padded batch kv-cache"), worst);
    }
}

fn argmax_last(logits: &Tensor) -> Vec<i64> {
    // logits [B, T, V] → argmax at the last position per row
    let t = logits.size()[1];
    Vec::<i64>::try_from(logits.narrow(1, t - 1, 1).squeeze_dim(1).argmax(-1, false)).unwrap()
}

#[test]
fn greedy_matches_transformers_with_and_without_cache() {
    for arch in ARCHES {
        let f = fixture(arch);
        let m = &f.lm.model;
        let g = &f.rec["greedy"];
        let n_new = g["max_new_tokens"].as_u64().unwrap() as usize;
        let want_single = ids_of(&g["single"]);
        let want_batch: Vec<Vec<i64>> = g["batch"].as_array().unwrap().iter().map(ids_of).collect();
        let (_, _, rows) = batch_inputs(&f.rec);
        let single = ids_of(&f.rec["single"]["input_ids"]);

        // 1) KV-cache generation loop, batched with left padding (rows of different lengths).
        let mut reqs = vec![GenRequest { prompt: single.clone(), problem_id: 0, sample_idx: 0 }];
        reqs.extend(rows.iter().enumerate().map(|(i, r)| GenRequest {
            prompt: r.clone(),
            problem_id: 1 + i as u64,
            sample_idx: 0,
        }));
        let gens = model::generate(m, &reqs, &SamplingParams::greedy(n_new), 0, 0).unwrap();
        assert_eq!(gens[0].tokens, want_single, "{arch}: greedy (kv cache) single");
        for (i, w) in want_batch.iter().enumerate() {
            assert_eq!(&gens[1 + i].tokens, w, "{arch}: greedy (kv cache) batch row {i}");
        }

        // 2) No cache: recompute the whole padded batch every step.
        let mut seqs: Vec<Vec<i64>> = rows.clone();
        tch::no_grad(|| {
            for _ in 0..n_new {
                let (ids, mask) = model::generate::left_pad(&seqs, 0, Device::Cpu);
                let next = argmax_last(&m.forward(&ids, Some(&mask), None).unwrap());
                for (s, t) in seqs.iter_mut().zip(next) {
                    s.push(t);
                }
            }
        });
        for (i, w) in want_batch.iter().enumerate() {
            assert_eq!(&seqs[i][rows[i].len()..], &w[..], "{arch}: greedy (no cache) batch row {i}");
        }
        eprintln!("parity {arch}: greedy {n_new} tokens identical (cache + no cache, padded batch)");
    }
}

#[test]
fn sampled_row_regenerates_alone() {
    let f = fixture("qwen3");
    let m = &f.lm.model;
    let p = SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 50, max_new_tokens: 16, stop_ids: vec![] };
    let prompts = [vec![5i64, 6, 7, 8, 9], vec![100i64, 200]];
    let reqs: Vec<GenRequest> = (0..2u64)
        .flat_map(|pid| (0..3u64).map(move |s| (pid, s)))
        .map(|(pid, s)| GenRequest { prompt: prompts[pid as usize].clone(), problem_id: pid, sample_idx: s })
        .collect();
    // Rows sharing a prompt share one prefill (the batch prefills 2 prompts, not 6): every row
    // still equals the row generated alone (its own prefill) token for token.
    let all = model::generate(m, &reqs, &p, 1234, 0).unwrap();
    assert_ne!(all[0].tokens, all[1].tokens, "different sample_idx should give different samples");
    for i in 0..reqs.len() {
        let alone = model::generate(m, &reqs[i..i + 1], &p, 1234, 0).unwrap();
        assert_eq!(alone[0], all[i], "row {i}");
    }
    let again = model::generate(m, &reqs, &p, 1234, 0).unwrap();
    assert_eq!(again, all);
}

#[test]
fn logprobs_and_entropy_are_consistent() {
    let f = fixture("qwen2");
    let ids = ids_of(&f.rec["single"]["input_ids"]);
    let x = row_tensor(&ids);
    let (lp, ent) = tch::no_grad(|| model::shifted_logprobs_and_entropy(&f.lm.model, &x, None).unwrap());
    let t = ids.len() as i64;
    assert_eq!(lp.size(), vec![1, t - 1]);
    assert_eq!(ent.size(), vec![1, t - 1]);
    let logits = reference(&f.rec["single"]).unsqueeze(0); // [1, T, V]
    let want = model::token_logprobs(&logits.narrow(1, 0, t - 1), &x.narrow(1, 1, t - 1));
    assert!(max_abs_diff(&lp, &want) <= TOL);
    let want_e = model::entropy(&logits.narrow(1, 0, t - 1));
    assert!(max_abs_diff(&ent, &want_e) <= TOL);
    assert!(ent.min().double_value(&[]) >= 0.0);
}

#[test]
fn gradients_flow_to_all_parameters() {
    let f = fixture("qwen3");
    let ids = ids_of(&f.rec["single"]["input_ids"]);
    let (lp, _) = model::shifted_logprobs_and_entropy(&f.lm.model, &row_tensor(&ids), None).unwrap();
    lp.sum(Kind::Float).backward();
    for (name, v) in f.lm.vs.variables() {
        let g = v.grad();
        assert!(g.defined(), "no grad for {name}");
        assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "zero grad for {name}");
    }
}

fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} not found: the HF-load check needs the project venv with torch + transformers (make venv)",
        py.display()
    );
    let ok =
        Command::new(&py).args(["-c", "import transformers, torch"]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "{} cannot import transformers/torch: pip install transformers into the venv", py.display());
    py
}

/// Saves `lm` into `dir` with `opts`, writes our logits for fixed ids, and asks transformers
/// (scripts/check_hf_load.py) to load the directory and reproduce them.
fn check_hf_roundtrip(lm: &LoadedModel, dir: &Path, opts: &SaveOptions, tol: f64) {
    lm.save(dir, opts).unwrap();
    // our own loader must read it back identically as well
    let back = model::load_model(dir, Device::Cpu, opts.dtype.unwrap_or(DType::F32)).unwrap();
    let ids: Vec<i64> = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7];
    let x = Tensor::from_slice(&ids).view([2, 7]);
    let ours = tch::no_grad(|| back.model.forward(&x, None, None).unwrap()).to_kind(Kind::Float); // [2, 7, V]
    let expect = dir.join("expect.json");
    let json = serde_json::json!({
        "input_ids": [ids[..7].to_vec(), ids[7..].to_vec()],
        "shape": ours.size(),
        "logits": Vec::<f32>::try_from(ours.reshape([-1])).unwrap(),
    });
    std::fs::write(&expect, json.to_string()).unwrap();
    let out = Command::new(python())
        .arg(root().join("scripts/check_hf_load.py"))
        .arg(dir)
        .arg("--expect")
        .arg(&expect)
        .arg("--tol")
        .arg(tol.to_string())
        .output()
        .expect("running check_hf_load.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("check_hf_load {}: {}", dir.display(), stdout.trim());
    assert!(
        out.status.success(),
        "transformers could not load/reproduce {}: {}\n{}",
        dir.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn saved_checkpoints_load_in_transformers() {
    for arch in ARCHES {
        let f = fixture(arch);
        let tmp = tempfile::tempdir().unwrap();
        // single file, f32
        check_hf_roundtrip(&f.lm, &tmp.path().join("single"), &SaveOptions::default(), TOL);
        // sharded (index.json), f32
        let sharded = SaveOptions { max_shard_bytes: 200_000, ..Default::default() };
        check_hf_roundtrip(&f.lm, &tmp.path().join("sharded"), &sharded, TOL);
        let idx = tmp.path().join("sharded/model.safetensors.index.json");
        assert!(idx.is_file(), "expected a sharded checkpoint");
        for name in ["config.json", "generation_config.json"] {
            assert!(tmp.path().join("sharded").join(name).is_file(), "{name} missing");
        }
        // bf16 storage: transformers and we both compute in bf16 from identical weights
        let bf16 = SaveOptions { dtype: Some(DType::BF16), ..Default::default() };
        check_hf_roundtrip(&f.lm, &tmp.path().join("bf16"), &bf16, 5e-2);
    }
}

#[test]
fn sharded_checkpoint_loads_same_as_single() {
    let f = fixture("qwen2");
    let tmp = tempfile::tempdir().unwrap();
    let opts = SaveOptions { max_shard_bytes: 100_000, ..Default::default() };
    model::save_checkpoint(&f.lm.vs, &f.lm.cfg, tmp.path(), &opts).unwrap();
    let back = model::load_model(tmp.path(), Device::Cpu, DType::F32).unwrap();
    let a = f.lm.vs.variables();
    let b = back.vs.variables();
    assert_eq!(a.len(), b.len());
    for (k, v) in a {
        assert_eq!(max_abs_diff(&v, &b[&k]), 0.0, "{k} differs after sharded save/load");
    }
}

/// Rows are drawn on several threads; each row owns its RNG, so the tokens do not depend on the
/// thread count (finished rows are skipped and padded either way).
#[test]
fn token_draws_do_not_depend_on_sampling_threads() {
    use rlvr_decomp::model::generate::{step_rows, Generation};
    use rlvr_decomp::model::sampler::row_rng;
    use rlvr_decomp::model::Sampler;
    let (b, v) = (7usize, 300usize);
    let logits: Vec<f32> = (0..b * v).map(|i| ((i * 7919) % 1000) as f32 / 97.0).collect();
    let p = SamplingParams { temperature: 0.8, top_p: 0.9, top_k: 0, max_new_tokens: 5, stop_ids: vec![3] };
    let sampler = Sampler::new(p.clone());
    let run = |threads: usize| {
        let mut rngs: Vec<_> = (0..b as u64).map(|i| row_rng(5, i, i)).collect();
        let mut done = vec![false; b];
        done[2] = true;
        let mut out = vec![Generation { tokens: vec![], stopped: false }; b];
        let caps = vec![5; b];
        let mut steps = vec![];
        for _ in 0..4 {
            let draw =
                |i: usize, rng: &mut rand_chacha::ChaCha8Rng| sampler.sample(&logits[i * v..(i + 1) * v], rng) as i64;
            steps.push(step_rows(draw, &p, &caps, 0, &mut rngs, &mut done, &mut out, threads));
        }
        (steps, out)
    };
    let one = run(1);
    assert_eq!(one.0[0][2], 0, "a finished row is padded");
    for t in [2, 3, 8] {
        assert_eq!(run(t), one, "{t} threads");
    }
}

/// The static-shape decode step (slot caches written by scatter, attention over all M positions
/// under a mask built from the lengths: what a CUDA graph captures), with its tokens drawn on the
/// device from pre-drawn uniforms, draws the same tokens as `generate` (host draws) — greedy,
/// seeded top-k with and without top-p, top-p alone over full rows, plain temperature sampling
/// (the RL rollouts' setting); prompts of different lengths sharing and not sharing a prefill;
/// rows stopping at different steps, before and after the host's polls; rows long enough to cross
/// from one attention window to the next, capped unevenly by the context — on every architecture.
/// On the CPU the CUDA-graph mode is refused by name.
#[test]
fn static_decode_step_draws_the_same_tokens() {
    use rlvr_decomp::model::static_decode::TchDecode;
    let prompts = [vec![5i64, 17, 99, 230, 7, 411, 63, 12, 300, 8], vec![9, 250, 128], vec![44, 45, 46, 500, 3, 77]];
    let reqs: Vec<GenRequest> = (0..7u64)
        .map(|s| GenRequest { prompt: prompts[(s % 3) as usize].clone(), problem_id: 40 + s % 3, sample_idx: s })
        .collect();
    let settings = [
        SamplingParams::greedy(24),
        SamplingParams { temperature: 0.7, top_p: 0.8, top_k: 20, max_new_tokens: 24, stop_ids: (0..25).collect() },
        SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 0, max_new_tokens: 12, stop_ids: vec![2, 3, 4] },
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 40, stop_ids: (0..12).collect() },
        SamplingParams { temperature: 1.3, top_p: 1.0, top_k: 7, max_new_tokens: 20, stop_ids: vec![] },
        // Long rows: the attention window grows 128 → 256 positions, and the context (256) caps the
        // 10-token prompts at 246 new tokens, the others at 250.
        SamplingParams { temperature: 0.9, top_p: 1.0, top_k: 0, max_new_tokens: 250, stop_ids: vec![] },
    ];
    for arch in ARCHES {
        let f = fixture(arch);
        let m = &f.lm.model;
        for p in &settings {
            let want = model::generate(m, &reqs, p, 77, 0).unwrap();
            let got = TchDecode::Static.generate(m, &reqs, p, 77, 0).unwrap();
            assert_eq!(got, want, "{arch} {p:?}");
            if p.max_new_tokens == 250 {
                let lens: std::collections::BTreeSet<usize> = got.iter().map(|g| g.tokens.len()).collect();
                assert_eq!(lens, [246, 250].into(), "{arch}: rows capped by the context");
            }
        }
        let lens: Vec<usize> =
            model::generate(m, &reqs, &settings[1], 77, 0).unwrap().iter().map(|g| g.tokens.len()).collect();
        assert!(lens.iter().min() < lens.iter().max(), "{arch}: rows should stop at different steps: {lens:?}");
        eprintln!("parity {arch}: static decode step = generate (greedy, top-k/top-p, full rows)");
    }
    let f = fixture("qwen2");
    let e = TchDecode::CudaGraph.generate(&f.lm.model, &reqs, &settings[0], 0, 0).unwrap_err().to_string();
    assert!(e.contains("CUDA"), "{e}");
}

/// Non-finite logits met mid-generation by one row are the same error (step and row) whether the
/// tokens are drawn on the host each step (`generate`) or on the device with the host polling
/// every few steps (`TchDecode::Static`): a token first drawn mid-generation gets a NaN embedding, so
/// the rows that drew it have NaN logits at the next step; the lowest such row is named.
#[test]
fn static_decode_reports_non_finite_logits_like_generate() {
    use rlvr_decomp::model::static_decode::TchDecode;
    let f = fixture("qwen2"); // untied: a NaN embedding row leaves the LM head finite
    assert!(!f.lm.model.cfg.tie_word_embeddings);
    let prompts = [vec![5i64, 17, 99, 230, 7, 411, 63, 12], vec![9, 250, 128]];
    let reqs: Vec<GenRequest> = (0..6u64)
        .map(|s| GenRequest { prompt: prompts[(s % 2) as usize].clone(), problem_id: 7 + s % 2, sample_idx: s })
        .collect();
    for p in [
        SamplingParams::greedy(16),
        SamplingParams { temperature: 0.8, top_p: 0.9, top_k: 10, max_new_tokens: 16, stop_ids: vec![] },
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 16, stop_ids: vec![] },
    ] {
        let m = &f.lm.model;
        let clean = model::generate(m, &reqs, &p, 3, 0).unwrap();
        // The first step n ≥ 2 that draws a token t no prompt holds and no row drew before: each row
        // that draws t at n gets NaN logits at n + 1; the lowest such row is reported.
        let at = |r: usize, n: usize| clean[r].tokens.get(n).copied();
        let fresh = |n: usize, t: i64| {
            !prompts.iter().any(|q| q.contains(&t)) && (0..reqs.len()).all(|r| (0..n).all(|k| at(r, k) != Some(t)))
        };
        // Rows scanned from the last, so that the reported row is not always 0.
        let (n, tok) = (2..15)
            .find_map(|n| (0..reqs.len()).rev().find_map(|r| at(r, n).filter(|&t| fresh(n, t)).map(|t| (n, t))))
            .unwrap_or_else(|| panic!("{p:?}: no fresh token: {clean:?}"));
        let row = (0..reqs.len()).find(|&r| at(r, n) == Some(tok)).unwrap();
        let emb = f.lm.vs.variables()["model.embed_tokens.weight"].shallow_clone();
        let saved = emb.get(tok).copy();
        tch::no_grad(|| {
            let _ = emb.get(tok).fill_(f64::NAN);
        });
        let want = model::generate(m, &reqs, &p, 3, 0).unwrap_err().to_string();
        let got = TchDecode::Static.generate(m, &reqs, &p, 3, 0).unwrap_err().to_string();
        tch::no_grad(|| emb.get(tok).copy_(&saved));
        assert_eq!(got, want, "{p:?}");
        assert!(
            want.contains(&format!("non-finite logits (NaN or +inf) at generation step {}, row {row}", n + 1)),
            "{p:?}: {want}"
        );
        eprintln!("non-finite at step {}: {want}", n + 1);
    }
}
