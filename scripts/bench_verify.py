#!/usr/bin/env python3
"""Benchmark `rlvr-decomp verify` against math-verify==0.9.0 on the same cases.

Usage:
    .venv/bin/python scripts/bench_verify.py --bin target/release/rlvr-decomp \
        --cases tests/data/verify_cases.jsonl --out results/bench/verify.json

* math-verify: `verify(parse(gold), parse(response))` per case (gold wrapped in
  `\\boxed{}` unless it already contains a box or `$`), cases repeated until at
  least `--mv-seconds` (default 5) seconds have elapsed.
* ours: the binary with `--stats-json --threads 1` over a temporary file holding
  the cases repeated to at least `--min-lines` (default 100k) lines; its cases/s
  is timed around the verification loop only (no I/O).
* agreement: fraction of cases where our lenient verdict equals math-verify's
  (cases where math-verify raises/returns no verdict are skipped).

Only the standard library and math_verify are used.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def wrap_gold(g: str) -> str:
    return g if ("\\boxed" in g or "$" in g) else "\\boxed{" + g + "}"


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()} | {platform.system()} {platform.release()} | {cpu} | {os.cpu_count()} cpus | python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path to the rlvr-decomp binary (release build)")
    ap.add_argument("--cases", required=True, help="JSONL with gold/response fields")
    ap.add_argument("--out", required=True, help="output JSON path")
    ap.add_argument("--mv-seconds", type=float, default=5.0)
    ap.add_argument("--min-lines", type=int, default=100_000)
    ap.add_argument("--mode", default="lenient", choices=["lenient", "strict"])
    ap.add_argument("--threads", type=int, default=1,
                    help="worker threads for our binary (default 1: same single core as math-verify)")
    args = ap.parse_args()

    try:
        from math_verify import parse, verify  # noqa: WPS433
    except ImportError:
        print("math_verify is not installed in this interpreter: pip install math-verify==0.9.0", file=sys.stderr)
        return 2

    with open(args.cases, encoding="utf-8") as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    cases = [json.loads(l) for l in lines]
    n = len(cases)
    if n == 0:
        print("no cases", file=sys.stderr)
        return 2

    def mv_one(c):
        try:
            g = parse(wrap_gold(c["gold"]))
            r = parse(c["response"])
            if not g:
                return None
            return bool(verify(g, r))
        except Exception:  # math-verify gives no verdict
            return None

    # 1. math-verify verdicts (first pass) + timing (repeat until >= mv-seconds)
    mv_verdicts = []
    done = 0
    t0 = time.perf_counter()
    for c in cases:
        mv_verdicts.append(mv_one(c))
        done += 1
    while time.perf_counter() - t0 < args.mv_seconds:
        for c in cases:
            mv_one(c)
            done += 1
            if time.perf_counter() - t0 >= args.mv_seconds:
                break
    mv_seconds = time.perf_counter() - t0
    mv_cps = done / mv_seconds

    with tempfile.TemporaryDirectory() as td:
        # 2. our verdicts on the case file
        ours_out = os.path.join(td, "ours.jsonl")
        subprocess.run(
            [args.bin, "verify", "--input", args.cases, "--output", ours_out, "--mode", args.mode],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        with open(ours_out, encoding="utf-8") as f:
            ours = [json.loads(l) for l in f if l.strip()]
        agree = total = 0
        disagreements = []
        for c, m, o in zip(cases, mv_verdicts, ours):
            if m is None:
                continue
            total += 1
            if m == o["correct"]:
                agree += 1
            else:
                disagreements.append({"gold": c["gold"], "response": c["response"][-200:], "math_verify": m,
                                      "ours": o["correct"], "extracted": o.get("extracted"), "note": c.get("note", "")})
        agreement = agree / total if total else float("nan")

        # 3. our throughput on >= min-lines cases
        reps = max(1, -(-args.min_lines // n))
        big = os.path.join(td, "big.jsonl")
        with open(big, "w", encoding="utf-8") as f:
            for _ in range(reps):
                f.write("\n".join(lines))
                f.write("\n")
        stats_path = os.path.join(td, "stats.json")
        subprocess.run(
            [args.bin, "verify", "--input", big, "--output", os.path.join(td, "big.out.jsonl"), "--mode", args.mode,
             "--stats-json", stats_path, "--threads", str(args.threads)],
            check=True,
        )
        with open(stats_path) as f:
            stats = json.load(f)

    ours_cps = float(stats["cases_per_s"])
    result = {
        "machine": machine(),
        "n_cases": n,
        "ours_cases_per_s": ours_cps,
        "ours_n": stats["n"],
        "ours_seconds": stats["seconds"],
        "ours_threads": stats.get("threads", args.threads),
        "math_verify_cases_per_s": mv_cps,
        "math_verify_n": done,
        "math_verify_seconds": mv_seconds,
        "ratio": ours_cps / mv_cps if mv_cps > 0 else None,
        "agreement_with_math_verify": agreement,
        "agreement_n": total,
        "mode": args.mode,
        "disagreements": disagreements,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    print(f"machine: {result['machine']}")
    print(f"ours:        {ours_cps:12.0f} cases/s  ({stats['n']} cases in {stats['seconds']:.3f} s)")
    print(f"math-verify: {mv_cps:12.1f} cases/s  ({done} cases in {mv_seconds:.2f} s)")
    print(f"ratio:       {result['ratio']:12.0f}x")
    print(f"agreement with math-verify: {agreement:.4f} ({agree}/{total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
