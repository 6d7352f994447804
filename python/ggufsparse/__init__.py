"""ggufsparse: activation and weight sparsity for GGUF models run with llama.cpp."""

__version__ = "0.1.0"
