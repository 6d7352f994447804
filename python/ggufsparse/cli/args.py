"""Arguments several commands share."""

from __future__ import annotations

import argparse


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a GGUF file, a known model's name, or 'default' (see `ggufsparse models`)")
    p.add_argument("-n", "--n-predict", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature; 0 is greedy (default 0.7)")
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")


def flash_attn_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-fa", "--flash-attn", choices=("auto", "on", "off"), default="auto",
                   help="flash attention, as llama.cpp's -fa (default auto: on for the CPU, as llama-perplexity; "
                   "ggml's CPU kernel rounds to f16, off computes exact f32 attention)")
