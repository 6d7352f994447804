"""Recipes: a common part and one section per method family; earlier flat files still load; the flags."""

from __future__ import annotations

import json

import pytest
from ggufsparse.errors import UserError
from ggufsparse.paths import RECIPES_DIR
from ggufsparse.pipeline import recipe as recipes
from ggufsparse.pipeline.recipe import AllocationSection, ChessSection, NMSection, Recipe, TealSection

# `ggufsparse.recipe` as earlier versions (one flat record of 23 fields) wrote it into converted files
OLD_CHESS_TEAL = ('{"attn_sparsity": 0.4, "calib": null, "calib_seq_len": 256, "calib_tokens": 2048, "chess_norm": '
                  '"l2", "method": "chess+teal", "sparsity": 0.5, "teal_alloc": "uniform", "teal_step": 0.05, '
                  '"teal_windows": 2}')
OLD_ESPARSE = ('{"alloc_draws": 2, "alloc_step": 0.025, "alloc_windows": 8, "allocate": "none", "attn_sparsity": '
               'null, "calib": null, "calib_seq_len": 512, "calib_tokens": 8192, "chess_norm": "l2", '
               '"down_sparsity": null, "method": "esparse", "nm": "4:8", "nm_alpha": 2.0, "nm_bins": 64, '
               '"nm_block": 32, "nm_dense_blocks": [0, -1], "nm_passes": 2, "nm_shuffle": "global+local", '
               '"nm_storage": "packed", "sparsity": 0.5, "teal_alloc": "greedy", "teal_step": 0.02, '
               '"teal_windows": 2}')
OLD_CATS_DOWN = ('{"attn_sparsity": null, "calib": null, "calib_seq_len": 512, "calib_tokens": 8192, "chess_norm": '
                 '"l1", "down_sparsity": 0.6, "method": "cats", "sparsity": 0.4}')
OLD_CHESS_KL = ('{"alloc_draws": 2, "alloc_step": 0.05, "alloc_windows": 3, "allocate": "kl", "attn_sparsity": 0.5, '
                '"calib": null, "calib_seq_len": 512, "calib_tokens": 8192, "chess_norm": "l2", "method": "chess", '
                '"sparsity": 0.5}')


def test_old_flat_json_loads_into_the_sections():
    r = Recipe.from_json(OLD_CHESS_TEAL)
    assert (r.method, r.sparsity, r.attn_sparsity, r.calib, r.calib_tokens, r.calib_seq_len) == \
        ("chess+teal", 0.5, 0.4, None, 2048, 256)
    assert r.chess == ChessSection(norm="l2")
    assert r.teal == TealSection(alloc="uniform", step=0.05, windows=2)
    assert r.nm == NMSection() and r.allocation == AllocationSection()

    r = Recipe.from_json(OLD_ESPARSE)
    assert r.method == "esparse" and r.attn_sparsity is None
    assert r.nm == NMSection(pattern="4:8", shuffle="global+local", alpha=2.0, bins=64, block=32, passes=2,
                             dense_blocks=(0, -1), storage="packed")

    r = Recipe.from_json(OLD_CATS_DOWN)
    assert r.chess.norm == "l1" and r.allocation.down_sparsity == 0.6 and r.sparsity == 0.4

    r = Recipe.from_json(OLD_CHESS_KL)
    assert r.allocation == AllocationSection(mode="kl", windows=3, draws=2, step=0.05)


@pytest.mark.parametrize("old", [OLD_CHESS_TEAL, OLD_ESPARSE, OLD_CATS_DOWN, OLD_CHESS_KL])
def test_the_metadata_json_is_what_earlier_versions_wrote(old):
    assert Recipe.from_json(old).validate().to_json() == old


def test_old_flat_toml_loads(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('model = "m"\nmethod = "cats"\nsparsity = 0.3\nchess_norm = "l1"\nteal_step = 0.1\n'
                    'nm_dense_blocks = [0, -1]\ncalib_tokens = 512\n')
    r, model = recipes.load_recipe(str(path))
    assert model == "m" and r.method == "cats" and r.sparsity == 0.3 and r.calib_tokens == 512
    assert r.chess.norm == "l1" and r.teal.step == 0.1 and r.nm.dense_blocks == (0, -1)


def test_sections_round_trip_through_save_and_load(tmp_path):
    r = Recipe(method="chess+esparse", sparsity=0.4, attn_sparsity=0.3, calib="c.txt", calib_tokens=1024,
               chess=ChessSection(norm="l1"), nm=NMSection(pattern="4:8", alpha=1.5, dense_blocks=(0, -1),
                                                           storage="masked+packed"),
               teal=TealSection(windows=3)).validate()
    path = tmp_path / "r.toml"
    r.save(path)
    text = path.read_text()
    assert "[nm]" in text and "[chess]" in text and "[teal]" in text and "[allocation]" not in text
    assert recipes.load_recipe(str(path))[0] == r
    assert Recipe.from_json(json.dumps(r.to_dict())) == r
    assert recipes.load_recipe(str(path))[0].to_json() == r.to_json()


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path):
    if path.stem.startswith("prosparse"):
        r, model = recipes.load_finetune_recipe(path.stem)
    else:
        r, model = recipes.load_recipe(path.stem)
    assert model and r.validate() == r


def test_shipped_recipes_use_sections():
    for path in RECIPES_DIR.glob("*.toml"):
        text = path.read_text()
        assert "\n[" in text, f"{path.name}: no section"
        assert "chess_norm" not in text, path.name


def test_a_field_in_another_methods_section_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('method = "teal"\n[teal]\nalpha = 2.0\n')
    with pytest.raises(UserError) as err:
        recipes.load_recipe(str(path))
    msg = str(err.value)
    assert "\n" not in msg and "'alpha'" in msg and "[teal]" in msg and "[nm]" in msg and str(path) in msg
    path.write_text('method = "chess"\n[chess]\nteal_step = 0.1\n')
    with pytest.raises(UserError, match=r"'teal_step' is not one of \[chess\]'s \(it belongs in \[teal\]\)"):
        recipes.load_recipe(str(path))
    path.write_text('method = "chess"\n[chess]\nwhatever = 1\n')
    with pytest.raises(UserError, match=r"'whatever' is not one of \[chess\]'s; \[chess\] fields: norm"):
        recipes.load_recipe(str(path))


def test_unknown_and_mistyped_fields_are_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('method = "chess"\nsparsty = 0.5\n')
    with pytest.raises(UserError, match="unknown recipe field 'sparsty'"):
        recipes.load_recipe(str(path))
    path.write_text('[nm]\nbins = "many"\n')
    with pytest.raises(UserError, match=r"\[nm\] 'bins' = 'many' has the wrong type"):
        recipes.load_recipe(str(path))
    path.write_text('nm_alpha = 1.0\n[nm]\nalpha = 2.0\n')
    with pytest.raises(UserError, match="given twice"):
        recipes.load_recipe(str(path))


def test_a_finetune_recipe_is_not_a_conversion_recipe():
    with pytest.raises(UserError, match="finetune"):
        recipes.load_recipe("prosparse-smollm2-135m")


def test_old_flat_finetune_recipe_loads(tmp_path):
    path = tmp_path / "ft.toml"
    path.write_text('method = "prosparse"\nsteps = 16\nlr = 2e-4\nstages = [[0.0, 0.5], [0.1, 1.0]]\n')
    r, _ = recipes.load_finetune_recipe(str(path))
    assert r.steps == 16 and r.lr == 2e-4 and r.stages == ((0.0, 0.5), (0.1, 1.0))
    path.write_text('method = "prosparse"\n[prosparse]\nsteps = 16\nnm = "2:4"\n')
    with pytest.raises(UserError, match=r"'nm' is not one of \[prosparse\]'s"):
        recipes.load_finetune_recipe(str(path))


def test_flags_are_every_field_of_every_section_by_its_flat_name():
    names = [name for name, *_ in recipes.flags()]
    assert names == list(recipes.FLAT_ORDER)
    assert set(names) == set(Recipe().flat())
    flags = {name: (flag, kind, group) for name, flag, kind, _, group in recipes.flags()}
    assert flags["nm_alpha"] == ("--nm-alpha", float, recipes.NM_GROUP)
    assert flags["allocate"] == ("--allocate", str, recipes.ALLOC_GROUP)
    assert flags["nm_dense_blocks"][1] is str  # given as text, parsed by the field's parser


def test_override_by_flat_name_reaches_the_section():
    r = Recipe().override(nm_dense_blocks="0,-1", teal_alloc="uniform", chess_norm="l1", sparsity=0.3,
                          down_sparsity=None, allocate="kl")
    assert r.nm.dense_blocks == (0, -1) and r.teal.alloc == "uniform" and r.chess.norm == "l1"
    assert r.sparsity == 0.3 and r.allocation.mode == "kl" and r.allocation.down_sparsity is None
