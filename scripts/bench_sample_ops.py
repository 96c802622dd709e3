#!/usr/bin/env python3
"""Where a decode step's time goes, per operator: ONNX Runtime's own profiler (`sample
--ort-profile`) on scripts/bench_sample.py's model and workload (random Qwen2 h256 x 4, vocab 151,936,
one MATH-500 prompt, T 0.7 / top-p 0.8 / top-k 20, EOS ignored), for the standard and the fused
export side by side; and libtorch's own profiler (`generate --profile-ops`) on the tch decode loops,
dynamic and static, on the same model and workload.

For each graph: milliseconds per model run split into prefill (the first run) and decode steps,
and the decode steps' kernel time summed per operator type (share of the decode kernel time), so
the note can say what dominates and what the fused graph removed. For each tch loop: host self time
per aten op over decode steps 8-11 (on a GPU machine the same command adds CUDA kernel time).

Usage: .venv/bin/python scripts/bench_sample_ops.py [--bin target/release/rlvr-decomp]
         [--batch 256] [--new-tokens 32] [--threads 2] [--out results/bench/sample_ops.json]
"""

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench_sample  # noqa: E402  (the model and the sampling settings)


def summarise(trace: Path) -> dict:
    events = json.loads(trace.read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs.sort(key=lambda e: e["ts"])
    if len(runs) < 2:
        sys.exit(f"{trace}: {len(runs)} model runs (need a prefill and decode steps)")
    first_end = runs[0]["ts"] + runs[0]["dur"]
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e["ts"] < first_end:
            continue  # the prefill
        per_op[e.get("args", {}).get("op_name", "?")] += e["dur"]
    total = sum(per_op.values())
    decode = [r["dur"] for r in runs[1:]]
    return {
        "model_runs": len(runs),
        "prefill_ms": runs[0]["dur"] / 1e3,
        "decode_ms_per_step": sum(decode) / len(decode) / 1e3,
        "decode_kernel_ms_per_step": total / len(decode) / 1e3,
        "decode_kernel_share_by_op": {op: round(t / total, 4) for op, t in per_op.most_common()},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/rlvr-decomp"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results/bench/sample_ops.json"))
    a = ap.parse_args()
    tokenizer = Path(os.environ.get("RLVR_TOKENIZER", ROOT / ".venv/share/qwen3-tokenizer/tokenizer.json"))
    res = {"what": "per-operator profiles of sampling (decode steps): ONNX Runtime standard vs fused export; "
                   "tch dynamic vs static decode loop",
           "model": {"arch": "Qwen2ForCausalLM (random)", "hidden": 256, "layers": 4, "vocab": 151936},
           "batch": a.batch, "new_tokens": a.new_tokens, "threads": a.threads, "binary": a.bin,
           "sampling": {"temperature": bench_sample.T, "top_p": bench_sample.TOP_P, "top_k": bench_sample.TOP_K},
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}, "graphs": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        hf = td / "hf"
        bench_sample.make_model(hf, 256, 4, 151936)
        shutil.copy(tokenizer, hf / "tokenizer.json")
        for graph in ["standard", "fused"]:
            onnx = td / graph
            subprocess.run([a.bin, "export", "--model", str(hf), "--out", str(onnx), "--graph", graph], check=True,
                           stdout=subprocess.DEVNULL)
            prefix = td / f"profile-{graph}"
            cmd = [a.bin, "sample", "--onnx", str(onnx), "--dataset", "math500", "--limit", "1", "--k", str(a.batch),
                   "--batch", str(a.batch), "--max-new-tokens", str(a.new_tokens), "--ignore-eos", "--template",
                   "qwen2.5-math", "--temperature", str(bench_sample.T), "--top-p", str(bench_sample.TOP_P),
                   "--top-k", str(bench_sample.TOP_K), "--seed", "0", "--threads", str(a.threads),
                   "--out", str(td / f"samples-{graph}"), "--ort-profile", str(prefix)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            traces = sorted(td.glob(f"profile-{graph}*.json"))
            if len(traces) != 1:
                sys.exit(f"expected one profile for {graph}, found {traces}")
            res["graphs"][graph] = summarise(traces[0])
            g = res["graphs"][graph]
            top = ", ".join(f"{op} {s:.0%}" for op, s in list(g["decode_kernel_share_by_op"].items())[:5])
            print(f"{graph}: prefill {g['prefill_ms']:.1f} ms, decode {g['decode_ms_per_step']:.2f} ms/step "
                  f"({g['decode_kernel_ms_per_step']:.2f} ms in kernels: {top})", flush=True)
        res["tch"] = {}
        prompt = bench_sample.bench_prompt()
        for decode in ["dynamic", "static"]:
            prefix = td / f"tch-{decode}"
            cmd = [a.bin, "generate", "--model", str(hf), "--prompt", prompt, "--n", str(a.batch),
                   "--max-new-tokens", str(a.new_tokens), "--ignore-eos", "--temperature", str(bench_sample.T),
                   "--top-p", str(bench_sample.TOP_P), "--top-k", str(bench_sample.TOP_K), "--seed", "0",
                   "--decode", decode, "--profile-ops", str(prefix),
                   "--out", str(td / f"gen-{decode}.json")]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            p = json.loads(Path(f"{prefix}.json").read_text())
            res["tch"][decode] = p
            top = ", ".join(f"{r['name']} {r['share']:.0%}" for r in p["summary"]["host_ops"][:5])
            print(f"tch {decode}: {p['summary']['host_ms_per_step']:.2f} ms/step in libtorch ops "
                  f"(self time: {top})", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
