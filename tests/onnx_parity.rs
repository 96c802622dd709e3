//! ONNX export + ONNX Runtime vs our tch model on the tiny Qwen2 / Qwen3 / Llama fixtures
//! (`golden/fixtures/`), f32 on CPU: max |Δlogit| ≤ 1e-4 for a full forward, a left-padded
//! batch, and prefill + token-by-token KV-cache decoding; identical greedy continuations
//! (32 tokens) and identical seeded samples.

use rlvr_decomp::export::{self, ExportDType, ExportOptions, GraphKind};
use rlvr_decomp::model::{self, DType, GenRequest, LoadedModel, SamplingParams};
use rlvr_decomp::sample::{OrtModel, OrtOptions};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOL: f32 = 1e-4;
const ARCHES: [&str; 4] = ["qwen2", "qwen3", "llama", "llama3"];

fn fixture_dir(arch: &str) -> PathBuf {
    rlvr_decomp::paths::project_root().join("golden/fixtures").join(format!("tiny-{arch}"))
}

struct Setup {
    tch: LoadedModel,
    ort: OrtModel,
    _dir: tempfile::TempDir,
}

fn setup(arch: &str, dtype: ExportDType) -> Setup {
    let src = fixture_dir(arch);
    let dir = tempfile::tempdir().unwrap();
    export::export(&src, dir.path(), &ExportOptions { dtype, ..Default::default() }).unwrap();
    let ort = OrtModel::load(dir.path(), &OrtOptions { threads: 1, ..Default::default() }).unwrap();
    let tch = model::load_model(&src, Device::Cpu, DType::F32).unwrap();
    Setup { tch, ort, _dir: dir }
}

/// tch logits [B, T, V] flattened, for ids [B, T] with an optional mask.
fn tch_logits(m: &LoadedModel, ids: &[i64], b: usize, mask: Option<&[i64]>) -> Vec<f32> {
    let t = (ids.len() / b) as i64;
    tch::no_grad(|| {
        let x = Tensor::from_slice(ids).view([b as i64, t]);
        let mk = mask.map(|mk| Tensor::from_slice(mk).view([b as i64, t]));
        let l = m.model.forward(&x, mk.as_ref(), None).unwrap();
        Vec::<f32>::try_from(l.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(name: &str, d: f32, tol: f32) {
    eprintln!("onnx parity {name}: max |dlogit| = {d:.3e}");
    assert!(d <= tol, "{name}: max |dlogit| = {d:e} > {tol:e}");
}

fn ids_single() -> Vec<i64> {
    vec![5, 17, 99, 230, 7, 411, 63, 12, 300, 8]
}

/// Left-padded batch (pad 0) as in the fixtures: ids, mask, positions (cumsum - 1, pads 1).
fn padded_batch() -> (Vec<i64>, Vec<i64>, Vec<i64>, usize, usize) {
    let rows: Vec<Vec<i64>> = vec![ids_single(), vec![44, 45, 46, 500, 3, 77], vec![9, 250, 128]];
    let l = 10;
    let (mut ids, mut mask, mut pos) = (vec![], vec![], vec![]);
    for r in &rows {
        let pad = l - r.len();
        ids.extend(std::iter::repeat(0).take(pad).chain(r.iter().copied()));
        mask.extend(std::iter::repeat(0).take(pad).chain(std::iter::repeat(1).take(r.len())));
        pos.extend(std::iter::repeat(1).take(pad).chain(0..r.len() as i64));
    }
    (ids, mask, pos, rows.len(), l)
}

#[test]
fn full_forward_matches_tch() {
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        let ids = ids_single();
        let (shape, ort) = s.ort.logits(&ids, true).unwrap();
        assert_eq!(shape, vec![ids.len(), 512]);
        check(&format!("{arch} full"), max_diff(&ort, &tch_logits(&s.tch, &ids, 1, None)), TOL);
        let (shape, last) = s.ort.logits(&ids, false).unwrap();
        assert_eq!(shape, vec![512]);
        assert_eq!(last, ort[(ids.len() - 1) * 512..]);
    }
}

#[test]
fn padded_batch_matches_tch() {
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        let (ids, mask, pos, b, l) = padded_batch();
        let kv = s.ort.empty_kv(b).unwrap();
        let (shape, ort, _) = s.ort.forward(&ids, &mask, &pos, kv, 0).unwrap();
        assert_eq!(shape, vec![b, l, 512]);
        let reference = tch_logits(&s.tch, &ids, b, Some(&mask));
        // compare real (mask = 1) positions only
        let mut d = 0.0f32;
        for (j, &m) in mask.iter().enumerate() {
            if m == 1 {
                d = d.max(max_diff(&ort[j * 512..(j + 1) * 512], &reference[j * 512..(j + 1) * 512]));
            }
        }
        check(&format!("{arch} padded batch"), d, TOL);
    }
}

#[test]
fn kv_cache_decode_matches_tch() {
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        // Padded batch: prefill 4 positions, then one token at a time.
        let (ids, mask, pos, b, l) = padded_batch();
        let reference = tch_logits(&s.tch, &ids, b, Some(&mask));
        let pre = 4;
        let take = |v: &[i64], from: usize, to: usize| -> Vec<i64> {
            (0..b).flat_map(|r| v[r * l + from..r * l + to].to_vec()).collect()
        };
        let kv = s.ort.empty_kv(b).unwrap();
        let (_, mut logits, mut kv) =
            s.ort.forward(&take(&ids, 0, pre), &take(&mask, 0, pre), &take(&pos, 0, pre), kv, 1).unwrap();
        let mut d = 0.0f32;
        for t in pre..=l {
            // logits now predict position t (from position t-1)
            for r in 0..b {
                if mask[r * l + t - 1] == 1 {
                    let j = r * l + t - 1;
                    d = d.max(max_diff(&logits[r * 512..(r + 1) * 512], &reference[j * 512..(j + 1) * 512]));
                }
            }
            if t == l {
                break;
            }
            let out =
                s.ort.forward(&take(&ids, t, t + 1), &take(&mask, 0, t + 1), &take(&pos, t, t + 1), kv, 1).unwrap();
            logits = out.1;
            kv = out.2;
            assert_eq!(kv.len, t + 1);
        }
        check(&format!("{arch} kv-cache decode"), d, TOL);
    }
}

fn requests() -> Vec<GenRequest> {
    vec![
        GenRequest { prompt: ids_single(), problem_id: 7, sample_idx: 0 },
        GenRequest { prompt: vec![44, 45, 46, 500, 3, 77], problem_id: 7, sample_idx: 1 },
        GenRequest { prompt: vec![9, 250, 128], problem_id: 8, sample_idx: 0 },
    ]
}

#[test]
fn greedy_32_tokens_identical() {
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        let p = SamplingParams::greedy(32);
        let a = model::generate(&s.tch.model, &requests(), &p, 0, 0).unwrap();
        let b = s.ort.generate(&requests(), &p, 0, 0).unwrap();
        assert_eq!(a, b, "{arch}: greedy continuations differ");
        assert!(a.iter().all(|g| g.tokens.len() == 32));
        // and a row alone gives the same continuation as in the batch
        let alone = s.ort.generate(&requests()[2..], &p, 0, 0).unwrap();
        assert_eq!(alone[0], b[2]);
    }
}

#[test]
fn seeded_sampling_identical_to_tch() {
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        let p = SamplingParams { temperature: 0.7, top_p: 0.9, top_k: 20, max_new_tokens: 24, stop_ids: vec![2] };
        let a = model::generate(&s.tch.model, &requests(), &p, 1234, 0).unwrap();
        let b = s.ort.generate(&requests(), &p, 1234, 0).unwrap();
        assert_eq!(a, b, "{arch}: seeded samples differ");
    }
}

#[test]
fn f16_export_runs_and_is_close() {
    let mut s = setup("qwen3", ExportDType::F16);
    assert_eq!(s.ort.manifest.dtype, ExportDType::F16);
    let ids = ids_single();
    let (_, ort) = s.ort.logits(&ids, true).unwrap();
    let d = max_diff(&ort, &tch_logits(&s.tch, &ids, 1, None));
    check("qwen3 f16 (loose)", d, 5e-2);
    let g = s.ort.generate(&requests(), &SamplingParams::greedy(4), 0, 0).unwrap();
    assert!(g.iter().all(|g| g.tokens.len() == 4));
}

/// k samples of one prompt share one prefill (in both backends): every row equals the row
/// generated alone and the tch row, token for token; the f16 export's cache is shared too.
#[test]
fn shared_prefill_rows_equal_rows_alone() {
    let p = SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 0, max_new_tokens: 12, stop_ids: vec![2] };
    let prompts = [ids_single(), vec![9, 250, 128]];
    let reqs: Vec<GenRequest> = (0..4u64)
        .map(|s| GenRequest { prompt: prompts[(s % 2) as usize].clone(), problem_id: 10 + s % 2, sample_idx: s })
        .collect();
    for arch in ARCHES {
        let mut s = setup(arch, ExportDType::F32);
        let batch = s.ort.generate(&reqs, &p, 99, 0).unwrap();
        assert_eq!(batch, model::generate(&s.tch.model, &reqs, &p, 99, 0).unwrap(), "{arch}: ORT vs tch");
        for i in 0..reqs.len() {
            let alone = s.ort.generate(&reqs[i..i + 1], &p, 99, 0).unwrap();
            assert_eq!(alone[0], batch[i], "{arch}: row {i} alone");
        }
    }
    let mut s = setup("qwen3", ExportDType::F16);
    let batch = s.ort.generate(&reqs, &SamplingParams::greedy(4), 0, 0).unwrap();
    assert_eq!(batch[0], batch[2], "greedy rows of one prompt agree (f16 cache copied per row)");
    assert_eq!(batch[0], s.ort.generate(&reqs[..1], &SamplingParams::greedy(4), 0, 0).unwrap()[0]);
}

/// Continuous batching: 9 requests (3 prompts of different lengths × 3 samples) through 4 slots,
/// rows stopping at different steps (stop id, caps), slots refilled as rows finish: every request
/// ends with exactly the tokens it gets generated alone, in f32 and f16 exports.
#[test]
fn continuous_batching_rows_equal_rows_alone() {
    let prompts = [ids_single(), vec![9, 250, 128], vec![44, 45, 46, 500, 3, 77, 12, 13]];
    let reqs: Vec<GenRequest> = (0..9u64)
        .map(|s| GenRequest { prompt: prompts[(s / 3) as usize].clone(), problem_id: 20 + s / 3, sample_idx: s })
        .collect();
    for (arch, dtype) in [("qwen2", ExportDType::F32), ("qwen3", ExportDType::F32), ("qwen3", ExportDType::F16)] {
        let mut s = setup(arch, dtype);
        // Stop on a few common ids so that rows end at different steps.
        let p =
            SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 10, stop_ids: (0..40).collect() };
        let mut got: Vec<Option<model::generate::Generation>> = vec![None; reqs.len()];
        let mut order = vec![];
        s.ort
            .generate_stream(&reqs, &p, 7, 0, 4, &mut |i, g| {
                order.push(i);
                got[i] = Some(g);
                Ok(())
            })
            .unwrap();
        let lens: Vec<usize> = got.iter().map(|g| g.as_ref().unwrap().tokens.len()).collect();
        assert!(lens.iter().min() < lens.iter().max(), "{arch}: rows must end at different steps: {lens:?}");
        assert_eq!(order.len(), reqs.len(), "{arch}: each request reported once");
        for (i, g) in got.into_iter().enumerate() {
            let alone = s.ort.generate(&reqs[i..i + 1], &p, 7, 0).unwrap();
            assert_eq!(g.unwrap(), alone[0], "{arch} {dtype:?}: request {i}");
        }
    }
}

/// Top-k and greedy steps select their candidates inside the graph (`TopK`, only `[B, k]` values
/// reach the host): the same tokens as drawing from the full rows on the host, in fixed batches
/// and continuous batching, f32 and f16 exports (f16 logits tie often: `TopK` breaks ties by the
/// lower id, as the host sampler does).
#[test]
fn graph_top_k_draws_equal_full_row_draws() {
    let prompts = [ids_single(), vec![9, 250, 128], vec![44, 45, 46, 500, 3, 77, 12, 13]];
    let reqs: Vec<GenRequest> = (0..6u64)
        .map(|s| GenRequest { prompt: prompts[(s % 3) as usize].clone(), problem_id: 30 + s % 3, sample_idx: s })
        .collect();
    let settings = [
        SamplingParams { temperature: 0.7, top_p: 0.8, top_k: 20, max_new_tokens: 16, stop_ids: (0..30).collect() },
        SamplingParams { temperature: 1.3, top_p: 1.0, top_k: 3, max_new_tokens: 16, stop_ids: vec![2] },
        SamplingParams::greedy(16),
    ];
    for (arch, dtype) in [("qwen2", ExportDType::F32), ("qwen3", ExportDType::F32), ("qwen3", ExportDType::F16)] {
        let dir = tempfile::tempdir().unwrap();
        export::export(&fixture_dir(arch), dir.path(), &ExportOptions { dtype, ..Default::default() }).unwrap();
        let load = |graph_top_k| {
            OrtModel::load(dir.path(), &OrtOptions { threads: 1, graph_top_k, ..Default::default() }).unwrap()
        };
        let (mut graph, mut host) = (load(true), load(false));
        for p in &settings {
            assert!(graph.step_top_k(p).is_some() && host.step_top_k(p).is_none(), "the two paths differ");
            let want = host.generate(&reqs, p, 5, 0).unwrap();
            assert_eq!(graph.generate(&reqs, p, 5, 0).unwrap(), want, "{arch} {dtype:?} {p:?}");
            let mut got = vec![None; reqs.len()];
            graph
                .generate_stream(&reqs, p, 5, 0, 4, &mut |i, g| {
                    got[i] = Some(g);
                    Ok(())
                })
                .unwrap();
            let got: Vec<_> = got.into_iter().map(Option::unwrap).collect();
            assert_eq!(got, want, "{arch} {dtype:?} {p:?}: continuous");
        }
        // Top-p alone needs the whole row: no candidates are selected in the graph.
        let p = SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 0, max_new_tokens: 4, stop_ids: vec![] };
        assert!(graph.step_top_k(&p).is_none());
    }
}

/// A row whose logits overflow (an f16 export of weights that are finite in f32 but push a logit
/// past f16's range) stops generation with a non-finite-logits error on both paths: the graph's
/// row sums catch what `TopK` alone would hide.
#[test]
fn overflowing_logits_are_an_error_on_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = model::load_model(&fixture_dir("qwen2"), Device::Cpu, DType::F32).unwrap();
    let head = if lm.model.cfg.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
    tch::no_grad(|| {
        let w = lm.vs.variables()[head].shallow_clone();
        // Rows 3 and 4 = ±60,000 everywhere: one of their logits is beyond f16's 65,504 unless
        // the normed hidden state sums to almost exactly zero.
        let _ = w.get(3).fill_(60_000.0);
        let _ = w.get(4).fill_(-60_000.0);
    });
    let src = tmp.path().join("hf");
    lm.save(&src, &Default::default()).unwrap();
    let onnx = tmp.path().join("onnx");
    export::export(&src, &onnx, &ExportOptions { dtype: ExportDType::F16, ..Default::default() }).unwrap();
    let reqs = &requests()[2..];
    for graph_top_k in [true, false] {
        let mut m = OrtModel::load(&onnx, &OrtOptions { threads: 1, graph_top_k, ..Default::default() }).unwrap();
        for p in
            [SamplingParams::greedy(4), SamplingParams { top_k: 5, max_new_tokens: 4, ..SamplingParams::default() }]
        {
            let e = m.generate(reqs, &p, 0, 0).unwrap_err().to_string();
            assert!(e.contains("non-finite") || e.contains("NaN"), "graph_top_k {graph_top_k}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fused export (`--graph fused`): GroupQueryAttention over a pre-allocated cache updated in
// place, Simplified/SkipSimplifiedLayerNormalization, rotary inside the attention op.

fn fused_setup(arch: &str, dtype: ExportDType) -> Setup {
    let src = fixture_dir(arch);
    let dir = tempfile::tempdir().unwrap();
    let m = export::export(&src, dir.path(), &ExportOptions { dtype, graph: GraphKind::Fused }).unwrap();
    assert_eq!(m.graph, GraphKind::Fused);
    let ort = OrtModel::load(dir.path(), &OrtOptions { threads: 1, ..Default::default() }).unwrap();
    assert!(ort.is_fused());
    let tch = model::load_model(&src, Device::Cpu, DType::F32).unwrap();
    Setup { tch, ort, _dir: dir }
}

/// A full forward and a right-padded batch decoded token by token through the in-place cache:
/// every position's logits within 1e-4 of the tch model's.
#[test]
fn fused_export_logits_match_tch() {
    let prompts = vec![ids_single(), vec![44, 45, 46, 500, 3, 77], vec![9, 250, 128]];
    let conts = vec![vec![11, 12, 13, 14, 15], vec![301, 302, 303, 304, 305], vec![7, 7, 7, 7, 7]];
    for arch in ARCHES {
        let mut s = fused_setup(arch, ExportDType::F32);
        let ids = ids_single();
        let (shape, ort) = s.ort.logits(&ids, true).unwrap();
        assert_eq!(shape, vec![ids.len(), 512]);
        check(&format!("{arch} fused full"), max_diff(&ort, &tch_logits(&s.tch, &ids, 1, None)), TOL);
        let (shape, last) = s.ort.logits(&ids, false).unwrap();
        assert_eq!(shape, vec![512]);
        // (every-position logits come from one token per step, the last from one prefill call)
        check(&format!("{arch} fused last: prefill vs stepwise"), max_diff(&last, &ort[(ids.len() - 1) * 512..]), TOL);
        check(
            &format!("{arch} fused last"),
            max_diff(&last, &tch_logits(&s.tch, &ids, 1, None)[(ids.len() - 1) * 512..]),
            TOL,
        );

        let got = s.ort.decode_logits(&prompts, &conts).unwrap();
        let mut d = 0.0f32;
        for (r, (p, c)) in prompts.iter().zip(&conts).enumerate() {
            let seq: Vec<i64> = p.iter().chain(c).copied().collect();
            let reference = tch_logits(&s.tch, &seq, 1, None);
            for step in 0..=c.len() {
                let j = p.len() - 1 + step;
                d = d.max(max_diff(&got[r][step * 512..(step + 1) * 512], &reference[j * 512..(j + 1) * 512]));
            }
        }
        check(&format!("{arch} fused right-padded prefill + in-place decode"), d, TOL);
    }
}

/// Same seeds, same tokens as the tch model (greedy and seeded top-k/top-p, fixed batches and
/// continuous batching with refills), every row equal to the row generated alone.
#[test]
fn fused_generation_equals_tch() {
    let sampled = SamplingParams { temperature: 0.7, top_p: 0.9, top_k: 20, max_new_tokens: 24, stop_ids: vec![2] };
    let full_rows = SamplingParams { temperature: 1.0, top_p: 0.95, top_k: 0, max_new_tokens: 12, stop_ids: vec![2] };
    let prompts = [ids_single(), vec![9, 250, 128], vec![44, 45, 46, 500, 3, 77, 12, 13]];
    let reqs: Vec<GenRequest> = (0..9u64)
        .map(|s| GenRequest { prompt: prompts[(s / 3) as usize].clone(), problem_id: 20 + s / 3, sample_idx: s })
        .collect();
    let stopping =
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 10, stop_ids: (0..40).collect() };
    for arch in ARCHES {
        let mut s = fused_setup(arch, ExportDType::F32);
        for p in [SamplingParams::greedy(32), sampled.clone(), full_rows.clone()] {
            let a = model::generate(&s.tch.model, &requests(), &p, 1234, 0).unwrap();
            assert_eq!(s.ort.generate(&requests(), &p, 1234, 0).unwrap(), a, "{arch} {p:?}: fused vs tch");
        }
        // Rows stopping at different steps through 4 slots: refills, then the tail's smaller cache.
        let want = model::generate(&s.tch.model, &reqs, &stopping, 7, 0).unwrap();
        let lens: Vec<usize> = want.iter().map(|g| g.tokens.len()).collect();
        assert!(lens.iter().min() < lens.iter().max(), "{arch}: rows must end at different steps: {lens:?}");
        for slots in [1, 4, 9] {
            let mut got = vec![None; reqs.len()];
            s.ort
                .generate_stream(&reqs, &stopping, 7, 0, slots, &mut |i, g| {
                    assert!(got[i].is_none(), "request {i} reported twice");
                    got[i] = Some(g);
                    Ok(())
                })
                .unwrap();
            let got: Vec<_> = got.into_iter().map(Option::unwrap).collect();
            assert_eq!(got, want, "{arch}: continuous batching with {slots} slots vs tch");
        }
    }
}

/// Top-k and greedy draws from the graph's `TopK` equal draws from full rows; shared prefill on
/// and off give the same tokens.
#[test]
fn fused_graph_top_k_and_shared_prefill_change_nothing() {
    let reqs: Vec<GenRequest> = (0..6u64)
        .map(|s| GenRequest {
            prompt: [ids_single(), vec![9, 250, 128]][(s % 2) as usize].clone(),
            problem_id: 30 + s % 2,
            sample_idx: s,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    export::export(
        &fixture_dir("qwen3"),
        dir.path(),
        &ExportOptions { dtype: ExportDType::F32, graph: GraphKind::Fused },
    )
    .unwrap();
    let load = |graph_top_k, shared_prefill| {
        OrtModel::load(dir.path(), &OrtOptions { threads: 1, graph_top_k, shared_prefill, ..Default::default() })
            .unwrap()
    };
    let mut base = load(true, true);
    for p in [
        SamplingParams { temperature: 0.7, top_p: 0.8, top_k: 20, max_new_tokens: 16, stop_ids: (0..30).collect() },
        SamplingParams::greedy(16),
    ] {
        let want = base.generate(&reqs, &p, 5, 0).unwrap();
        for (gtk, sp) in [(false, true), (true, false), (false, false)] {
            assert_eq!(load(gtk, sp).generate(&reqs, &p, 5, 0).unwrap(), want, "graph_top_k {gtk} shared {sp}: {p:?}");
        }
    }
}

/// The f16 fused export: logits close to the f32 tch model (as the standard f16 export), and
/// greedy rows equal to the rows alone (the f16 cache copied between slots).
#[test]
fn fused_f16_export_is_close_and_rows_are_independent() {
    let mut s = fused_setup("qwen3", ExportDType::F16);
    let ids = ids_single();
    let (_, ort) = s.ort.logits(&ids, true).unwrap();
    check("qwen3 fused f16 (loose)", max_diff(&ort, &tch_logits(&s.tch, &ids, 1, None)), 5e-2);
    let std = setup("qwen3", ExportDType::F16);
    let mut std_ort = std.ort;
    let (_, std_logits) = std_ort.logits(&ids, true).unwrap();
    check("qwen3 fused f16 vs standard f16", max_diff(&ort, &std_logits), 5e-2);
    let reqs = requests();
    let batch = s.ort.generate(&reqs, &SamplingParams::greedy(8), 0, 0).unwrap();
    for i in 0..reqs.len() {
        assert_eq!(s.ort.generate(&reqs[i..i + 1], &SamplingParams::greedy(8), 0, 0).unwrap()[0], batch[i]);
    }
}

/// What the fused graph cannot do is refused by name: a head_dim ONNX Runtime's CPU kernel does
/// not take (nothing written), and mask-driven calls on a fused export.
#[test]
fn fused_export_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("hd24");
    std::fs::create_dir(&src).unwrap();
    for f in std::fs::read_dir(fixture_dir("qwen3")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, src.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap().replace("\"head_dim\": 16", "\"head_dim\": 24");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let out = tmp.path().join("onnx");
    let e = export::export(&src, &out, &ExportOptions { dtype: ExportDType::F32, graph: GraphKind::Fused })
        .unwrap_err()
        .to_string();
    assert!(e.contains("head_dim a multiple of 16") && e.contains("24") && e.contains("--graph standard"), "{e}");
    assert!(!out.exists(), "nothing written");

    let mut s = fused_setup("qwen2", ExportDType::F32);
    let kv = s.ort.empty_kv(1).unwrap();
    let e = match s.ort.forward(&[1, 2], &[1, 1], &[0, 1], kv, 0) {
        Ok(_) => panic!("a mask-driven call on a fused export must fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("fused export"), "{e}");
}
