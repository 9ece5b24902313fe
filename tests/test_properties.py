"""Properties every model must have: monotone totals, declared symbols, consistent tables."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.api import symbolic_model
from engine.architecture import has_recurrent_state
from engine.profiles import build
from engine.families import spec_from_config
from engine.registry import entries
from engine.scenario import Scenario
from formulas import activations, dtypes, kv_cache, optimizer, options, symbols, weights

MODEL_IDS = [e.id for e in entries()]
_SPECS = {}


def _spec(model_id):
    if model_id not in _SPECS:
        _SPECS[model_id] = spec_from_config(next(e for e in entries() if e.id == model_id).config, model_id)
    return _SPECS[model_id]


_MODELS = {}


def _refused(model_id, mode):
    """Training of recurrent (Gated DeltaNet, Mamba) models is refused by the profiles (issue 13)."""
    return mode == "training" and has_recurrent_state(_spec(model_id))


def _free_model(model_id, mode, attention, block_size):
    key = (model_id, mode, attention, block_size)
    if key not in _MODELS:
        # megatron: it reads every registry model (training defaults to transformers, which refuses many)
        scenario = Scenario(mode=mode, batch_size=None, seq_len=None, attention=attention, block_size=block_size,
                            profile="megatron")
        _MODELS[key] = build(_spec(model_id), scenario)
    return _MODELS[key]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    model_id=st.sampled_from(MODEL_IDS),
    mode=st.sampled_from(options.MODES),
    attention=st.sampled_from(options.ATTENTION),
    block_size=st.sampled_from([None, 16]),
    b=st.integers(1, 64),
    s=st.integers(1, 40_000),
)
def test_total_is_non_decreasing_in_batch_and_seq_len(model_id, mode, attention, block_size, b, s):
    assume(not _refused(model_id, mode))
    mm = _free_model(model_id, mode, attention, block_size)
    base = mm.evaluate(batch_size=b, seq_len=s).total_bytes
    assert mm.evaluate(batch_size=b + 1, seq_len=s).total_bytes >= base
    assert mm.evaluate(batch_size=b, seq_len=s + 1).total_bytes >= base


@pytest.mark.parametrize("model_id", MODEL_IDS)
@pytest.mark.parametrize("mode", options.MODES)
def test_every_free_symbol_is_declared(model_id, mode):
    if _refused(model_id, mode):
        pytest.skip("training of recurrent mixers is refused")
    mm = build(_spec(model_id), Scenario(mode=mode, batch_size=None, seq_len=None, block_size=None, profile="megatron"))
    for expr in [*mm.terms.values(), mm.total, mm.parameters]:
        for sym in expr.free_symbols:
            assert symbols.is_declared(sym), sym


@pytest.mark.parametrize("mode", options.MODES)
def test_symbolic_model_uses_only_declared_symbols(mode):
    mm = symbolic_model(mode=mode, batch_size=None, seq_len=None)
    assert all(symbols.is_declared(sym) for sym in mm.total.free_symbols)
    assert {"batch_size", "seq_len", "hidden_size"} <= {s.name for s in mm.free_symbols}


def test_pinned_model_leaves_only_unset_knobs_free():
    mm = build(_spec("qwen3-0.6b"), Scenario(batch_size=None, seq_len=None))
    assert [s.name for s in mm.free_symbols] == ["batch_size", "seq_len"]


def test_option_tuples_match_the_tables_they_name():
    assert set(options.QUANT_SCHEMES) == set(weights.QUANT_SCHEMES)
    assert set(options.OPTIMIZERS) == {*optimizer.OPTIMIZER_STATE_BYTES, *optimizer.FACTORED_OPTIMIZERS}
    assert set(options.PRECISIONS) == {"auto", "pure", *optimizer.PRECISION_CONVENTIONS}
    assert set(options.DTYPES) == set(dtypes.DTYPE_BYTES)


def test_every_mla_layout_has_its_own_cache_row_and_others_are_refused():
    """formulas/kv_cache.py gives each name in options.MLA_LAYOUTS its own row (DeepSeek-V2,
    arXiv:2405.04434, section 2.1: the latent ``r_kv + d_r`` or the decompressed heads)."""
    rows = {layout: kv_cache.kv_values_per_layer_token(layout) for layout in options.MLA_LAYOUTS}
    assert rows["latent"] == symbols.kv_lora_rank + symbols.qk_rope_head_dim
    assert rows["decompressed"] == symbols.num_attention_heads * (
        symbols.qk_nope_head_dim + symbols.qk_rope_head_dim + symbols.v_head_dim)
    assert len(set(rows.values())) == len(rows)
    with pytest.raises(ValueError, match="unknown MLA cache layout 'compressed'"):
        kv_cache.kv_values_per_layer_token("compressed")


def test_every_recompute_mode_has_its_own_row_and_others_are_refused():
    """formulas/activations.py gives each name in options.RECOMPUTE_MODES a distinct Table 2
    row (Korthikanti et al. 2022, arXiv:2205.05198), and refuses names outside the tuple."""
    rows = {mode: activations.korthikanti_layer(mode) for mode in activations.KORTHIKANTI_MODES}
    assert len(set(rows.values())) == len(rows) == 3
    with pytest.raises(ValueError, match="unknown recompute mode 'partial'"):
        activations.korthikanti_layer("partial")
    # "op" is torchtitan's per-op policy: its own row, not a Table 2 one
    from formulas.frameworks import torchtitan

    assert set(options.RECOMPUTE_MODES) == {*activations.KORTHIKANTI_MODES, "op"}
    with pytest.raises(ValueError, match="unknown recompute mode 'op'"):
        activations.korthikanti_layer("op")
    assert len({torchtitan.block_saved(mode) for mode in torchtitan.AC_MODES}) == 3


def test_symbols_have_latex_meaning_and_unit():
    for entry in symbols.SYMBOLS.values():
        assert entry.latex and entry.meaning and entry.unit
        assert entry.symbol.is_nonnegative
    latex_names = [e.latex for e in symbols.SYMBOLS.values()]
    assert len(set(latex_names)) == len(latex_names)
