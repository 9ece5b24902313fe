"""Parameter tensors of a decoder-only transformer, by component.

A model is a list of :class:`WeightTensor` rows keyed like nanoGPT's sizing notebook
(``'attention/q_proj'``, ``'mlp/down_proj'``); the parameter count is their sum. Each
function below returns the tensors of one component for one layout, with shapes in the
declared symbols, so a count stays a formula until a model's facts are substituted.

The tensors of each layer kind (attention, MLA, dense MLP, MoE, ...) live in that kind's
entry, formulas/layers/; this module holds what every model shares (embedding, block norms,
output head) and the sums. Layouts follow the module definitions in transformers 5.x (``modeling_llama.py``,
``modeling_qwen3.py``, ``modeling_deepseek_v3.py``, ``modeling_gpt2.py``,
``modeling_falcon.py``, ``modeling_gemma2.py``, ``modeling_phi3.py``,
``modeling_mixtral.py``, ``modeling_qwen3_moe.py``); tests check the counts against what
transformers instantiates on the ``meta`` device.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from formulas.symbols import hidden_size, max_position_embeddings, num_hidden_layers, vocab_size

ONE = sympy.Integer(1)
# how a tensor is split across ranks: replicated, over tensor-parallel ranks, or over expert-
# and tensor-parallel ranks (routed experts)
PARALLEL_SPLITS = ("replicated", "tensor", "expert")


@dataclass(frozen=True)
class WeightTensor:
    """``count`` identical tensors of ``rows x cols`` elements.

    ``quantizable`` marks the linear layers inside the transformer blocks, the tensors
    that weight-only quantization (int8, int4, fp8) replaces; embeddings, norms, biases,
    routers and the output head keep the model's dtype. ``parallel`` says which degrees
    split it (formulas/parallelism.py ``gpu_share``): ``tensor`` (heads, MLP width, vocab),
    ``expert`` (routed experts: expert and tensor parallel) or ``replicated``. The layer
    kind that owns a tensor decides both (formulas/layers/).
    """

    name: str
    rows: sympy.Expr
    cols: sympy.Expr
    count: sympy.Expr
    quantizable: bool = False
    parallel: str = "replicated"  # one of PARALLEL_SPLITS: how tensor/expert parallelism splits it
    active_count: sympy.Expr | None = None  # of ``count``, those one token passes through (None: all)

    @property
    def component(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def numel(self) -> sympy.Expr:
        return self.rows * self.cols * self.count


def linear(name, out_features, in_features, count, bias=False, quantizable=True, parallel="tensor"):
    """An ``out x in`` weight (and its bias) of ``count`` layers, split as ``parallel`` says."""
    tensors = [WeightTensor(name, out_features, in_features, count, quantizable, parallel)]
    if bias:
        tensors.append(WeightTensor(name + ".bias", out_features, ONE, count, parallel=parallel))
    return tensors


def norm(name, width, count, bias=False):
    """RMSNorm holds a weight vector; LayerNorm a weight and a bias; replicated on every rank."""
    tensors = [WeightTensor(name, width, ONE, count)]
    if bias:
        tensors.append(WeightTensor(name + ".bias", width, ONE, count))
    return tensors


def embedding_tensors(learned_positions: bool = False) -> list[WeightTensor]:
    """Token embedding ``V x h``; GPT-2's learned position table ``P x h`` when present."""
    tensors = [WeightTensor("embedding/tokens", vocab_size, hidden_size, ONE, parallel="tensor")]
    if learned_positions:
        tensors.append(WeightTensor("embedding/positions", max_position_embeddings, hidden_size, ONE))
    return tensors


def lm_head_tensors(tied: bool, bias: bool = False) -> list[WeightTensor]:
    """Output projection ``V x h``; none when tied to the token embedding. Phi and PhiMoE
    add a bias of ``V`` (transformers' ``PhiForCausalLM.lm_head``, ``lm_head_bias``)."""
    tensors = [] if tied else [WeightTensor("lm_head", vocab_size, hidden_size, ONE, parallel="tensor")]
    if bias:
        tensors.append(WeightTensor("lm_head/bias", vocab_size, ONE, ONE, parallel="tensor"))
    return tensors


def norm_tensors(per_layer: int, *, bias: bool = False, final: bool = True) -> list[WeightTensor]:
    """``per_layer`` norms of width ``h`` in every layer, plus the final norm."""
    tensors: list[WeightTensor] = []
    if per_layer:
        tensors += norm("norm/layers", hidden_size, per_layer * num_hidden_layers, bias)
    if final:
        tensors += norm("norm/final", hidden_size, ONE, bias)
    return tensors


def parameter_count(tensors: list[WeightTensor]) -> sympy.Expr:
    """Total elements of ``tensors``."""
    return sympy.Add(*(t.numel for t in tensors))


def parameters_by_component(tensors: list[WeightTensor]) -> dict[str, sympy.Expr]:
    """Elements per component (``embedding``, ``attention``, ``mlp``, ...), in order."""
    out: dict[str, sympy.Expr] = {}
    for t in tensors:
        out[t.component] = out.get(t.component, sympy.Integer(0)) + t.numel
    return out


def active_parameter_count(tensors: list[WeightTensor]) -> sympy.Expr:
    """Parameters one token passes through: ``k_e`` of the ``E`` routed experts per layer
    (each tensor's ``active_count``, set by its layer kind)."""
    return sympy.Add(*(t.numel if t.active_count is None else t.rows * t.cols * t.active_count for t in tensors))


def merged(tensors: list[WeightTensor]) -> list[WeightTensor]:
    """Rows that differ only in ``count`` summed into one, in order of first appearance.

    Two layer groups with the same tensor (a sliding and a full attention layer both hold
    ``q_proj``) give one row of ``L - L_w`` plus ``L_w``, i.e. ``L``, layers.
    """
    rows: dict[tuple, WeightTensor] = {}
    for t in tensors:
        key = (t.name, t.rows, t.cols, t.quantizable, t.parallel, t.active_count is None)
        seen = rows.get(key)
        if seen is None:
            rows[key] = t
        else:
            active = None if t.active_count is None else seen.active_count + t.active_count
            rows[key] = WeightTensor(t.name, t.rows, t.cols, seen.count + t.count, t.quantizable, t.parallel, active)
    return list(rows.values())
