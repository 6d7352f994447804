"""A conversion recipe: the fields of `ggufsparse convert`, loadable from a TOML file in convert/.

The CLI flags are the same fields; a flag given on the command line overrides the recipe. The
recipe that made a file is written into it (`ggufsparse.recipe`) as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import tomllib

from ggufsparse.errors import UserError
from ggufsparse.methods import (
    ACTIVATION_METHODS,
    CHESS_NORMS,
    FFN_METHODS,
    NM_COMBINED_METHODS,
    NM_METHODS,
    SHUFFLES,
    TEAL_ALLOCATIONS,
    TEAL_METHODS,
    parse_pattern,
)
from ggufsparse.paths import RECIPES_DIR

ALLOCATIONS = ("none", "kl")  # per-layer levels: the same everywhere, or chosen by end-to-end KL
# N:M storage: pruned weights zeroed in place; and the packed copies that decode reads (docs/esparse.md)
NM_STORAGES = ("packed", "masked+packed", "masked")


def _flag(help: str, group: str | None = None, parse=None) -> dict:
    """A field's command-line flag: its help, its argument group in `ggufsparse convert --help`, and
    for a field given as text, the function that parses it."""
    return {"help": help, "group": group, "parse": parse}


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{text}: give block indices separated by commas, e.g. 0,-1") from None


ALLOC_GROUP = "per-layer allocation (chess, cats; docs/allocation.md)"
TEAL_GROUP = "TEAL (teal, chess+teal; docs/teal.md)"
NM_GROUP = "N:M weight pruning (magnitude, wanda, esparse; docs/esparse.md)"


@dataclass(frozen=True)
class Recipe:
    method: str = field(default="chess", metadata=_flag(
        "chess (default), cats, teal or chess+teal (activation thresholds); magnitude, wanda or esparse (N:M "
        "weight pruning, see --nm); chess+esparse (E-Sparse pruning, then CHESS's thresholds calibrated on the "
        "pruned model)"))
    # FFN: fraction of channel activations below threshold on calibration text
    sparsity: float = field(default=0.5, metadata=_flag(
        "FFN sparsity target in [0, 1) (default 0.5); teal: the parameter-weighted level of every block's "
        "projection inputs"))
    # CHESS selective: q and output projection inputs; None = dense
    attn_sparsity: float | None = field(default=None, metadata=_flag(
        "sparsity of the attention q and output projection inputs in [0, 1) (default: dense); chess+teal: "
        "TEAL's level for q, k, v and output"))
    chess_norm: str = field(default="l2", metadata=_flag(
        "l2: m_i = E[up_i^2] as in the paper (default); l1: m_i = E|up_i|"))
    # chess/cats: also threshold ffn_down's input (the products act(gate)*up of the kept channels) so
    # that this fraction of it is zero on calibration text; >= sparsity; None = down skips what the gate does
    down_sparsity: float | None = field(default=None, metadata=_flag(
        "chess, cats: also cut the down projection's input (act(gate)*up) to this level in [--sparsity, 1), so "
        "down skips the kept channels whose product is small too; --sparsity 0.4 --down-sparsity 0.6 skips as "
        "many weights as --sparsity 0.5 (docs/allocation.md)"))
    calib: str | None = field(default=None, metadata=_flag(  # file; None = the C4 sample
        "calibration text, .txt or .jsonl with a \"text\" field, optionally .gz (default: the C4 sample in "
        "../shared/data/c4)"))
    calib_tokens: int = field(default=8192, metadata=_flag("calibration tokens (default 8192)"))
    calib_seq_len: int = field(default=512, metadata=_flag("tokens per calibration window (default 512)"))
    # per-layer allocation (docs/allocation.md): none, or kl
    allocate: str = field(default="none", metadata=_flag(
        "none (default): every layer at --sparsity; kl: per-layer (and with --attn-sparsity per-projection) "
        "levels chosen to minimise the KL to the dense model at the same parameter sparsity, measured on "
        "held-out calibration text", ALLOC_GROUP))
    # held-out calibration windows for the sensitivity table
    alloc_windows: int = field(default=8, metadata=_flag(
        "held-out calibration windows after the calibration ones (default 8)", ALLOC_GROUP))
    alloc_draws: int = field(default=2, metadata=_flag(
        "sampled tokens (backward passes) per window (default 2)", ALLOC_GROUP))
    alloc_step: float = field(default=0.025, metadata=_flag(
        "spacing of the candidate levels (default 0.025)", ALLOC_GROUP))
    # TEAL (methods/teal.py): sparsity = the parameter-weighted level of each block's sparse inputs
    teal_alloc: str = field(default="greedy", metadata=_flag(
        "greedy (default): per block, raise whichever projection's level adds the least block-output error per "
        "skipped weight; uniform: every projection at the level", TEAL_GROUP))
    teal_step: float = field(default=0.02, metadata=_flag(
        "greedy: weights skipped per step, as a fraction of the block's (default 0.02)", TEAL_GROUP))
    teal_windows: int = field(default=2, metadata=_flag(
        "greedy: calibration windows each block is re-run on (default 2)", TEAL_GROUP))
    # N:M methods (magnitude, wanda, esparse); docs/esparse.md
    nm: str = field(default="2:4", metadata=_flag(
        "keep N of every M consecutive inputs of each weight row (default 2:4; M <= 16)", NM_GROUP))
    # none | global | global+local; None: global+local for esparse, else none
    nm_shuffle: str | None = field(default=None, metadata=_flag(
        "input channel reordering before choosing: none, global or global+local (default: global+local for "
        "esparse, none otherwise)", NM_GROUP))
    # esparse: weight of the input norm beside the entropy (both mean-normalised)
    nm_alpha: float = field(default=4.0, metadata=_flag(
        "esparse: weight of the input norm beside the entropy (default 4)", NM_GROUP))
    nm_bins: int = field(default=64, metadata=_flag(
        "esparse: histogram bins for each channel's entropy (default 64)", NM_GROUP))
    nm_block: int = field(default=32, metadata=_flag(
        "local block shuffle: channels per block (default 32)", NM_GROUP))
    nm_passes: int = field(default=2, metadata=_flag(
        "local block shuffle: greedy passes per block (default 2)", NM_GROUP))
    # blocks left dense (negative counts from the end)
    nm_dense_blocks: tuple[int, ...] = field(default=(), metadata=_flag(
        "blocks left dense, e.g. 0,-1 for the first and last", NM_GROUP, parse=int_tuple))
    # packed | masked+packed | masked; None: packed, or masked+packed for chess+esparse (whose
    # thresholds need the dense weights)
    nm_storage: str | None = field(default=None, metadata=_flag(
        "packed (default; masked+packed with chess+esparse): each pruned weight only as its packed copy (kept "
        "values, positions, permutation), which decode reads and prompts expand to a dense weight: the file and "
        "memory shrink; masked+packed: also the pruned weights zeroed in place, which prompts use; masked: the "
        "zeroed weights only (any llama.cpp runs it)", NM_GROUP))

    @property
    def is_nm(self) -> bool:
        return self.method in NM_METHODS

    @property
    def prunes_nm(self) -> bool:
        """N:M pruning alone, or with CHESS's thresholds on top (chess+esparse)."""
        return self.is_nm or self.method in NM_COMBINED_METHODS

    @property
    def is_teal(self) -> bool:
        return self.method in TEAL_METHODS

    @property
    def shuffle(self) -> str:
        if self.nm_shuffle is not None:
            return self.nm_shuffle
        return "global+local" if self.method in ("esparse", *NM_COMBINED_METHODS) else "none"

    @property
    def storage(self) -> str:
        if self.nm_storage is not None:
            return self.nm_storage
        return "masked+packed" if self.method in NM_COMBINED_METHODS else "packed"

    def validate(self) -> Recipe:
        known = FFN_METHODS + TEAL_METHODS + NM_METHODS + NM_COMBINED_METHODS + ACTIVATION_METHODS
        if self.method not in known:
            raise UserError(f"--method {self.method}: unknown; choose one of {', '.join(known)}")
        if self.allocate not in ALLOCATIONS:
            raise UserError(f"--allocate {self.allocate}: choose one of {', '.join(ALLOCATIONS)}")
        if self.allocate != "none" and self.prunes_nm:
            raise UserError(f"--allocate: for the activation methods, not --method {self.method}")
        if self.allocate != "none" and self.is_teal:
            raise UserError(f"--allocate: for chess and cats; --method {self.method} allocates with --teal-alloc")
        if self.is_teal:
            self._validate_teal()
        if self.alloc_windows < 1 or self.alloc_draws < 1 or not 0.001 <= self.alloc_step <= 0.5:
            raise UserError("--alloc-windows and --alloc-draws must be >= 1, --alloc-step in [0.001, 0.5]")
        if self.prunes_nm:
            parse_pattern(self.nm)
        if self.is_nm and self.attn_sparsity is not None:
            raise UserError(f"--attn-sparsity: not used by --method {self.method} (N:M weight pruning)")
        if self.storage not in NM_STORAGES:
            raise UserError(f"--nm-storage {self.storage}: choose one of {', '.join(NM_STORAGES)}")
        if self.storage == "packed" and self.method in NM_COMBINED_METHODS:
            raise UserError(f"--nm-storage packed: not with --method {self.method}, whose activation thresholds "
                            "need the dense weights (use masked+packed)")
        if self.shuffle not in SHUFFLES:
            raise UserError(f"--nm-shuffle {self.shuffle}: choose one of {', '.join(SHUFFLES)}")
        if self.shuffle != "none" and self.method == "magnitude":
            raise UserError("--nm-shuffle: channel shuffles need calibration statistics; not with magnitude")
        if self.nm_alpha < 0 or self.nm_bins < 2 or self.nm_block < 2 or self.nm_passes < 0:
            raise UserError("--nm-alpha must be >= 0, --nm-bins and --nm-block >= 2, --nm-passes >= 0")
        self._validate_down()
        for name, value in (("--sparsity", self.sparsity), ("--attn-sparsity", self.attn_sparsity)):
            if value is not None and not 0.0 <= value < 1.0:
                raise UserError(f"{name} {value}: must be in [0, 1)")
        if self.chess_norm not in CHESS_NORMS:
            raise UserError(f"--chess-norm {self.chess_norm}: choose one of {', '.join(CHESS_NORMS)}")
        if self.calib_seq_len < 2:
            raise UserError(f"--calib-seq-len {self.calib_seq_len}: must be at least 2")
        if self.calib_tokens < self.calib_seq_len:
            raise UserError(f"--calib-tokens {self.calib_tokens}: must be at least one sequence "
                            f"(--calib-seq-len {self.calib_seq_len})")
        return self

    def _validate_down(self) -> None:
        if self.down_sparsity is None:
            return
        if self.method not in FFN_METHODS:
            raise UserError(f"--down-sparsity: for chess and cats, not --method {self.method}")
        if not self.sparsity <= self.down_sparsity < 1.0:
            raise UserError(f"--down-sparsity {self.down_sparsity}: must be in [--sparsity, 1) "
                            f"(--sparsity {self.sparsity}); the gate's zero channels are already zero at down's input")
        if self.allocate != "none":
            raise UserError("--down-sparsity: not with --allocate kl (the allocation chooses the gate levels only)")

    def _validate_teal(self) -> None:
        if self.teal_alloc not in TEAL_ALLOCATIONS:
            raise UserError(f"--teal-alloc {self.teal_alloc}: choose one of {', '.join(TEAL_ALLOCATIONS)}")
        if not 0.001 <= self.teal_step <= 0.5 or self.teal_windows < 1:
            raise UserError("--teal-step must be in [0.001, 0.5], --teal-windows >= 1")
        if self.method == "teal" and self.attn_sparsity is not None:
            raise UserError("--attn-sparsity: not with --method teal, whose --sparsity covers every projection "
                            "(chess+teal: CHESS's FFN at --sparsity, TEAL's attention at --attn-sparsity)")
        if self.method == "chess+teal" and self.attn_sparsity is None:
            raise UserError("--method chess+teal needs --attn-sparsity (TEAL's level for q, k, v and output)")
        if self.teal_alloc == "greedy" and self.teal_windows * self.calib_seq_len > self.calib_tokens:
            # the uniform allocation runs no block, so it needs no windows
            raise UserError(f"--teal-windows {self.teal_windows}: more than the calibration windows")

    def to_json(self) -> str:
        fields_ = asdict(self)
        if not self.is_nm:  # files of the activation methods keep the recipe they always had
            if not self.prunes_nm:
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("nm")}
            if self.allocate == "none":
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("alloc")}
            if not self.is_teal:
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("teal")}
            if self.down_sparsity is None:
                fields_.pop("down_sparsity")
        if self.prunes_nm:
            fields_["nm_shuffle"] = self.shuffle
            fields_["nm_storage"] = self.storage
            fields_["nm_dense_blocks"] = list(self.nm_dense_blocks)
        return json.dumps(fields_, sort_keys=True)

    def override(self, **given) -> Recipe:
        """This recipe with the fields that are not None in `given` replaced; a field with a parser
        (e.g. nm_dense_blocks) may be given as its text."""
        parsers = {f.name: f.metadata["parse"] for f in fields(self) if f.metadata.get("parse")}
        given = {k: parsers[k](v) if k in parsers and isinstance(v, str) else v
                 for k, v in given.items() if v is not None}
        return replace(self, **given)


def flags() -> list[tuple[str, str, type, str, str | None]]:
    """(field, --flag, type, help, argument group) of every recipe field: the options of `ggufsparse
    convert`, which override the recipe's fields."""
    out = []
    for f in fields(Recipe):
        kind = str if f.metadata["parse"] else _FIELD_TYPES[f.name]
        kind = float if kind == (int, float) else kind
        out.append((f.name, "--" + f.name.replace("_", "-"), kind, f.metadata["help"], f.metadata["group"]))
    return out


def recipe_path(name_or_file: str) -> Path:
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"{path}: recipe file not found")
        return path
    candidate = RECIPES_DIR / f"{name_or_file}.toml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
        raise UserError(f"recipe '{name_or_file}' not found; known: {known or 'none'} (or pass a .toml file)")
    return candidate


def read_recipe_file(name_or_file: str) -> tuple[Path, dict, str | None]:
    """(its path, its fields without model and description, the model it names or None) of
    convert/NAME.toml or a TOML file."""
    path = recipe_path(name_or_file)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid TOML recipe ({exc})") from None
    model = data.pop("model", None)
    data.pop("description", None)
    return path, data, model


def load_recipe(name_or_file: str) -> tuple[Recipe, str | None]:
    """(recipe, the model it names or None) from convert/NAME.toml or a TOML file."""
    path, data, model = read_recipe_file(name_or_file)
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown recipe field '{unknown[0]}'; fields: {', '.join(sorted(known))}")
    for f in fields(Recipe):
        if f.name in data and not isinstance(data[f.name], _FIELD_TYPES[f.name]):
            raise UserError(f"{path}: field '{f.name}' = {data[f.name]!r} has the wrong type")
    if isinstance(data.get("nm_dense_blocks"), list):
        data["nm_dense_blocks"] = tuple(data["nm_dense_blocks"])
    return Recipe(**data), model


_FIELD_TYPES = {"method": str, "sparsity": (int, float), "attn_sparsity": (int, float), "chess_norm": str, "down_sparsity": (int, float),
                "calib": str, "calib_tokens": int, "calib_seq_len": int, "nm": str, "nm_shuffle": str,
                "nm_alpha": (int, float), "nm_bins": int, "nm_block": int, "nm_passes": int,
                "nm_dense_blocks": (list, tuple), "nm_storage": str, "allocate": str, "alloc_windows": int, "alloc_draws": int,
                "alloc_step": (int, float), "teal_alloc": str, "teal_step": (int, float), "teal_windows": int}
