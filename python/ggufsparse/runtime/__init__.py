"""The patched llama.cpp runtime: fetching its source, building it and finding it."""
