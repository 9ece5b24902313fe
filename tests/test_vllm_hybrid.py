"""The vllm profile on recurrent and hybrid models (engine/profiles/vllm_hybrid.py).

Page sizes are hand-worked from vLLM 0.19's formulas (mamba_utils.py MambaStateShapeCalculator,
kv_cache_interface.py MambaSpec.page_size_bytes, platforms/interface.py
Platform._align_hybrid_block_size); the public figures are tests/fixtures/vllm_hybrid_logs.json.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
import sympy
from click.testing import CliRunner

import cli
from engine.errors import InputError
from engine.profiles import vllm_hybrid
from engine.scenario import Scenario
from engine.serving import serve
from engine.spec import LayerGroup, ModelSpec
from formulas import symbols as S
from formulas.frameworks import vllm_mamba as M

LOGS = json.loads((Path(__file__).parent / "fixtures" / "vllm_hybrid_logs.json").read_text())["records"]
H100 = dict(gpu_name="h100-80gb")

# (model, tp, state page, attention block, page): bf16 conv and SSM state (vLLM's "auto"),
# K - 1 = 3 conv taps, attention token bytes 2 x kv heads x head_dim x 2.
PAGES = [
    # Gated DeltaNet: conv 3 x (2x16x128 + 32x128) = 24,576, state 32x128x128 = 524,288 -> x2 B =
    # 1,097,728; attention 2x2x256x2 = 2,048 B/token -> 16 ceil(1,097,728 / 32,768) = 16 x 34 = 544
    ("qwen3-next-80b-a3b", 1, 1_097_728, 544, 544 * 2_048),
    # TP 4: conv 3 x 8,192/4, state 8x128x128; kv heads max(1, 2 // 4) = 1 -> 1,024 B/token; 16 x 17
    ("qwen3-next-80b-a3b", 4, (3 * 2_048 + 131_072) * 2, 272, 272 * 1_024),
    # Mamba-2: conv 3 x (128x64 + 2x1x128) = 25,344, state 128x64x128 = 1,048,576 -> 2,147,840;
    # attention 2x8x128x2 = 4,096 B/token -> 16 ceil(2,147,840 / 65,536) = 16 x 33 = 528
    ("bamba-9b", 1, 2_147_840, 528, 528 * 4_096),
    # Mamba-1: conv 3 x 8,192, state 8,192 x 16 -> 311,296; 16 ceil(311,296 / 65,536) = 80
    ("jamba-v0.1", 1, 311_296, 80, 80 * 4_096),
    ("jamba-v0.1", 2, 155_648, 80, 80 * 2_048),
    # attention-free: the page is the state itself, no padding (conv 3 x 5,120, state 5,120 x 16)
    ("mamba-2.8b", 1, (3 * 5_120 + 5_120 * 16) * 2, 0, (3 * 5_120 + 5_120 * 16) * 2),
]


@pytest.mark.parametrize("model, tp, state_page, block, page", PAGES)
def test_pages_equal_the_hand_worked_vllm_formulas(model, tp, state_page, block, page):
    values = serve(model, tp=tp, max_model_len=4096, **H100).values
    assert (values["state_page_bytes"], values["attention_block_size"], values["page_bytes"]) == (state_page, block, page)


def test_hybrid_groups_tokens_and_concurrency_follow_kv_cache_utils():
    """Bamba: 3 attention + 29 Mamba-2 layers -> groups of 3: 1 attention + 10 Mamba groups."""
    v = serve("bamba-9b", max_model_len=8192, **H100).values
    blocks = v["num_gpu_blocks"]
    assert blocks == v["available_kv_cache_bytes"] // v["page_bytes"] // 3
    assert v["kv_cache_tokens"] == blocks // 11 * 528  # min(528, max_model_len) tokens a block
    assert v["max_concurrency"] == Fraction(blocks, math.ceil(8192 / 528) + 10)  # a Mamba group: 1 page a request


def test_align_mode_keeps_two_state_pages_a_request():
    none = serve("bamba-9b", max_model_len=8192, **H100).values
    align = serve("bamba-9b", max_model_len=8192, mamba_cache_mode="align", enable_prefix_caching=True, **H100).values
    ignored = serve("bamba-9b", max_model_len=8192, mamba_cache_mode="align", **H100).values  # reset to none
    assert ignored["max_concurrency"] == none["max_concurrency"]
    assert align["num_gpu_blocks"] == none["num_gpu_blocks"]
    assert align["max_concurrency"] == Fraction(align["num_gpu_blocks"], 16 + 2 * 10)
    assert align["kv_cache_tokens"] == none["kv_cache_tokens"]


def test_ssm_dtype_flag_widens_the_state_and_the_attention_block():
    # state 1,048,576 x 4 B + conv 25,344 x 2 B = 4,244,992 -> 16 ceil(4,244,992 / 65,536) = 16 x 65
    v = serve("bamba-9b", max_model_len=8192, mamba_ssm_cache_dtype="float32", **H100).values
    assert (v["state_page_bytes"], v["attention_block_size"]) == (4_244_992, 1_040)


def test_attention_free_concurrency_does_not_depend_on_max_model_len():
    short = serve("mamba-2.8b", max_model_len=2048, **H100).values
    long = serve("mamba-2.8b", max_model_len=100_000, **H100).values
    assert short["num_gpu_blocks"] == long["num_gpu_blocks"] == short["max_concurrency"] == long["max_concurrency"]
    assert long["kv_cache_tokens"] == long["num_gpu_blocks"] * 100_000  # MambaSpec block_size = max_model_len
    assert long["num_gpu_blocks"] == long["available_kv_cache_bytes"] // long["page_bytes"] // 64


def test_hybrid_state_is_constant_in_length_only_attention_grows():
    a = serve("jamba-v0.1", tp=2, max_model_len=8_000, **H100).values
    b = serve("jamba-v0.1", tp=2, max_model_len=16_000, **H100).values
    state = 7 * 1  # 28 Mamba layers in groups of 4: 7 groups, one page a request each
    assert a["max_concurrency"] == Fraction(a["num_gpu_blocks"], math.ceil(8_000 / 80) + state)
    assert b["max_concurrency"] == Fraction(b["num_gpu_blocks"], math.ceil(16_000 / 80) + state)
    assert a["state_bytes_per_request"] == b["state_bytes_per_request"] == 28 * 163_840


def test_nemotron_nano_block_size_matches_vllms_reported_672(tmp_path):
    """vllm#24280 quotes 672 tokens for Nemotron-Nano-9B-v2 when NemotronH's SSM cache was
    float16; since vLLM PR #39032 (float32) the same formula gives 1,312."""
    record = next(r for r in LOGS if r["id"] == "nemotron-nano-9b-v2-block-size")
    (tmp_path / "config.json").write_text(json.dumps(record["shapes"]))
    old = serve(str(tmp_path), max_model_len=8192, mamba_ssm_cache_dtype="float16", **H100).values
    assert old["attention_block_size"] == record["logged"]["attention_block_size"]
    assert serve(str(tmp_path), max_model_len=8192, **H100).values["attention_block_size"] == 1_312


def test_qwen35_log_lines_share_one_block_count():
    """vllm#40691 (vLLM 0.19.0): the two logged lines fit the hybrid accounting with one block
    count: block 784, 4 groups (16 attention, 48 GDN in 3), 42 + 3 blocks a request."""
    record = next(r for r in LOGS if r["id"] == "qwen3.5-27b-h20-0.19")
    shapes = record["shapes"]
    facts = {S.linear_num_key_heads: 16, S.linear_num_value_heads: 48, S.linear_key_head_dim: 128,
             S.linear_value_head_dim: 128, S.conv_kernel: shapes["linear_conv_kernel_dim"],
             S.num_key_value_heads: shapes["num_key_value_heads"], S.head_dim: shapes["head_dim"],
             S.tensor_parallel: 1, S.kv_cache_bytes: 2, S.conv_state_bytes: 2, S.state_bytes: 4, S.block_size: 16}
    block = int(M.hybrid_block_size("gated_deltanet").xreplace(facts))
    assert block == 784
    attention = shapes["num_hidden_layers"] // shapes["full_attention_interval"]
    groups = 1 + (shapes["num_hidden_layers"] - attention) // attention
    request = math.ceil(record["max_model_len"] / block) + (groups - 1)
    tokens = int(record["logged"]["gpu_kv_cache_size_tokens"].replace(",", ""))
    concurrency = record["logged"]["max_concurrency"].rstrip("x")
    fits = [n for n in range(1, 10_000) if n // groups * block == tokens and f"{n / request:.2f}" == concurrency]
    assert fits == [1487]


def test_serve_json_contract_for_a_hybrid():
    data = serve("qwen3-next-80b-a3b", tp=4, max_model_len=32768, **H100).to_dict()
    for key in ("weights_bytes", "activation_peak_bytes", "non_torch_bytes", "cuda_graph_bytes", "requested_bytes",
                "available_kv_cache_bytes", "num_gpu_blocks", "kv_cache_tokens", "max_model_len"):
        assert isinstance(data[key], int) and not isinstance(data[key], bool), key
    assert isinstance(data["max_concurrency"], float)
    assert data["inputs"]["kv_layout"] == "FullAttentionSpec + MambaSpec"
    assert data["inputs"]["mamba_cache_mode"] == "none" and data["starts"] is True
    json.dumps(data)


def test_serve_text_prints_vllms_block_size_lines():
    out = CliRunner().invoke(cli.cli, ["serve", "--model", "bamba-9b", "--gpu", "h100-80gb", "--max-model-len", "8192"])
    assert out.exit_code == 0, out.output
    assert "Setting attention block size to 528 tokens" in out.output
    assert "Padding mamba page size by 0.69%" in out.output  # (2,162,688 - 2,147,840) / 2,147,840


@pytest.mark.parametrize("args, named", [
    (["--model", "bamba-9b", "--max-model-len", "8192", "--mamba-cache-mode", "all"], "--mamba-cache-mode all"),
    (["--model", "jamba-v0.1", "-pp", "2"], "--pipeline-parallel-size 2"),
    (["--model", "bamba-9b", "--max-model-len", "8192", "--enable-prefix-caching"], "--mamba-cache-mode align"),
    (["--model", "mamba-2.8b", "--max-model-len", "2048", "-tp", "3"], "intermediate_size 5120"),
])
def test_unmodelled_settings_are_refused_in_one_line(args, named):
    out = CliRunner().invoke(cli.cli, ["serve", "--gpu", "h100-80gb", *args])
    assert out.exit_code == 2
    assert named in out.output and len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output


def test_sliding_attention_beside_recurrent_layers_is_refused():
    spec = ModelSpec(name="mix", model_type="test", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=4, head_dim=16, intermediate_size=128, vocab_size=256,
                     tie_word_embeddings=False,
                     layers=(LayerGroup("sliding_attention", "dense", 1, {"sliding_window": 8}),
                             LayerGroup("mamba", "dense", 1, {"intermediate_size": 128, "state_size": 4,
                                                              "time_step_rank": 4, "conv_kernel": 4})))
    with pytest.raises(InputError, match="sliding_attention layers beside mamba"):
        vllm_hybrid.check(spec, Scenario())


def test_solve_concurrency_under_vllm_is_flat_in_seq_len_for_mamba():
    runner = CliRunner()
    answers = []
    for length in ("1000", "100000"):
        out = runner.invoke(cli.cli, ["solve", "concurrency", "--model", "mamba-2.8b", "--gpu", "rtx-4090",
                                      "--seq-len", length, "--json"])
        assert out.exit_code == 0, out.output
        answers.append(json.loads(out.output)["value"])
    assert answers[0] == answers[1] > 0


def test_concurrency_stays_a_formula_in_utilization():
    worker = serve("jamba-v0.1", tp=2, max_model_len=8000, **H100).worker
    expr = worker.quantities["max_concurrency"]
    assert S.gpu_memory_utilization in expr.xreplace({k: v for k, v in worker.model.facts.items()
                                                      if k != S.gpu_memory_utilization}).free_symbols
    assert isinstance(expr, sympy.Expr)


def _default_config(name: str, tmp_path) -> str:
    """A transformers-default config of tools/measure/configs (no published one is stored)."""
    config = json.loads((Path(__file__).parents[1] / "tools" / "measure" / "configs" / f"{name}.json").read_text())
    config = config.get("config", config)
    config.pop("time_step_limit", None)  # (0, inf): not JSON, and it sizes nothing
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_falcon_h1_parallel_layers_are_one_attention_and_one_mamba_group(tmp_path):
    """Every Falcon-H1 layer has an attention and a Mamba-2 spec: 2 groups of 32 layers.
    State: conv 3 x (128 x 8 + 2 x 1 x 256) = 4,608, SSM 128 x 8 x 256 = 262,144 -> x2 B = 533,504;
    attention 2 x 8 x 128 x 2 = 4,096 B/token -> 16 ceil(533,504 / 65,536) = 144."""
    p = serve(_default_config("default-falcon-h1", tmp_path), max_model_len=4096, **H100)
    assert (p.values["state_page_bytes"], p.values["attention_block_size"]) == (533_504, 144)
    assert (p.worker.value("num_groups"), p.worker.value("layers_per_block")) == (2, 32)
    assert p.values["max_concurrency"] == Fraction(p.values["num_gpu_blocks"], math.ceil(4096 / 144) + 1)


def test_nemotron_h_ssm_state_defaults_to_float32(tmp_path):
    """NemotronHForCausalLMConfig: float32 SSM state (conv 3 x (128 x 64 + 2 x 8 x 128) x 2 B = 61,440,
    SSM 128 x 64 x 128 x 4 B = 4,194,304)."""
    p = serve(_default_config("default-nemotron-h", tmp_path), max_model_len=4096, **H100)
    assert p.values["state_page_bytes"] == 61_440 + 4_194_304


def test_kv_cache_state_subterm_is_the_state_of_the_whole_requests_that_fit():
    p = serve("bamba-9b", max_model_len=8192, **H100)
    terms, v = p.worker.model.evaluate().terms, p.values
    assert terms["kv_cache/state"] == int(v["max_concurrency"]) * v["state_bytes_per_request"]
    assert terms["kv_cache/state"] + terms["kv_cache/attention"] == terms["kv_cache"]
    assert v["state_bytes_per_request"] == 29 * v["page_bytes"]  # one padded page per Mamba layer
    assert "MambaSpec" in p.worker.model.sources["kv_cache/state"]


@pytest.mark.parametrize("counts, size", [((3, 29), 3), ((4, 28), 4), ((12, 36), 12), ((32, 32), 32), ((8, 10), 10),
                                          ((2, 3), 2)])
def test_group_size_pads_the_smaller_type_only_when_counts_are_close(counts, size):
    assert vllm_hybrid.group_size_for(*counts) == size


def test_prefix_caching_gives_gated_deltanet_the_align_mode():
    p = serve("qwen3-next-80b-a3b", tp=4, max_model_len=32768, enable_prefix_caching=True, **H100)
    assert p.worker.model.inputs["mamba_cache_mode"] == "align"
    assert p.values["max_concurrency"] == Fraction(p.values["num_gpu_blocks"], math.ceil(32768 / 272) + 3 * 2)


def test_serve_json_on_the_command_line_for_an_attention_free_model():
    out = CliRunner().invoke(cli.cli, ["serve", "--model", "mamba-2.8b", "--gpu", "rtx-4090", "--max-model-len",
                                       "65536", "--mamba-ssm-cache-dtype", "float32", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["inputs"]["kv_layout"] == "MambaSpec" and data["inputs"]["mamba_ssm_cache_dtype"] == "float32"
    assert data["max_concurrency"] == data["num_gpu_blocks"]  # one state page a request, whatever the length
    assert data["terms"]["kv_cache/state"] == data["num_gpu_blocks"] * 64 * (3 * 5_120 * 2 + 5_120 * 16 * 4)


def test_the_light_list_of_recurrent_mixers_agrees_with_the_state_shapes():
    """vllm_settings spells the recurrent kinds out (it stays SymPy-free); they must be vllm_hybrid's."""
    from engine.profiles import vllm_hybrid, vllm_settings

    assert set(vllm_settings.RECURRENT_MIXERS) == set(vllm_hybrid.RECURRENT_KINDS)
