"""Measuring files through the runtime: perplexity, KL, multiple-choice tasks, benchmarks, sweeps,
and the inspection of a file's sparsity data."""
