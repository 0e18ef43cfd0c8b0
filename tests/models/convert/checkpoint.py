"""A Hugging Face checkpoint rebuilt from a llama-architecture GGUF, with no model hub.

What ``convert`` is tested on: the tensors dequantized with ``gguf`` (float32, so the
GGUF's quantized values survive exactly), ``model.safetensors``, ``config.json`` and
the tokenizer files (``tokenizer.json`` for the Hugging Face ``tokenizers`` library,
``tokenizer_config.json``) written from the GGUF's own metadata. The inverse of what
llama.cpp's converter does for ``LlamaForCausalLM``: tensor names back to the
Hugging Face ones, and the Q/K rows back out of the rotary layout it permutes into.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# GGUF tensor name (per block after "blk.N.") -> Hugging Face name (after "model.layers.N.")
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# The tokenizer SmolLM2 ships: digits split one by one, then GPT-2's byte-level BPE.
SMOLLM_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}
CONTROL = 3  # llama.cpp's token type for special (control) tokens


def _field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo the converter's ``LlamaModel.permute`` of Q/K rows (rotary halves interleaved)."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{suffix}"
    return f"{TOP_NAMES[base]}.{suffix}"


def write_tensors(reader: GGUFReader, out: Path, n_head: int, n_head_kv: int) -> None:
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        data = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        kind = tensor.name.split(".")[-2]
        if kind == "attn_q":
            data = unpermute(data, n_head)
        elif kind == "attn_k":
            data = unpermute(data, n_head_kv)
        tensors[hf_name(tensor.name)] = np.ascontiguousarray(data)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def write_tokenizer(reader: GGUFReader, out: Path) -> dict[str, Any]:
    model = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre")
    if (model, pre) != ("gpt2", "smollm"):
        raise ValueError(f"only SmolLM's byte-level BPE is rebuilt here, not {model}/{pre}")
    tokens: list[str] = _field(reader, "tokenizer.ggml.tokens")
    types: list[int] = _field(reader, "tokenizer.ggml.token_type")
    merges: list[str] = _field(reader, "tokenizer.ggml.merges")
    added = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, (tok, kind) in enumerate(zip(tokens, types, strict=True))
        if kind == CONTROL
    ]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": SMOLLM_PRE_TOKENIZER,
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": merges,
        },
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    ids = {
        name: _field(reader, f"tokenizer.ggml.{name}_token_id")
        for name in ("bos", "eos", "unknown", "padding")
    }
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "bos_token": tokens[ids["bos"]],
        "eos_token": tokens[ids["eos"]],
        "unk_token": tokens[ids["unknown"]],
        "pad_token": tokens[ids["padding"]],
        "added_tokens_decoder": {
            str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added
        },
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1))
    return ids


def build_checkpoint(gguf_path: Path, out: Path) -> Path:
    """Write a ``LlamaForCausalLM`` checkpoint of ``gguf_path`` into ``out``; returns ``out``."""
    reader = GGUFReader(gguf_path)
    if _field(reader, "general.architecture") != "llama":
        raise ValueError(f"{gguf_path}: only the llama architecture is rebuilt here")

    def hp(key: str) -> Any:
        return _field(reader, f"llama.{key}")

    n_head, n_head_kv = hp("attention.head_count"), hp("attention.head_count_kv")
    out.mkdir(parents=True, exist_ok=True)
    names = {t.name for t in reader.tensors}
    write_tensors(reader, out, n_head, n_head_kv)
    ids = write_tokenizer(reader, out)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hp("embedding_length"),
        "intermediate_size": hp("feed_forward_length"),
        "num_hidden_layers": hp("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "head_dim": hp("rope.dimension_count"),
        "rms_norm_eps": float(np.float32(hp("attention.layer_norm_rms_epsilon"))),
        "rope_theta": hp("rope.freq_base"),
        "rope_scaling": None,
        "max_position_embeddings": hp("context_length"),
        "vocab_size": len(_field(reader, "tokenizer.ggml.tokens")),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["padding"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


if __name__ == "__main__":
    import sys

    print(build_checkpoint(Path(sys.argv[1]), Path(sys.argv[2])))
