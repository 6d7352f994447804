"""The GGUF layout that the converter writes and the patched runtime reads.

Every `ggufsparse.*` key and every extra tensor name is spelled here once; the C side
(`llama-arch.cpp` in patches/0003) mirrors the tensor names and a test checks both agree.
The prose version of this contract is docs/format.md.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bumped when the runtime must change to read a file; the runtime refuses newer versions.
# 3: thresholds on the inputs of every projection (TEAL); 4: ggufsparse.activation; 5: N:M packed copies;
# 7: FFN activation predictors; 8: ffn_down_in_thr beside ffn_gate_thr (the FFN split);
# 9: packed transposed copies of Q4_K, Q5_K and Q6_K weights
FORMAT_VERSION = 9


class Keys:
    FORMAT_VERSION = "ggufsparse.format_version"  # u32
    TOOL_VERSION = "ggufsparse.tool_version"  # str, the ggufsparse version that wrote the file
    METHOD = "ggufsparse.method"  # str: chess, cats, ...
    TARGETS = "ggufsparse.targets"  # [str]: which projections are sparse (ffn, attn_q, attn_output)
    RECIPE = "ggufsparse.recipe"  # str, JSON of the recipe that made the file
    CALIB_SHA256 = "ggufsparse.calibration.sha256"  # str
    CALIB_TOKENS = "ggufsparse.calibration.tokens"  # u64
    CALIB_FILE = "ggufsparse.calibration.file"  # str, the calibration file's name
    # [f32] per layer: fraction of activations at or below threshold on the calibration text
    CALIB_FFN_SPARSITY = "ggufsparse.calibration.ffn_sparsity"
    CALIB_ATTN_Q_SPARSITY = "ggufsparse.calibration.attn_q_sparsity"
    CALIB_ATTN_OUT_SPARSITY = "ggufsparse.calibration.attn_output_sparsity"
    # --allocate kl: per-site levels chosen by end-to-end KL on held-out calibration text
    ALLOC_METHOD = "ggufsparse.allocation.method"  # str: kl
    ALLOC_USED = "ggufsparse.allocation.used"  # str: allocated, split, or uniform when neither won
    ALLOC_BUDGET = "ggufsparse.allocation.budget"  # f32: fraction of the sparse sites' weights skipped
    ALLOC_FILE = "ggufsparse.allocation.file"  # str: the sensitivity text's file (the calibration file)
    ALLOC_SHA256 = "ggufsparse.allocation.sha256"  # str
    ALLOC_WINDOWS = "ggufsparse.allocation.windows"  # [u32 first window, window count] of that file
    ALLOC_KL_PREDICTED = "ggufsparse.allocation.kl_predicted"  # [f32 uniform, allocated]
    ALLOC_KL_MEASURED = "ggufsparse.allocation.kl_measured"  # [f32 uniform, allocated] on those windows
    # [f32] per layer: the chosen level (fraction of inputs dropped on calibration text)
    ALLOC_FFN_LEVEL = "ggufsparse.allocation.ffn_level"
    # [f32] the FFN splits tried: gate (channel) levels, each with down's input cut to 2 x budget - level
    ALLOC_SPLIT_LEVEL = "ggufsparse.allocation.split_level"
    ALLOC_SPLIT_KL = "ggufsparse.allocation.split_kl"  # [f32] their KL on the sensitivity windows
    ALLOC_ATTN_Q_LEVEL = "ggufsparse.allocation.attn_q_level"
    ALLOC_ATTN_OUT_LEVEL = "ggufsparse.allocation.attn_output_level"
    # N:M weight pruning (methods magnitude, wanda, esparse)
    NM_PATTERN = "ggufsparse.nm.pattern"  # str "N:M"
    NM_STORAGE = "ggufsparse.nm.storage"  # str: packed (no dense pruned weights), masked+packed, or masked
    NM_TENSORS = "ggufsparse.nm.tensors"  # [str]: the pruned tensors
    NM_KEPT_SCORE = "ggufsparse.nm.kept_score"  # [f32] per pruned tensor: fraction of its score kept
    # TEAL (thresholds on projection inputs); per-site levels are the calibration.*_sparsity arrays
    TEAL_ALLOCATION = "ggufsparse.teal.allocation"  # str: greedy or uniform
    TEAL_SPARSITY = "ggufsparse.teal.sparsity"  # f32: the requested parameter-weighted level per block
    TEAL_BLOCK_SPARSITY = "ggufsparse.teal.block_sparsity"  # [f32] per layer: parameter-weighted level reached
    # ProSparse: the FFN activation the model was fine-tuned with, replacing the architecture's own
    ACTIVATION = "ggufsparse.activation"  # str: relu | fatrelu (format 4)
    ACTIVATION_THRESHOLD = "ggufsparse.activation_threshold"  # f32: FATReLU keeps x > t (0 for relu)
    FINETUNE_STEPS = "ggufsparse.finetune.steps"  # u64: optimizer steps
    FINETUNE_TOKENS = "ggufsparse.finetune.tokens"  # u64: training tokens seen
    FINETUNE_FILE = "ggufsparse.finetune.file"  # str: the training text's file name
    FINETUNE_SHA256 = "ggufsparse.finetune.sha256"  # str
    # FFN activation predictors (format 7): which gate rows decode computes
    PREDICTOR_KIND = "ggufsparse.predictor.kind"  # str: trained, or random (synthetic models only)
    PREDICTOR_RANK = "ggufsparse.predictor.rank"  # u32
    PREDICTOR_RECALL_TARGET = "ggufsparse.predictor.recall_target"  # f32
    PREDICTOR_RECALL = "ggufsparse.predictor.recall"  # [f32] per layer, on held-out calibration windows
    PREDICTOR_PREDICTED = "ggufsparse.predictor.predicted"  # [f32] per layer: share of gate rows predicted on
    PREDICTOR_FILE = "ggufsparse.predictor.file"  # str: the training text's file name
    PREDICTOR_SHA256 = "ggufsparse.predictor.sha256"  # str


def calib_sparsity_key(site: str) -> str:
    """ggufsparse.calibration.<site>_sparsity: per layer, the fraction of the site's calibration
    inputs at or below its threshold (the same spelling as the two CHESS keys above)."""
    return f"ggufsparse.calibration.{site}_sparsity"


@dataclass(frozen=True)
class SparseTensor:
    """One kind of extra per-layer tensor."""

    stem: str  # name without the block prefix, e.g. "ffn_gate_thr"
    suffix: str | None  # ".weight" for weights, None for thresholds
    source: str  # the original tensor it belongs to, e.g. "ffn_down.weight"
    transposed: bool  # shape is the source's with ne0 and ne1 swapped
    what: str

    def name(self, block: int) -> str:
        tail = f".{self.suffix}" if self.suffix else ""
        return f"blk.{block}.{self.stem}{tail}"


FFN_GATE_THR = SparseTensor("ffn_gate_thr", None, "ffn_gate.weight", False,
                            "per-channel threshold on |act(gate)|, f32 {n_ff}")
FFN_DOWN_T = SparseTensor("ffn_down_t", "weight", "ffn_down.weight", True,
                          "ffn_down transposed: one row of n_embd per FFN channel")
ATTN_Q_THR = SparseTensor("attn_q_thr", None, "attn_q.weight", False,
                          "threshold on |x| at the input of attn_q, f32 {1}")
ATTN_Q_T = SparseTensor("attn_q_t", "weight", "attn_q.weight", True,
                        "attn_q transposed: one row per input channel")
ATTN_OUT_THR = SparseTensor("attn_output_thr", None, "attn_output.weight", False,
                            "threshold on |x| at the input of attn_output, f32 {1}")
ATTN_OUT_T = SparseTensor("attn_output_t", "weight", "attn_output.weight", True,
                          "attn_output transposed: one row per input channel")

# TEAL: a threshold on the input of each further projection, with its transposed copy; ffn_down's
# input threshold pairs with FFN_DOWN_T above (a layer has CHESS's FFN_GATE_THR or these, not both)
ATTN_K_THR = SparseTensor("attn_k_thr", None, "attn_k.weight", False, "threshold on |x| at the input of attn_k, f32 {1}")
ATTN_K_T = SparseTensor("attn_k_t", "weight", "attn_k.weight", True, "attn_k transposed: one row per input channel")
ATTN_V_THR = SparseTensor("attn_v_thr", None, "attn_v.weight", False, "threshold on |x| at the input of attn_v, f32 {1}")
ATTN_V_T = SparseTensor("attn_v_t", "weight", "attn_v.weight", True, "attn_v transposed: one row per input channel")
FFN_GATE_IN_THR = SparseTensor("ffn_gate_in_thr", None, "ffn_gate.weight", False,
                               "threshold on |x| at the input of ffn_gate, f32 {1}")
FFN_GATE_T = SparseTensor("ffn_gate_t", "weight", "ffn_gate.weight", True,
                          "ffn_gate transposed: one row of n_ff per input channel")
FFN_UP_IN_THR = SparseTensor("ffn_up_in_thr", None, "ffn_up.weight", False,
                             "threshold on |x| at the input of ffn_up, f32 {1}")
FFN_UP_T = SparseTensor("ffn_up_t", "weight", "ffn_up.weight", True,
                        "ffn_up transposed: one row of n_ff per input channel")
FFN_DOWN_IN_THR = SparseTensor("ffn_down_in_thr", None, "ffn_down.weight", False,
                               "threshold on |h| at the input of ffn_down, f32 {1}")

# FFN activation predictor (predictor.py): logit = pred_b . relu(pred_a . x); gate row i is computed
# in decode where logit_i > pred_thr_i. Needs FFN_GATE_THR in the same layer.
FFN_PRED_A = SparseTensor("ffn_pred_a", "weight", "ffn_gate.weight", False,
                          "predictor, first layer: {n_embd, rank} (rank rows of n_embd)")
FFN_PRED_B = SparseTensor("ffn_pred_b", "weight", "ffn_gate.weight", False,
                          "predictor, second layer: {rank, n_ff}")
FFN_PRED_THR = SparseTensor("ffn_pred_thr", None, "ffn_gate.weight", False,
                            "per-channel cut-off on the predictor's logit, f32 {n_ff}")


@dataclass(frozen=True)
class NMTensors:
    """The N:M packed copy of one projection (docs/format.md, "N:M packed copies")."""

    vals: SparseTensor  # kept values, {k*N/M, n_out} in the weight type of nm_pack.packed_type
    idx: SparseTensor  # positions inside their groups, i8 {index row bytes, n_out}
    perm: SparseTensor  # input permutation, i32 {k}; absent: identity


def _nm(projection: str) -> NMTensors:
    source = f"{projection}.weight"
    return NMTensors(
        SparseTensor(f"{projection}_nm", "weight", source, False, f"{projection}: kept values of each row, packed"),
        SparseTensor(f"{projection}_nm_idx", None, source, False, f"{projection}: positions of the kept values"),
        SparseTensor(f"{projection}_nm_perm", None, source, False, f"{projection}: input permutation"),
    )


# N:M packed copies, by projection
NM_TENSORS: dict[str, NMTensors] = {
    p: _nm(p) for p in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
}

SPARSE_TENSORS: tuple[SparseTensor, ...] = (
    FFN_GATE_THR, FFN_DOWN_T, ATTN_Q_THR, ATTN_Q_T, ATTN_OUT_THR, ATTN_OUT_T,
    ATTN_K_THR, ATTN_K_T, ATTN_V_THR, ATTN_V_T, FFN_GATE_IN_THR, FFN_GATE_T, FFN_UP_IN_THR, FFN_UP_T,
    FFN_DOWN_IN_THR, FFN_PRED_A, FFN_PRED_B, FFN_PRED_THR,
    *(t for nm in NM_TENSORS.values() for t in (nm.vals, nm.idx, nm.perm)),
)

ACTIVATIONS = ("relu", "fatrelu")

# ggufsparse.targets values
TARGET_FFN = "ffn"
TARGET_ATTN_Q = "attn_q"
TARGET_ATTN_OUT = "attn_output"

# Sites with a tensor-wise threshold on a projection's input, by the name the runtime's sparsity
# report uses (and ggufsparse.targets): (threshold, transposed weight)
INPUT_SITES: dict[str, tuple[SparseTensor, SparseTensor]] = {
    "attn_q": (ATTN_Q_THR, ATTN_Q_T),
    "attn_k": (ATTN_K_THR, ATTN_K_T),
    "attn_v": (ATTN_V_THR, ATTN_V_T),
    "attn_output": (ATTN_OUT_THR, ATTN_OUT_T),
    "ffn_gate_in": (FFN_GATE_IN_THR, FFN_GATE_T),
    "ffn_up_in": (FFN_UP_IN_THR, FFN_UP_T),
    "ffn_down_in": (FFN_DOWN_IN_THR, FFN_DOWN_T),
}

# The projections a layer has (blk.N.<name>.weight), whose weights the sites skip
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Stat:
    """One kind of decision the runtime counts: its key in the GGUFSPARSE_STATS report and the
    projections whose weights one skipped channel saves."""

    name: str
    saves: tuple[str, ...]


# The runtime's statistics in the order of its ggml_sparse_stat_kind (patches/): the C side mirrors
# this table and tests/unit/test_layout.py checks that both agree.
STATS: tuple[Stat, ...] = (
    Stat("ffn", ("ffn_up", "ffn_down")),  # FFN channels after act(gate) and its threshold
    Stat("attn_q", ("attn_q",)),
    Stat("attn_output", ("attn_output",)),
    Stat("attn_k", ("attn_k",)),
    Stat("attn_v", ("attn_v",)),
    Stat("ffn_gate_in", ("ffn_gate",)),
    Stat("ffn_up_in", ("ffn_up",)),
    Stat("ffn_down_in", ("ffn_down",)),
    Stat("ffn_gate", ("ffn_gate",)),  # gate rows an activation predictor left out
)
STAT_NAMES = tuple(s.name for s in STATS)
# the sites that readers name: the FFN's channels, and input sites (keys of INPUT_SITES)
FFN_SITE, ATTN_Q_SITE, ATTN_OUTPUT_SITE, FFN_DOWN_IN_SITE = "ffn", "attn_q", "attn_output", "ffn_down_in"

_STEMS = tuple(f".{t.stem}" for t in SPARSE_TENSORS)


def is_sparse_tensor(name: str) -> bool:
    """Whether a tensor name is one of the extra tensors above (any block)."""
    return any(stem in name for stem in _STEMS)


# threshold -> transposed weight: the runtime needs both or neither
PAIRS: tuple[tuple[SparseTensor, SparseTensor], ...] = ((FFN_GATE_THR, FFN_DOWN_T), *INPUT_SITES.values())
