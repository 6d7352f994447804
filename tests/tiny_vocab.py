"""Vocab-only GGUFs of a few hundred tokens, for synthetic models whose embedding and output
matrices should stay small: made-up tokens (files for llama-quantize and the GGUF reader, not for
text), or the 256 bytes (any text, a token a byte: for calibration and fine-tuning runs)."""

from __future__ import annotations

from pathlib import Path


def tiny_vocab(path: Path, n_tokens: int = 256) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([f"t{i}" for i in range(n_tokens)])
    w.add_token_types([gguf.TokenType.NORMAL] * n_tokens)
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def byte_vocab(path: Path) -> Path:
    """GPT-2's byte-level BPE with every byte a token: BOS, EOS, the 256 bytes and two spaces, the
    one merge (llama.cpp requires merges), 259 tokens in all."""
    import gguf

    # GPT-2's printable stand-ins for the bytes (its bytes_to_unicode)
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = [b for b in range(256) if b not in kept]
    char = {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}
    space = char[ord(" ")]
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(["<s>", "</s>", *(char[b] for b in range(256)), space * 2])
    w.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * 257)
    w.add_token_merges([f"{space} {space}"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path
