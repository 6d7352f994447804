"""Print the logits of a model for fixed text as .npy; run in its own process so that the
library it loads (LLAMA_CPP_LIB_PATH) can differ from the test process's."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TEXT = ("The quick brown fox jumps over the lazy dog. Sparse activations skip work that "
        "does not change the answer, so a model can decode faster on a laptop.")


def in_subprocess(model: Path, out: Path, lib_dir: Path | None = None) -> np.ndarray:
    """The logits of TEXT from `model`, computed by the library in lib_dir (default: the patched one)."""
    env = dict(os.environ)
    if lib_dir is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    subprocess.run([sys.executable, __file__, str(model), str(out)], env=env, check=True)
    return np.load(out)


def main(model: str, out: str) -> None:
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    tokens = llm.tokenize(TEXT.encode())
    llm.eval(tokens)
    np.save(out, np.array(llm.scores[: len(tokens)], dtype=np.float32))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
