# The C extension speculative/_topk.c (built by setup.py)
from typing_extensions import Buffer

def top_k(
    logits: Buffer, vocab: int, rows: Buffer, k: int, out_ids: Buffer, out_vals: Buffer
) -> None: ...
