#!/usr/bin/env python3
"""Reference outputs of a GGUF model loaded by transformers itself (`from_pretrained(dir,
gguf_file=...)`, which dequantizes it), for the real-model parity test (tests/real_model.rs):

- `weights_equal` / `max_weight_diff`: transformers' dequantized state dict vs the folder our
  `import-gguf` wrote (`--imported`), tensor by tensor;
- `tokenizer_json_equal`: the tokenizer transformers builds from the GGUF vs ours, as JSON;
- `strings` + `string_ids`: a few hundred strings (ASCII, unicode, numbers, whitespace runs,
  special tokens) and their token ids under transformers' tokenizer;
- `prompts`: chat-template renders of a few problems (the paper's instruction in the user turn),
  their token ids, last-position logits and greedy 32-token continuations (EOS ignored).

Usage: .venv/bin/python scripts/gguf_reference.py --gguf FILE --imported DIR --out ref.json
"""

import argparse
import json
import os
import random
import sys

INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."
PROBLEMS = [
    "What is 12 * 13?",
    "Tom has 5 apples and buys 7 more. How many apples does he have now?",
    "Solve for x: 3x + 4 = 19.",
]


def strings(n: int) -> list:
    """Deterministic test strings: hand-picked edge cases, then seeded random mixtures."""
    fixed = [
        "", " ", "  ", "\t", "\n", "\n\n", " \n ", "Hello world!", "hello   world", "12345", "3.14159",
        "-42", "1,000,000", "x^2 + y^2 = z^2", "\\boxed{42}", "\\frac{1}{2}", "café", "naïve façade",
        "日本語のテキスト", "中文测试", "🙂🚀", "e\u0301", "Ω≈ç√∫", "<|im_start|>", "<|im_end|>",
        "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "a<|im_end|>b", "don't", "I'll", "tab\tsep",
        "trailing   ", "   leading", "line1\r\nline2", "\u00a0nbsp", "$$\\sum_{i=1}^{n} i$$",
    ]
    rng = random.Random(2506)
    pieces = ["the", " cat", "42", " 7", "  ", "\n", "\t", "é", "中", "🙂", "\\boxed{", "}", ".", ",", "?",
              " =", "+", "(", ")", "x", "Y", "'s", " -3", "0.5", "<|im_end|>", "   ", "ß", "Ж", "→"]
    out = list(fixed)
    while len(out) < n:
        out.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--imported", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--strings", type=int, default=300)
    ap.add_argument("--new-tokens", type=int, default=32)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    d, f = os.path.dirname(os.path.abspath(a.gguf)), os.path.basename(a.gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    ours = AutoModelForCausalLM.from_pretrained(a.imported, dtype=torch.float32)
    ours_tok = AutoTokenizer.from_pretrained(a.imported)

    ref_sd, our_sd = model.state_dict(), ours.state_dict()
    same_keys = set(ref_sd) == set(our_sd)
    max_w = max(float((ref_sd[k] - our_sd[k]).abs().max()) for k in ref_sd) if same_keys else None

    texts = strings(a.strings)
    rec = {
        "weights_equal": same_keys and max_w == 0.0,
        "max_weight_diff": max_w,
        "tokenizer_json_equal": json.loads(tok.backend_tokenizer.to_str()) == json.loads(ours_tok.backend_tokenizer.to_str()),
        "strings": texts,
        "string_ids": [tok.encode(t) for t in texts],
        "prompts": [],
    }
    with torch.inference_mode():
        for p in PROBLEMS:
            text = tok.apply_chat_template([{"role": "user", "content": p + INSTRUCTION}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok.encode(text)
            x = torch.tensor([ids])
            logits = model(x).logits[0, -1]
            g = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=a.new_tokens,
                               min_new_tokens=a.new_tokens, eos_token_id=None, pad_token_id=tok.pad_token_id)
            top2 = logits.topk(2).values
            rec["prompts"].append({
                "problem": p, "text": text, "ids": ids,
                "last_logits": [float(v) for v in logits.tolist()],
                "greedy": g[0, len(ids):].tolist(),
                "greedy_text": tok.decode(g[0, len(ids):]),
                "first_top2_margin": float(top2[0] - top2[1]),
            })
    with open(a.out, "w") as fh:
        json.dump(rec, fh)
    print(f"wrote {a.out}: weights equal {rec['weights_equal']}, tokenizer equal {rec['tokenizer_json_equal']}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
