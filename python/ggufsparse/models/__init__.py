"""Models: the known local models, Hugging Face import, synthetic models, tokenizers, and the PyTorch
model built from a GGUF that calibration and the reference run."""
