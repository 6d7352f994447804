"""A PyTorch (transformers) model from a GGUF file, for calibration and the reference forward.

The model is built on the meta device and its weights are dequantized with gguf-py one tensor
at a time, straight into the model's dtype. Calibration loads one decoder layer at a time
(`load_layer` / `unload_layer`), so its memory is one layer plus the embeddings whatever the
depth; the reference loads everything (`load_all`). Name mapping and the per-architecture
weight fixes (q/k un-permutation, Gemma's norm offset) are transformers' own.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.format.gguf_io import dequantize_rows
from ggufsparse.models import activation

# llama.cpp architecture names the converter supports
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def gguf_architecture(reader) -> str:
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError(f"{reader.data.filename}: no general.architecture key; not a model GGUF")
    return field.contents()


def check_supported(arch: str, path: Path) -> None:
    if arch not in SUPPORTED_ARCHS:
        raise UserError(f"{path}: architecture '{arch}' is not supported; supported: {', '.join(SUPPORTED_ARCHS)}")


class _TopLevelOnly:
    """The model as transformers' name mapping sees it, minus the walk into every submodule.

    The top level's state dict already names every weight for the supported architectures;
    the recursive walk builds a name table per module and costs seconds.
    """

    def __init__(self, model):
        self.config = model.config
        self._model = model

    def state_dict(self):
        return self._model.state_dict()

    def named_children(self):
        return iter(())


class GGUFTorchModel:
    """A transformers causal LM whose weights come from a GGUF file on demand."""

    def __init__(self, path: Path, dtype: str = "float32"):
        import torch
        from accelerate import init_empty_weights
        from transformers import CONFIG_MAPPING, AutoModelForCausalLM
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
            get_gguf_hf_weights_map,
            load_gguf_checkpoint,
        )

        from ggufsparse.format.gguf_io import open_reader

        self.path = Path(path)
        self.reader = open_reader(self.path)
        self.arch = gguf_architecture(self.reader)
        check_supported(self.arch, self.path)
        self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self._parsed = load_gguf_checkpoint(str(self.path), return_tensors=False)
            # what AutoConfig.from_pretrained(gguf_file=...) does, without parsing the file again
            config_dict = dict(self._parsed["config"])
            self.config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
        except (ValueError, KeyError, OSError) as exc:
            raise UserError(f"{self.path}: transformers cannot read this model's configuration ({exc})") from None
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(self.config, dtype=self.dtype)
        self.model.eval()
        # a ProSparse file's FFN activation (ReLU, FATReLU) replaces the architecture's own
        self.activation = activation.read(self.reader)
        if self.activation is not None:
            activation.install(self.layers, self.activation)
        self._processor = TENSOR_PROCESSORS.get(self.arch, TensorProcessor)(config=self._parsed["config"])
        self._key_map = get_gguf_hf_weights_map(_TopLevelOnly(self.model), self._processor)
        self._by_block: dict[int | None, list] = {}
        for tensor in self.reader.tensors:
            if tensor.name not in self._key_map:
                continue  # ggufsparse's extra tensors, rope tables the model computes itself, ...
            m = _BLOCK.match(tensor.name)
            self._by_block.setdefault(int(m.group(1)) if m else None, []).append(tensor)

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def layers(self) -> list:
        return list(self.model.model.layers)

    def tensor(self, name: str):
        """The GGUF tensor (gguf-py ReaderTensor) of that name, or None."""
        return next((t for block in self._by_block.values() for t in block if t.name == name), None)

    def to_module_layout(self, name: str, array: np.ndarray) -> np.ndarray:
        """An array in GGUF tensor `name`'s layout moved to its module's layout (transformers'
        per-architecture fixes, e.g. llama's q/k row order); rows and columns move as the weights do."""
        return self._processor.process(weights=array, name=name, tensor_key_mapping=self._key_map,
                                       parsed_parameters=self._parsed).weights

    def to_gguf_layout(self, name: str, array: np.ndarray) -> np.ndarray:
        """The inverse of to_module_layout, for writing trained weights back into the file.

        transformers' fixes move whole rows (llama's q/k order) or add a constant (Gemma's norm
        offset); both are read off by probing the fix with row indices and zeros."""
        array = np.asarray(array, dtype=np.float32)
        probe_shape = (array.shape[0],) + (1,) * (array.ndim - 1)
        offset = self.to_module_layout(name, np.zeros(probe_shape, np.float64))
        moved = self.to_module_layout(name, np.arange(array.shape[0], dtype=np.float64).reshape(probe_shape)) - offset
        order = np.rint(moved.reshape(-1)).astype(np.int64)
        out = np.empty_like(array)
        out[order] = array - offset.astype(np.float32)
        if not np.allclose(self.to_module_layout(name, out), array, rtol=1e-6, atol=1e-6):
            raise ValueError(f"{name}: transformers' layout fix is not a row move plus a constant")
        return out

    def _load(self, tensors: list) -> None:
        import torch
        from accelerate.utils import set_module_tensor_to_device

        for tensor in tensors:
            weights = dequantize_rows(tensor.data, tensor.tensor_type)
            weights = self.to_module_layout(tensor.name, weights)
            # a fresh array from dequantize is used as is; a read-only view of the file is copied
            value = torch.from_numpy(np.require(weights, np.float32, ["C", "W"])).to(self.dtype)
            set_module_tensor_to_device(self.model, self._key_map[tensor.name], "cpu", value=value)

    def load_globals(self, head: bool = True) -> None:
        """Embeddings, final norm and (if head) the output head, tied to the embeddings when the
        model says so. Calibration stops before the head and leaves it out."""
        tensors = self._by_block.get(None, [])
        if not head:
            tensors = [t for t in tensors if t.name != "output.weight"]
        self._load(tensors)
        if head and getattr(self.config, "tie_word_embeddings", False):
            self.model.tie_weights()

    def load_layer(self, i: int) -> None:
        self._load(self._by_block.get(i, []))
        meta = [n for n, p in self.layers[i].named_parameters() if p.device.type == "meta"]
        if meta:
            raise UserError(f"{self.path}: no GGUF tensor for layer {i}'s {meta[0]}")

    def unload_layer(self, i: int) -> None:
        self.layers[i].to("meta")

    def load_all(self) -> None:
        self.load_globals()
        for i in range(self.n_layers):
            self.load_layer(i)
        meta = [n for n, p in self.model.named_parameters() if p.device.type == "meta"]
        if meta:
            raise UserError(f"{self.path}: no GGUF tensor for {meta[0]} (and {len(meta) - 1} more)")


def load(path: Path, dtype: str = "float32") -> GGUFTorchModel:
    """The whole model, ready for a forward pass."""
    model = GGUFTorchModel(path, dtype)
    model.load_all()
    return model
