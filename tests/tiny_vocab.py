"""A vocab-only GGUF of a few hundred made-up tokens, for synthetic models whose embedding and
output matrices should stay small (files for llama-quantize and the GGUF reader, not for text)."""

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
