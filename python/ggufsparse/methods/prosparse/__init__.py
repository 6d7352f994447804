"""ProSparse (arXiv 2402.13516): ReLU in the gated FFN, then fine-tuning with an L1 penalty on the
FFN's intermediate activations whose factor rises in sine-shaped stages, then FATReLU.

schedule: the regularisation factor over steps; recipe: the run's settings (convert/prosparse-*.toml);
data: training and held-out windows; train: the loop, checkpoints and resume; export: the GGUF.
"""
