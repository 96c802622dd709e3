#!/usr/bin/env python3
"""Build golden/inputs/report-run/: a small, fixed run folder for the golden check.

It keeps, from a real run (e.g. results/mini after `make reproduce` and `make reproduce
PROFILE=ablations`), only what the report and the claims read, trimmed:

  eval/<m>/seed<S>/passk.json             -> {"datasets": {name: {"report": {"pass_at_k": ...}}}}
  rl/<m>/seed<S>/metrics.jsonl            -> step, prompts, correct_ratio, fully_solved_ratio
  rl/<m>/seed<S>/eval_metrics.jsonl       -> step, dataset, accuracy, entropy
  gradient/<name>.json                    -> tokens, probs, grad.{psr,nsr}.prob, correct
  experiments/<e>/...                     -> the same, recursively

Floats are rounded to 6 decimals. The output is committed; the golden check renders Table 1, the
claims and every figure from it, so those hashes test the report code alone.

usage: scripts/make_golden_inputs.py RUN OUT
"""
import json
import os
import shutil
import sys


def rnd(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [rnd(x) for x in v]
    if isinstance(v, dict):
        return {k: rnd(x) for k, x in v.items()}
    return v


def trim_jsonl(src, dst, keep):
    rows = []
    with open(src) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                rows.append({k: rnd(d[k]) for k in keep if k in d})
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")


def write_json(dst, obj):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w") as f:
        json.dump(obj, f, sort_keys=True)
        f.write("\n")


def copy_run(run, out):
    for root, _dirs, files in os.walk(run):
        rel = os.path.relpath(root, run)
        parts = rel.split(os.sep)
        if "checkpoints" in parts or "samples" in parts or "export" in parts or "report" in parts:
            continue
        for name in files:
            src = os.path.join(root, name)
            dst = os.path.join(out, rel, name)
            if parts[0] == "eval" and name == "passk.json":
                d = json.load(open(src))
                write_json(dst, {"datasets": {k: {"report": {"pass_at_k": rnd(v["report"]["pass_at_k"])}}
                                              for k, v in d["datasets"].items()}})
            elif parts[0] == "rl" and name == "metrics.jsonl":
                trim_jsonl(src, dst, ["step", "prompts", "correct_ratio", "fully_solved_ratio"])
            elif parts[0] == "rl" and name == "eval_metrics.jsonl":
                trim_jsonl(src, dst, ["step", "dataset", "accuracy", "entropy"])
            elif parts[0] == "gradient" and name.endswith(".json"):
                d = json.load(open(src))
                g = {"tokens": d["tokens"], "probs": rnd(d["probs"]),
                     "grad": {s: {"prob": rnd(d["grad"][s]["prob"])} for s in ("psr", "nsr")}}
                if "correct" in d:
                    g["correct"] = d["correct"]
                write_json(dst, g)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run, out = sys.argv[1], sys.argv[2]
    if os.path.exists(out):
        shutil.rmtree(out)
    copy_run(run, out)
    exp = os.path.join(run, "experiments")
    if os.path.isdir(exp):
        for e in sorted(os.listdir(exp)):
            copy_run(os.path.join(exp, e), os.path.join(out, "experiments", e))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
