"""The PyTorch reference of the sparse forward, and the sensitivities and per-layer allocation
measured with it."""
