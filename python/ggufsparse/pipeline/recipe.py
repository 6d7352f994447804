"""A conversion recipe: the fields of `ggufsparse convert`, loadable from a TOML file in convert/.

A recipe is a common part (the method, its sparsity targets, the calibration text) and one section
per method family, each holding only its own fields: `[chess]` (chess, cats), `[allocation]`
(per-layer levels and the FFN's down split), `[teal]` and `[nm]` (magnitude, wanda, esparse). The
CLI flags are the same fields (a section's field `alpha` of `[nm]` is `--nm-alpha`); a flag given on
the command line overrides the recipe. The recipe that made a file is written into it
(`ggufsparse.recipe`) as flat JSON keyed by those flag names, as every earlier version wrote it;
flat JSON and flat TOML of earlier versions load into the sections.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
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
from ggufsparse.methods.prosparse import recipe as finetune_recipe
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
from ggufsparse.paths import RECIPES_DIR

ALLOCATIONS = ("none", "kl")  # per-layer levels: the same everywhere, or chosen by end-to-end KL
# N:M storage: pruned weights zeroed in place; and the packed copies that decode reads (docs/esparse.md)
NM_STORAGES = ("packed", "masked+packed", "masked")


def _flag(help: str, group: str | None = None, parse=None, flat: str | None = None, types=str) -> dict:
    """A field's command-line flag: its help, its argument group in `ggufsparse convert --help`, for a
    field given as text the function that parses it, its flat name (the flag without '--', the key
    of the metadata JSON and of earlier flat recipes; default: the field's name) and the types a
    recipe file may give it as."""
    return {"help": help, "group": group, "parse": parse, "flat": flat, "types": types}


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{text}: give block indices separated by commas, e.g. 0,-1") from None


ALLOC_GROUP = "per-layer allocation (chess, cats; docs/allocation.md)"
TEAL_GROUP = "TEAL (teal, chess+teal; docs/teal.md)"
NM_GROUP = "N:M weight pruning (magnitude, wanda, esparse; docs/esparse.md)"
NUMBER = (int, float)


@dataclass(frozen=True)
class ChessSection:
    """[chess]: CHESS's and CATS's FFN channel thresholds."""

    norm: str = field(default="l2", metadata=_flag(
        "l2: m_i = E[up_i^2] as in the paper (default); l1: m_i = E|up_i|", flat="chess_norm"))


@dataclass(frozen=True)
class AllocationSection:
    """[allocation] (chess, cats; docs/allocation.md): per-layer levels chosen by end-to-end KL, or
    each FFN's budget split between its channels and a cut on the down projection's input."""

    # also threshold ffn_down's input (the products act(gate)*up of the kept channels) so that this
    # fraction of it is zero on calibration text; >= sparsity; None = down skips what the gate does
    down_sparsity: float | None = field(default=None, metadata=_flag(
        "chess, cats: also cut the down projection's input (act(gate)*up) to this level in [--sparsity, 1), so "
        "down skips the kept channels whose product is small too; --sparsity 0.4 --down-sparsity 0.6 skips as "
        "many weights as --sparsity 0.5 (docs/allocation.md)", types=NUMBER))
    mode: str = field(default="none", metadata=_flag(
        "none (default): every layer at --sparsity; kl: per-layer (and with --attn-sparsity per-projection) "
        "levels chosen to minimise the KL to the dense model at the same parameter sparsity, measured on "
        "held-out calibration text", ALLOC_GROUP, flat="allocate"))
    # held-out calibration windows for the sensitivity table
    windows: int = field(default=8, metadata=_flag(
        "held-out calibration windows after the calibration ones (default 8)", ALLOC_GROUP, flat="alloc_windows",
        types=int))
    draws: int = field(default=2, metadata=_flag(
        "sampled tokens (backward passes) per window (default 2)", ALLOC_GROUP, flat="alloc_draws", types=int))
    step: float = field(default=0.025, metadata=_flag(
        "spacing of the candidate levels (default 0.025)", ALLOC_GROUP, flat="alloc_step", types=NUMBER))


@dataclass(frozen=True)
class TealSection:
    """[teal] (teal, chess+teal; methods/teal.py): how each block's level is spread over its projections."""

    alloc: str = field(default="greedy", metadata=_flag(
        "greedy (default): per block, raise whichever projection's level adds the least block-output error per "
        "skipped weight; uniform: every projection at the level", TEAL_GROUP, flat="teal_alloc"))
    step: float = field(default=0.02, metadata=_flag(
        "greedy: weights skipped per step, as a fraction of the block's (default 0.02)", TEAL_GROUP,
        flat="teal_step", types=NUMBER))
    windows: int = field(default=2, metadata=_flag(
        "greedy: calibration windows each block is re-run on (default 2)", TEAL_GROUP, flat="teal_windows",
        types=int))


@dataclass(frozen=True)
class NMSection:
    """[nm] (magnitude, wanda, esparse, chess+esparse; docs/esparse.md): N:M weight pruning."""

    pattern: str = field(default="2:4", metadata=_flag(
        "keep N of every M consecutive inputs of each weight row (default 2:4; M <= 16)", NM_GROUP, flat="nm"))
    # none | global | global+local; None: global+local for esparse, else none
    shuffle: str | None = field(default=None, metadata=_flag(
        "input channel reordering before choosing: none, global or global+local (default: global+local for "
        "esparse, none otherwise)", NM_GROUP, flat="nm_shuffle"))
    # esparse: weight of the input norm beside the entropy (both mean-normalised)
    alpha: float = field(default=4.0, metadata=_flag(
        "esparse: weight of the input norm beside the entropy (default 4)", NM_GROUP, flat="nm_alpha",
        types=NUMBER))
    bins: int = field(default=64, metadata=_flag(
        "esparse: histogram bins for each channel's entropy (default 64)", NM_GROUP, flat="nm_bins", types=int))
    block: int = field(default=32, metadata=_flag(
        "local block shuffle: channels per block (default 32)", NM_GROUP, flat="nm_block", types=int))
    passes: int = field(default=2, metadata=_flag(
        "local block shuffle: greedy passes per block (default 2)", NM_GROUP, flat="nm_passes", types=int))
    # blocks left dense (negative counts from the end)
    dense_blocks: tuple[int, ...] = field(default=(), metadata=_flag(
        "blocks left dense, e.g. 0,-1 for the first and last", NM_GROUP, parse=int_tuple, flat="nm_dense_blocks",
        types=(list, tuple)))
    # packed | masked+packed | masked; None: packed, or masked+packed for chess+esparse (whose
    # thresholds need the dense weights)
    storage: str | None = field(default=None, metadata=_flag(
        "packed (default; masked+packed with chess+esparse): each pruned weight only as its packed copy (kept "
        "values, positions, permutation), which decode reads and prompts expand to a dense weight: the file and "
        "memory shrink; masked+packed: also the pruned weights zeroed in place, which prompts use; masked: the "
        "zeroed weights only (any llama.cpp runs it)", NM_GROUP, flat="nm_storage"))


# the recipe's sections: TOML table (and Recipe attribute) -> its dataclass
SECTIONS: dict[str, type] = {"chess": ChessSection, "allocation": AllocationSection, "teal": TealSection,
                             "nm": NMSection}
# the flat names in the order of `ggufsparse convert --help` (and of the flat recipe of earlier versions)
FLAT_ORDER = ("method", "sparsity", "attn_sparsity", "chess_norm", "down_sparsity", "calib", "calib_tokens",
              "calib_seq_len", "allocate", "alloc_windows", "alloc_draws", "alloc_step", "teal_alloc", "teal_step",
              "teal_windows", "nm", "nm_shuffle", "nm_alpha", "nm_bins", "nm_block", "nm_passes", "nm_dense_blocks",
              "nm_storage")


@dataclass(frozen=True)
class Recipe:
    method: str = field(default="chess", metadata=_flag(
        "chess (default), cats, teal or chess+teal (activation thresholds); magnitude, wanda or esparse (N:M "
        "weight pruning, see --nm); chess+esparse (E-Sparse pruning, then CHESS's thresholds calibrated on the "
        "pruned model)"))
    # FFN: fraction of channel activations below threshold on calibration text
    sparsity: float = field(default=0.5, metadata=_flag(
        "FFN sparsity target in [0, 1) (default 0.5); teal: the parameter-weighted level of every block's "
        "projection inputs", types=NUMBER))
    # CHESS selective: q and output projection inputs; None = dense
    attn_sparsity: float | None = field(default=None, metadata=_flag(
        "sparsity of the attention q and output projection inputs in [0, 1) (default: dense); chess+teal: "
        "TEAL's level for q, k, v and output", types=NUMBER))
    calib: str | None = field(default=None, metadata=_flag(  # file; None = the C4 sample
        "calibration text, .txt or .jsonl with a \"text\" field, optionally .gz (default: the C4 sample in "
        "../shared/data/c4)"))
    calib_tokens: int = field(default=8192, metadata=_flag("calibration tokens (default 8192)", types=int))
    calib_seq_len: int = field(default=512, metadata=_flag("tokens per calibration window (default 512)",
                                                           types=int))
    chess: ChessSection = field(default_factory=ChessSection, metadata={"section": True})
    allocation: AllocationSection = field(default_factory=AllocationSection, metadata={"section": True})
    teal: TealSection = field(default_factory=TealSection, metadata={"section": True})
    nm: NMSection = field(default_factory=NMSection, metadata={"section": True})

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
        if self.nm.shuffle is not None:
            return self.nm.shuffle
        return "global+local" if self.method in ("esparse", *NM_COMBINED_METHODS) else "none"

    @property
    def storage(self) -> str:
        if self.nm.storage is not None:
            return self.nm.storage
        return "masked+packed" if self.method in NM_COMBINED_METHODS else "packed"

    def sections_used(self) -> tuple[str, ...]:
        """The sections the method reads."""
        if self.prunes_nm:
            return ("nm", "chess") if self.method in NM_COMBINED_METHODS else ("nm",)
        if self.is_teal:
            return ("teal", "chess") if self.method == "chess+teal" else ("teal",)
        if self.method in FFN_METHODS:
            return ("chess", "allocation")
        return ()

    def validate(self) -> Recipe:
        known = FFN_METHODS + TEAL_METHODS + NM_METHODS + NM_COMBINED_METHODS + ACTIVATION_METHODS
        if self.method not in known:
            raise UserError(f"--method {self.method}: unknown; choose one of {', '.join(known)}")
        self._validate_allocation()
        if self.is_teal:
            self._validate_teal()
        self._validate_nm()
        for name, value in (("--sparsity", self.sparsity), ("--attn-sparsity", self.attn_sparsity)):
            if value is not None and not 0.0 <= value < 1.0:
                raise UserError(f"{name} {value}: must be in [0, 1)")
        if self.chess.norm not in CHESS_NORMS:
            raise UserError(f"--chess-norm {self.chess.norm}: choose one of {', '.join(CHESS_NORMS)}")
        if self.calib_seq_len < 2:
            raise UserError(f"--calib-seq-len {self.calib_seq_len}: must be at least 2")
        if self.calib_tokens < self.calib_seq_len:
            raise UserError(f"--calib-tokens {self.calib_tokens}: must be at least one sequence "
                            f"(--calib-seq-len {self.calib_seq_len})")
        return self

    def _validate_allocation(self) -> None:
        a = self.allocation
        if a.mode not in ALLOCATIONS:
            raise UserError(f"--allocate {a.mode}: choose one of {', '.join(ALLOCATIONS)}")
        if a.mode != "none" and self.prunes_nm:
            raise UserError(f"--allocate: for the activation methods, not --method {self.method}")
        if a.mode != "none" and self.is_teal:
            raise UserError(f"--allocate: for chess and cats; --method {self.method} allocates with --teal-alloc")
        if a.windows < 1 or a.draws < 1 or not 0.001 <= a.step <= 0.5:
            raise UserError("--alloc-windows and --alloc-draws must be >= 1, --alloc-step in [0.001, 0.5]")
        if a.down_sparsity is None:
            return
        if self.method not in FFN_METHODS:
            raise UserError(f"--down-sparsity: for chess and cats, not --method {self.method}")
        if not self.sparsity <= a.down_sparsity < 1.0:
            raise UserError(f"--down-sparsity {a.down_sparsity}: must be in [--sparsity, 1) "
                            f"(--sparsity {self.sparsity}); the gate's zero channels are already zero at down's input")
        if a.mode != "none":
            raise UserError("--down-sparsity: not with --allocate kl (the allocation chooses the gate levels only)")

    def _validate_nm(self) -> None:
        nm = self.nm
        if self.prunes_nm:
            parse_pattern(nm.pattern)
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
        if nm.alpha < 0 or nm.bins < 2 or nm.block < 2 or nm.passes < 0:
            raise UserError("--nm-alpha must be >= 0, --nm-bins and --nm-block >= 2, --nm-passes >= 0")

    def _validate_teal(self) -> None:
        t = self.teal
        if t.alloc not in TEAL_ALLOCATIONS:
            raise UserError(f"--teal-alloc {t.alloc}: choose one of {', '.join(TEAL_ALLOCATIONS)}")
        if not 0.001 <= t.step <= 0.5 or t.windows < 1:
            raise UserError("--teal-step must be in [0.001, 0.5], --teal-windows >= 1")
        if self.method == "teal" and self.attn_sparsity is not None:
            raise UserError("--attn-sparsity: not with --method teal, whose --sparsity covers every projection "
                            "(chess+teal: CHESS's FFN at --sparsity, TEAL's attention at --attn-sparsity)")
        if self.method == "chess+teal" and self.attn_sparsity is None:
            raise UserError("--method chess+teal needs --attn-sparsity (TEAL's level for q, k, v and output)")
        if t.alloc == "greedy" and t.windows * self.calib_seq_len > self.calib_tokens:
            # the uniform allocation runs no block, so it needs no windows
            raise UserError(f"--teal-windows {t.windows}: more than the calibration windows")

    def flat(self) -> dict:
        """Every field by its flat name (the flag without '--')."""
        out = {f.name: getattr(self, f.name) for f in _common_fields()}
        for section in SECTIONS:
            part = getattr(self, section)
            out.update({_flat_name(f): getattr(part, f.name) for f in fields(part)})
        return out

    def to_json(self) -> str:
        """The flat JSON written into a converted file's `ggufsparse.recipe` (the fields its method
        reads; earlier versions wrote the same)."""
        fields_ = self.flat()
        if not self.is_nm:  # files of the activation methods keep the recipe they always had
            if not self.prunes_nm:
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("nm")}
            if self.allocation.mode == "none":
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("alloc")}
            if not self.is_teal:
                fields_ = {k: v for k, v in fields_.items() if not k.startswith("teal")}
            if self.allocation.down_sparsity is None:
                fields_.pop("down_sparsity")
        if self.prunes_nm:
            fields_["nm_shuffle"] = self.shuffle
            fields_["nm_storage"] = self.storage
            fields_["nm_dense_blocks"] = list(self.nm.dense_blocks)
        return json.dumps(fields_, sort_keys=True)

    def to_dict(self) -> dict:
        """The sectioned form of a recipe file: the common fields, then each section the method reads or
        that differs from its defaults (fields that are None are left out)."""
        out: dict = {f.name: getattr(self, f.name) for f in _common_fields() if getattr(self, f.name) is not None}
        used = self.sections_used()
        for name, cls in SECTIONS.items():
            part = getattr(self, name)
            if name in used or part != cls():
                out[name] = {f.name: _plain(getattr(part, f.name)) for f in fields(part)
                             if getattr(part, f.name) is not None}
        return out

    def to_toml(self) -> str:
        return _toml(self.to_dict())

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str, source: str = "recipe JSON") -> Recipe:
        """A recipe from `ggufsparse.recipe` metadata (flat) or the sectioned form."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UserError(f"{source}: a recipe is a JSON object")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> Recipe:
        """A recipe from its sectioned form, or the flat form of earlier versions (each section field
        by its flat name at the top), or a mix of both."""
        common = {f.name for f in _common_fields()}
        by_flat = _section_fields_by_flat()
        top: dict = {}
        parts: dict[str, dict] = {name: {} for name in SECTIONS}
        for key, value in data.items():
            if key in SECTIONS and isinstance(value, dict):
                for k, v in value.items():
                    name = _section_key(source, key, k)
                    if name in parts[key]:
                        raise UserError(f"{source}: '{name}' of [{key}] given twice, in [{key}] and at the top")
                    parts[key][name] = v
            elif key in common:
                top[key] = value
            elif key in by_flat:
                section, name = by_flat[key]
                if name in parts[section]:
                    raise UserError(f"{source}: '{key}' given twice, at the top and as '{name}' in [{section}]")
                parts[section][name] = value
            else:
                known = sorted(common | set(by_flat) | {f"[{s}]" for s in SECTIONS})
                raise UserError(f"{source}: unknown recipe field '{key}'; fields: {', '.join(known)}")
        _check_types(source, Recipe, top, "")
        built = {}
        for name, cls_ in SECTIONS.items():
            _check_types(source, cls_, parts[name], name)
            if isinstance(parts[name].get("dense_blocks"), list):
                parts[name]["dense_blocks"] = tuple(parts[name]["dense_blocks"])
            built[name] = cls_(**parts[name])
        return cls(**top, **built)

    def override(self, **given) -> Recipe:
        """This recipe with the fields that are not None in `given` (by flat name) replaced; a field
        with a parser (e.g. nm_dense_blocks) may be given as its text."""
        common = {f.name for f in _common_fields()}
        by_flat = _section_fields_by_flat()
        top: dict = {}
        parts: dict[str, dict] = {}
        for key, value in given.items():
            if value is None:
                continue
            if key in common:
                top[key] = value
                continue
            section, name = by_flat[key]
            f = next(f for f in fields(SECTIONS[section]) if f.name == name)
            if f.metadata.get("parse") and isinstance(value, str):
                value = f.metadata["parse"](value)
            parts.setdefault(section, {})[name] = value
        return replace(self, **top, **{s: replace(getattr(self, s), **kv) for s, kv in parts.items()})


def _common_fields() -> list:
    return [f for f in fields(Recipe) if not f.metadata.get("section")]


def _flat_name(f) -> str:
    return f.metadata.get("flat") or f.name


def _section_fields_by_flat() -> dict[str, tuple[str, str]]:
    """flat name -> (section, field) of every section field."""
    return {_flat_name(f): (section, f.name) for section, cls in SECTIONS.items() for f in fields(cls)}


def _section_key(source: str, section: str, key: str) -> str:
    """The field `key` of [section], or a one-line error naming the field and the section it belongs in."""
    names = {f.name for f in fields(SECTIONS[section])}
    if key in names:
        return key
    by_flat = _section_fields_by_flat()
    if key in by_flat and by_flat[key][0] == section:  # the flat name inside its own section
        return by_flat[key][1]
    homes = [s for s, cls in SECTIONS.items() if s != section and key in {f.name for f in fields(cls)}]
    homes += [by_flat[key][0]] if key in by_flat else []
    homes += ["the top (common fields)"] if key in {f.name for f in _common_fields()} else []
    where = f" (it belongs in {' or '.join(h if h.startswith('the') else f'[{h}]' for h in homes)})" if homes else ""
    raise UserError(f"{source}: field '{key}' is not one of [{section}]'s{where}; [{section}] fields: "
                    f"{', '.join(sorted(names))}")


def _check_types(source: str, cls: type, data: dict, section: str) -> None:
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            if value is None and f.default is None:  # JSON's null for a field that may be unset
                continue
            if not isinstance(value, f.metadata["types"]) or isinstance(value, bool):
                where = f"[{section}] " if section else ""
                raise UserError(f"{source}: field {where}'{f.name}' = {value!r} has the wrong type")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _toml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value}: not a finite number")
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"{value!r}: no TOML form")


def _toml(data: dict) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def flags() -> list[tuple[str, str, type, str, str | None]]:
    """(flat name, --flag, type, help, argument group) of every recipe field, common and of every
    section: the options of `ggufsparse convert`, which override the recipe's fields."""
    out = {}
    for f in _common_fields() + [f for cls in SECTIONS.values() for f in fields(cls)]:
        name = _flat_name(f)
        types = f.metadata["types"]
        kind = str if f.metadata["parse"] else (float if types == NUMBER else types)
        out[name] = (name, "--" + name.replace("_", "-"), kind, f.metadata["help"], f.metadata["group"])
    return [out[name] for name in FLAT_ORDER]


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
    """(recipe, the model it names or None) from convert/NAME.toml or a TOML file, sectioned or flat."""
    path, data, model = read_recipe_file(name_or_file)
    if "prosparse" in data:
        raise UserError(f"{path}: a fine-tune recipe ([prosparse]); run it with `ggufsparse finetune --recipe`")
    return Recipe.from_dict(data, str(path)), model


def load_finetune_recipe(name_or_file: str) -> tuple[FinetuneRecipe, str | None]:
    """(fine-tune recipe, the model it names or None) from convert/NAME.toml or a TOML file: `method`
    at the top and the rest in [prosparse], or every field at the top as earlier versions wrote it."""
    path, data, model = read_recipe_file(name_or_file)
    section = data.pop("prosparse", {})
    if not isinstance(section, dict):
        raise UserError(f"{path}: [prosparse] must be a table of the fine-tune's fields")
    known = {f.name for f in fields(FinetuneRecipe)}
    for key in section:
        if key not in known or key == "method":
            raise UserError(f"{path}: field '{key}' is not one of [prosparse]'s; [prosparse] fields: "
                            f"{', '.join(sorted(known - {'method'}))}")
    for key in set(data) & set(section):
        raise UserError(f"{path}: '{key}' given twice, at the top and in [prosparse]")
    return finetune_recipe.from_dict({**data, **section}, str(path)), model
