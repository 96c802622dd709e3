"""Save a random-weight model with the real Qwen3-4B shape (bf16, on CUDA) to DIR, for the GPU checks.

usage: python scripts/make_qwen3_4b_random.py DIR
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM, Qwen3Config

t0 = time.time()
cfg = Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0,
                  max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  attention_bias=False, bos_token_id=151643, eos_token_id=151645)
torch.manual_seed(0)
with torch.device("cuda"):
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
m.save_pretrained(sys.argv[1], max_shard_size="4GB")
print(f"created {sum(p.numel() for p in m.parameters())/1e9:.2f}B params in {time.time()-t0:.0f}s")
