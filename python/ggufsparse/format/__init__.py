"""The GGUF side: the names of every tensor, key, site and runtime statistic (layout), reading and
writing files, and the transposed and packed copies the runtime reads."""
