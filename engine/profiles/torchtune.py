"""The ``torchtune`` profile: torchtune's fine-tuning recipes, as their code allocates.

Recipes full_finetune_single_device / full_finetune_distributed (full) and
lora_finetune_single_device / lora_finetune_distributed (``--lora-rank``; QLoRA with
``--weight-quant nf4``: torchao NF4 base). Training in ``dtype: bf16`` (or fp32): weights,
gradients and optimizer state in that dtype, no fp32 master. The distributed recipes shard
with FSDP2 (``fully_shard``; FSDP1 up to 0.2.1, the same terms): ``--dp N --zero 3``. The
peak is ``max_memory_allocated`` (torchtune/training/memory.py get_memory_stats,
"peak_memory_active"), the largest of:

- ``loss_forward``: the end of the loss's forward (the logits and their log-softmax);
- ``loss_backward``: the start of backward: every saved activation plus the loss's gradients;
- ``recompute`` (checkpointing): a layer recomputed for its backward;
- ``backward_end``: every gradient (tied embeddings: plus their out-of-place sum);
- ``optimizer_step``: gradients plus the optimizer's temporaries; with
  ``--optimizer-in-backward`` (``optimizer_in_bwd``) no full gradient buffer exists: each
  parameter steps in its post-accumulate-grad hook and its gradient is freed
  (training/memory.py register_optim_in_bwd_hooks), so ``backward_step`` holds one.

Paged bitsandbytes state lives in CUDA unified memory, outside PyTorch's allocator: it is a
host term (``optimizer_paged``), not in ``total_bytes``; offloaded activations are one too.
"""

from __future__ import annotations

import dataclasses

import sympy

from engine import architecture, quantization
from engine import terms as shared
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.profiles.torchtune_sources import CONTEXT_SOURCE, DESCRIPTIONS, HOST_SOURCE, SOURCES
from engine.scenario import Scenario
from engine.spec import LayerGroup, ModelSpec
from formulas import optimizer as O
from formulas import overhead, peft
from formulas import parallelism as par
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES, canonical_dtype
from formulas.frameworks import torchtune as F
from formulas.frameworks.transformers import tied_embedding_gradient_sum

FAMILIES = ("llama", "qwen2", "mistral")  # torchtune builders with this layer (no q/k norm)
OPTIMIZERS = ("adamw", "adam", "sgd", "sgd-momentum", "adamw8bit", "paged-adamw8bit", "paged-adamw")
TORCH_FOREACH = ("adamw", "adam")  # torch.optim: one P-sized intermediate (see F.foreach_temporaries)
# torchtune's configs build torch.optim.AdamW with ``fused: True`` (recipes/configs/llama3_2/3B_full.yaml,
# 3B_lora_single_device.yaml, llama3_1/8B_lora_single_device.yaml, ... at 1814feb17): no step temporaries.
DEFAULT_IMPL = "fused"
STATE_COPIES = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0}
# custom_sharded_layers: ['tok_embeddings', 'output'] (recipes/configs/llama3_1/70B_full.yaml, 8B_full.yaml at
# 1814feb17): shard_model's shard_conditions fully_shard them apart from the root.
SEPARATE_UNITS = ("embedding", "lm_head")


def _modelled(group: LayerGroup) -> bool:
    """The layer the formulas describe: full attention without q/k norms, gated dense MLP."""
    return (group.mixer == "attention" and not group.mixer_args.get("qk_norm", False)
            and group.mlp == "dense" and group.mlp_args.get("gated", True))


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse what the recipes do not do, or what the formulas do not describe, by name."""
    if spec.model_type not in FAMILIES or not all(_modelled(group) for group in spec.layers):
        raise InputError(f"--profile torchtune: model_type {spec.model_type!r} is not modelled; it covers dense "
                         f"{', '.join(FAMILIES)} decoders (gated MLP, no sliding window, MoE or q/k norm)")
    if canonical_dtype(scenario.dtype) not in ("bfloat16", "float32"):
        raise InputError(f"--profile torchtune: --dtype {scenario.dtype} is not a torchtune training dtype "
                         "(training/precision.py: bf16 or fp32)")
    if scenario.precision not in ("auto", "pure"):
        raise InputError(f"--profile torchtune: --precision {scenario.precision} is not modelled; torchtune trains "
                         "everything in --dtype, no fp32 master (pure)")
    if scenario.optimizer not in OPTIMIZERS:
        raise InputError(f"--profile torchtune: --optimizer {scenario.optimizer} is not modelled "
                         f"(choose from {', '.join(OPTIMIZERS)})")
    _check_mechanisms(spec, scenario)


def _check_mechanisms(spec: ModelSpec, scenario: Scenario) -> None:
    if scenario.recompute == "selective":
        raise InputError("--profile torchtune: --recompute selective is not modelled (enable_activation_checkpointing "
                         "wraps whole layers: --recompute full)")
    if scenario.activation_offload and scenario.recompute != "full":
        raise InputError("--profile torchtune: --activation-offload needs --recompute full (the recipes raise "
                         "'enable_activation_offloading should only be True when enable_activation_checkpointing')")
    if scenario.optimizer_in_backward and scenario.lora_rank is not None:
        raise InputError("--profile torchtune: --optimizer-in-backward is not in the LoRA recipes "
                         "(only full_finetune_single_device / full_finetune_distributed read optimizer_in_bwd)")
    quant = scenario.weight_quant or "none"  # torchtune's checkpointers load the weights in cfg.dtype
    if quant not in ("none", "nf4") or (quant == "nf4" and scenario.lora_rank is None):
        raise InputError(f"--profile torchtune: --weight-quant {scenario.weight_quant} is not modelled (QLoRA: "
                         "--weight-quant nf4 with --lora-rank)")
    if scenario.offload not in ("none", "both") or (scenario.offload == "both" and scenario.dp == 1):
        raise InputError(f"--profile torchtune: --offload {scenario.offload} is not modelled; the distributed "
                         "recipes' fsdp_cpu_offload moves parameters, gradients and optimizer state together "
                         "(--dp N --zero 3 --offload both)")
    if (scenario.dp > 1) != (scenario.zero == 3):
        raise InputError(f"--profile torchtune: --dp {scenario.dp} --zero {scenario.zero} is not a recipe; the "
                         "distributed recipes shard with FSDP2 (--dp N --zero 3), single device is --dp 1")
    if scenario.torchtune_release == F.RELEASE_SLICED_LOGITS:
        _check_release(scenario)
    if scenario.custom_sharded_layers and (scenario.dp == 1 or spec.tie_word_embeddings):
        raise InputError("--custom-sharded-layers needs --dp N --zero 3 and an untied output (a TiedLinear reads "
                         "tok_embeddings' weight outside its FSDP unit)")
    if scenario.lora_targets and peft.OUTPUT_HEAD in scenario.lora_targets and spec.tie_word_embeddings:
        raise InputError(f"--lora-targets lm_head: {spec.name} ties its output projection to the embedding "
                         "(torchtune's builders raise for apply_lora_to_output with tied embeddings)")


def _check_release(scenario: Scenario) -> None:
    """torchtune <= 0.2.1 had no chunked loss (v0.3.0, #1390) nor activation offloading (v0.4.0).
    Its ``compile`` wrapped the whole model (utils/_compile_utils.py wrap_compile at 0217d44c2:
    ``torch.compile(model)``); with every layer checkpointed the forward keeps the layer inputs
    either way and the loss runs eagerly in the loop, so only the recomputed layer's partition
    differs, taken as a compiled layer's (F.layer_saved). Without checkpointing it is refused."""
    later = [knob for knob, on in (("--loss-chunks", scenario.loss_chunks is not None),
                                   ("--activation-offload", scenario.activation_offload),
                                   ("--compile without --recompute full",
                                    scenario.torch_compile and scenario.recompute != "full")) if on]
    if later:
        raise InputError(f"--torchtune-release 0.2: {later[0]} is not modelled for torchtune <= 0.2.1 (chunked "
                         "cross-entropy came in 0.3.0, activation offloading in 0.4.0; its compile wrapped the whole "
                         "model, modelled with every layer checkpointed)")


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The training memory model of one GPU (see the module docstring)."""
    tensors = architecture.parameter_tensors(spec)
    lora = scenario.lora_rank is not None
    targets, trained = shared.lora_adapters(spec, scenario) if lora else ([], tensors)
    share = par.zero_partition(scenario.zero, "weights")
    built = shared.weight_terms(spec, scenario, share, _weight_format(spec, scenario))
    if lora:
        built["adapters"] = shared.per_gpu_count(trained) * S.adapter_bytes * _shard(scenario)
    built["input_ids"] = F.sliced_input_ids() if _sliced(scenario) else F.input_ids()
    state, host = _optimizer_terms(spec, trained, scenario)
    built.update(state)
    built.update(_activation_terms(spec, scenario, targets))
    host.update(_host_activations(scenario))
    if scenario.dp > 1:
        built.update(_fsdp_unsharded(spec, scenario, trained))
    if scenario.recompute == "full" and not scenario.optimizer_in_backward:
        built["recompute_gradients"] = _recompute_gradients(spec, scenario, trained, built["gradients"])
        if scenario.lora_rank is None and scenario.dp == 1:  # w2's gradient, made before MulBackward's
            built["down_proj_gradient"] = S.hidden_size * S.intermediate_size * S.gradient_bytes
    if scenario.offload == "both":
        host.update(_cpu_offload(built, scenario))
    parameters, active = shared.counts(spec)
    return MemoryModel(
        name=spec.name, mode="training", terms=built, facts=_facts(spec, scenario), phases=_phases(built),
        descriptions={**shared.DESCRIPTIONS, **DESCRIPTIONS}, inputs=_inputs(spec, scenario),
        parameters=parameters, active_parameters=active, host_terms=host,
        sources={name: SOURCES[name] for name in built if "/" not in name}
        | {"host_terms": HOST_SOURCE, "outside_terms": CONTEXT_SOURCE},
        allocator="native", tensors=_tensors(spec, scenario, trained, built),
        outside_terms={"cuda_context": overhead.reserve()},
    )


def _tensors(spec: ModelSpec, scenario: Scenario, trained: list[P.WeightTensor], built: dict[str, sympy.Expr]):
    """The tensors the large terms are made of, for the caching allocator's rounding
    (formulas/allocator.py): one per parameter (FSDP2 keeps one local shard per parameter:
    torch/distributed/fsdp/_fully_shard/_fsdp_param.py FSDPParam), gradient and AdamW moment,
    and per layer what it saves; the rest, one tensor per term."""
    share, lora = _shard(scenario), scenario.lora_rank is not None
    quant = _weight_format(spec, scenario)
    weights = shared.first_stage(architecture.parameter_tensors(spec) + architecture.buffer_tensors(spec), scenario)
    width = S.adapter_bytes if lora else S.weight_bytes
    per_tensor = [(t.count, t.rows * t.cols * share) for t in trained]
    listed = {"weights": tuple((t.count, quant.tensor_bytes(t) / t.count * share) for t in weights)}
    if lora:
        listed["adapters"] = tuple((n, e * width) for n, e in per_tensor)
    largest = [(1, built["gradients"] / S.gradient_bytes)] if scenario.optimizer_in_backward else per_tensor
    listed["gradients"] = tuple((n, e * S.gradient_bytes) for n, e in largest)
    if _foreach(scenario):
        listed["optimizer_temporaries"] = tuple((n, e * width) for n, e in largest)
    if scenario.optimizer not in ("adamw8bit", "paged-adamw8bit", *O.PAGED_OPTIMIZERS):
        copies = STATE_COPIES.get(scenario.optimizer, 2)
        listed["optimizer"] = tuple((copies * n, e * S.optimizer_bytes / copies) for n, e in per_tensor if copies)
    saved = [(S.num_hidden_layers * n, x) for n, x in F.layer_saved_tensors(scenario.torch_compile)]
    layer_input = S.activation_bytes * S.batch_size * S.seq_len * S.hidden_size
    if scenario.recompute != "full":
        listed["activations/layers"] = tuple(saved)
    else:
        stashed = built["activations/layers"] / layer_input  # L inputs, or none when offloaded
        listed["activations/layers"] = ((stashed, layer_input),) if stashed != 0 else ()
        brought_back = F.OFFLOAD_BACKWARD_INPUTS if scenario.activation_offload else 0
        listed["recompute"] = (*F.layer_saved_tensors(scenario.torch_compile), *F.recompute_backward_tensors())
        if brought_back:
            listed["recompute"] += ((brought_back, layer_input),)
    chunks = scenario.loss_chunks
    if chunks is not None:
        for name in ("activations/loss", "loss_forward"):
            listed[name] = ((chunks, built[name] / chunks),)
    if "tied_gradient_sum" in built:
        listed["tied_gradient_sum"] = ((2, built["tied_gradient_sum"] / 2),)
    if "head_backward" in built:
        listed["head_backward"] = F.chunked_head_backward_tensors(chunks)
    return {name: parts for name, parts in listed.items() if built.get(name) != 0}  # offloaded: on the host


def _weight_format(spec: ModelSpec, scenario: Scenario) -> quantization.Quantization:
    """``--weight-quant nf4`` as torchao stores it (F.torchao_nf4), else the shared reading."""
    quant = shared.weight_format(spec, scenario)
    if quant.name != "nf4":
        return quant
    return dataclasses.replace(quant, scheme=F.torchao_nf4(scenario.weight_bytes()))


def _shard(scenario: Scenario) -> sympy.Expr:
    """FSDP2 keeps ``1 / N_d`` of every parameter, gradient and state on a rank."""
    return par.zero_partition(scenario.zero, "optimizer")


def _optimizer_terms(spec: ModelSpec, trained: list[P.WeightTensor], scenario: Scenario):
    """(gradients, optimizer, optimizer_temporaries[, tied sum]) on the device, and the paged host part."""
    width = S.adapter_bytes if scenario.lora_rank is not None else S.weight_bytes
    count = shared.per_gpu_count(trained) * _shard(scenario)
    largest = sympy.Max(*(t.rows * t.cols for t in trained)) * _shard(scenario)
    device, paged = shared.optimizer_state(trained, scenario.optimizer, _shard(scenario))
    if scenario.optimizer_in_backward and scenario.optimizer in ("adamw8bit", "paged-adamw8bit"):
        # one optimizer per parameter (_setup_optimizer's optim_dict), each with its own qmaps
        tensors = sympy.Add(*(t.count for t in trained))
        device += (tensors - 1) * O.BNB_QMAP_BYTES
    in_backward = scenario.optimizer_in_backward
    stepped = largest if in_backward else count
    terms = {
        "gradients": stepped * S.gradient_bytes,
        "optimizer": device,
        "optimizer_temporaries": (F.foreach_temporaries(stepped, width) if _foreach(scenario)
                                  else sympy.Integer(0)),
    }
    # the output weight's gradient, alive through the layers' backward (stepped and freed at once
    # in backward unless tied: the tied weight's AccumulateGrad waits for the embedding's)
    # FSDP2: the root's gradients are reduce-scattered last (the root post-backward final callback),
    # so a root-kept output's is unsharded through the layers' backward; its own unit's right after it
    if scenario.lora_rank is None and (spec.tie_word_embeddings or not in_backward):
        share = _shard(scenario) if scenario.custom_sharded_layers else sympy.Integer(1)
        terms["head_gradient"] = S.vocab_size * S.hidden_size * S.gradient_bytes * share
    if scenario.lora_rank is None and spec.tie_word_embeddings:
        terms["tied_gradient_sum"] = tied_embedding_gradient_sum() * _shard(scenario)
    return terms, ({"optimizer_paged": paged} if scenario.optimizer in O.PAGED_OPTIMIZERS else {})


def _foreach(scenario: Scenario) -> bool:
    """torch.optim's multi-tensor step (``foreach=True``, torch's CUDA default), not torchtune's
    configs' ``fused: True`` (``_fused_adamw_`` updates in place; added by #1575, cca50f02e,
    2024-09-14: the configs of torchtune <= 0.2.1 set no ``fused``, so their default is foreach)."""
    default = "foreach" if _sliced(scenario) else DEFAULT_IMPL
    return scenario.optimizer in TORCH_FOREACH and (scenario.optimizer_impl or default) == "foreach"


def _activation_terms(spec: ModelSpec, scenario: Scenario, lora_targets) -> dict[str, sympy.Expr]:
    """Saved activations (see formulas/frameworks/torchtune.py), the loss's gradients and,
    with checkpointing, the recomputed layer."""
    checkpointing, compiled, chunks = scenario.recompute == "full", scenario.torch_compile, scenario.loss_chunks
    offloaded = checkpointing and scenario.activation_offload
    if offloaded:
        layers = sympy.Integer(0)  # every layer input in pinned CPU memory (F.offload_recompute_inputs)
    elif checkpointing:
        layers = S.num_hidden_layers * F.checkpointed_layer_saved()
    else:
        layers = S.num_hidden_layers * F.layer_saved(compiled)
    sliced = _sliced(scenario)
    head = F.head_saved(scenario.lora_rank is not None, peft.OUTPUT_HEAD in (scenario.lora_targets or ()))
    parts = {"activations/layers": layers, "activations/head": head,
             "activations/loss": F.sliced_loss_saved() if sliced else F.loss_saved(chunks, compiled)}
    if lora_targets and not checkpointing:
        parts["activations/lora"] = peft.lora_activations(lora_targets)
    built = {"activations": sympy.Add(*parts.values()), **parts}
    built["loss_forward"] = F.sliced_loss_forward() if sliced else F.loss_forward(chunks, compiled)
    built["loss_gradients"] = F.sliced_loss_gradients() if sliced else F.loss_gradients(chunks, compiled)
    if chunks is not None and chunks >= 2 and scenario.lora_rank is None:
        built["head_backward"] = F.chunked_head_backward(chunks)
    if checkpointing:
        built["recompute"] = F.layer_saved(compiled) + F.recompute_backward() + (
            F.offload_recompute_inputs() if offloaded else 0)
    return built


def _sliced(scenario: Scenario) -> bool:
    """``--torchtune-release 0.2``: the loop keeps the sliced fp32 logits (F.sliced_logits)."""
    return scenario.torchtune_release == F.RELEASE_SLICED_LOGITS


def _recompute_gradients(spec: ModelSpec, scenario: Scenario, trained: list[P.WeightTensor],
                         gradients: sympy.Expr) -> sympy.Expr:
    """Beside the first layer's recompute, the last of backward (``recompute_last``): every
    gradient but that layer's and the untied embedding's (the output's is among them), and the
    one layer input left of the stash (offloaded: in ``recompute``). With ``fsdp_cpu_offload``
    the gradients are on the host."""
    per_layer = sympy.Add(*(t.numel for t in trained if t.count != 1)) / S.num_hidden_layers
    embedding = 0 if (scenario.lora_rank is not None or spec.tie_word_embeddings) else S.vocab_size * S.hidden_size
    not_yet = (per_layer + embedding) * S.gradient_bytes * _shard(scenario)
    held = 0 if scenario.offload == "both" else gradients - not_yet
    return held + (0 if scenario.activation_offload else F.checkpointed_layer_saved())


def _host_activations(scenario: Scenario) -> dict[str, sympy.Expr]:
    """Offloaded layer inputs and the final norm's tensors, in pinned CPU memory."""
    if not (scenario.activation_offload and scenario.recompute == "full"):
        return {}
    return {"activations_offloaded": F.offloaded_host_bytes(scenario.lora_rank is not None)}


def _fsdp_unsharded(spec: ModelSpec, scenario: Scenario, trained: list[P.WeightTensor]) -> dict[str, sympy.Expr]:
    """What FSDP2 holds unsharded on a rank (torchtune training/_distributed.py shard_model:
    ``fully_shard`` per layer, then the root).

    ``layers`` and ``next``: a layer is all-gathered before its forward and backward and
    resharded after each (``reshard_after_forward=True``, post_backward's reshard); while one
    computes the next is prefetched, ``min(2, L)`` layers at once (FSDPParamGroup.unshard,
    _backward_prefetch). Between the last layer's forward and backward (the loss) none is
    gathered but the one backward prefetches (``layers``); after the first layer's backward
    none. ``root``: the root module's own parameters (embedding,
    final norm, output) are not resharded after forward ("The root FSDP state has its value
    specially set to False", fully_shard's docstring). Both are whole: the all-gather output is a
    new ``numel x world_size`` buffer (FSDPParam.init_all_gather_outputs; the unsharded parameter
    views it) beside the local shard, which stays. torchtune <= 0.2.1 wrapped with FSDP1
    (FullyShardedDataParallel, FULL_SHARD per TransformerDecoderLayer): the same holds there
    (flat_param._full_param_padded beside flat_param._local_shard, _flat_param.py; the root not
    freed after forward, _runtime_utils.py _post_forward_reshard; two all-gathers in flight,
    limit_all_gathers). ``gradients``: one layer's unsharded gradients before their
    reduce-scatter (FSDPParamGroup.post_backward; FSDP1 _post_backward_hook).
    """
    tensors = architecture.parameter_tensors(spec)
    per_layer = [t for t in tensors if par.is_per_layer(t)]
    quant = _weight_format(spec, scenario)
    layer_bytes = sympy.Add(*(quant.tensor_bytes(t) for t in per_layer)) / S.num_hidden_layers
    root = sympy.Add(*(quant.tensor_bytes(t) for t in tensors if not par.is_per_layer(t)))
    layer_grads = sympy.Add(*(t.numel for t in trained if t.count != 1)) / S.num_hidden_layers * S.gradient_bytes
    separate = [t for t in tensors if scenario.custom_sharded_layers and t.component in SEPARATE_UNITS]
    if separate:  # their own units (SEPARATE_UNITS): gathered in their forward and backward only
        root -= sympy.Add(*(quant.tensor_bytes(t) for t in separate))
    parts = {"zero3_gathered/layers": layer_bytes,
             "zero3_gathered/next": (sympy.Min(par.ZERO3_LIVE_LAYERS, S.num_hidden_layers) - 1) * layer_bytes,
             "zero3_gathered/root": root,
             "zero3_gathered/gradients": layer_grads}
    for t in separate:  # the output while backward reaches it, the embedding at its end (with its gradient)
        grad = t.numel * S.gradient_bytes if scenario.lora_rank is None and t.component == "embedding" else 0
        parts[f"zero3_gathered/{t.component}"] = quant.tensor_bytes(t) + grad
    return {"zero3_gathered": sympy.Add(*parts.values()), **parts}


def _cpu_offload(built: dict[str, sympy.Expr], scenario: Scenario) -> dict[str, sympy.Expr]:
    """``fsdp_cpu_offload`` (CPUOffloadPolicy): sharded parameters, gradients and optimizer
    state live on the host and the optimizer steps there; they leave the device total (a
    root-kept output's gradient is unsharded on the device until the root's reduce-scatter)."""
    head = ("head_gradient",) if scenario.custom_sharded_layers else ()
    moved = ("weights", "adapters", "gradients", "optimizer", "optimizer_temporaries", "tied_gradient_sum", *head)
    host = {name: built[name] for name in moved if name in built}
    for name in [n for n in built if n.split("/", 1)[0] in host]:
        built[name] = sympy.Integer(0)
    return host


def _phases(built: dict[str, sympy.Expr]) -> dict[str, tuple[str, ...]]:
    held = tuple(n for n in ("weights", "adapters", "optimizer", "input_ids", "zero3_gathered/root") if n in built)
    one = ("zero3_gathered/layers",) if "zero3_gathered/layers" in built else ()  # FSDP2: gathered layers
    two = (*one, "zero3_gathered/next") if one else ()
    tied = ("tied_gradient_sum",) if "tied_gradient_sum" in built else ()
    # FSDP2: a layer's unsharded gradients exist in backward, before their reduce-scatter
    reduced = ("zero3_gathered/gradients",) if "zero3_gathered/gradients" in built else ()
    output = ("zero3_gathered/lm_head",) if "zero3_gathered/lm_head" in built else ()
    embedding = ("zero3_gathered/embedding",) if "zero3_gathered/embedding" in built else ()
    phases = {"loss_forward": (*held, "activations/layers", "activations/head", "loss_forward"),
              "loss_backward": (*held, *one, *output, "activations", "loss_gradients")}
    if two:  # the last layer's forward, the next prefetched
        phases["layers_forward"] = (*held, *two, "activations/layers")
    if "head_backward" in built:  # the chunked output projection's weight gradients summed
        phases["head_backward"] = (*held, *one, *output, "activations/layers", "activations/head", "head_backward")
    if "recompute" in built:
        head = ("head_gradient",) if "head_gradient" in built else ()
        down = ("down_proj_gradient",) if "down_proj_gradient" in built else ()
        phases["recompute"] = (*held, *two, "activations/layers", "recompute", *head, *down, *reduced)
    if "recompute_gradients" in built:
        phases["recompute_last"] = (*held, *one, "recompute", "recompute_gradients", *down, *reduced)
    phases["backward_end"] = (*held, "gradients", *tied, *reduced, *embedding)
    phases["optimizer_step"] = (*held, "gradients", "optimizer_temporaries")
    return phases


def _facts(spec: ModelSpec, scenario: Scenario) -> dict[sympy.Symbol, sympy.Expr]:
    """Everything in ``--dtype``: weights, activations, gradients, optimizer moments (pure)."""
    facts = shared.facts(spec, scenario)
    width = sympy.Rational(DTYPE_BYTES[canonical_dtype(scenario.dtype)])
    trained_width = sympy.Rational(scenario.adapter_bytes()) if scenario.lora_rank is not None else width
    facts.pop(S.master_weight_bytes, None)
    state = O.state_bytes_per_parameter(scenario.optimizer, trained_width)
    facts.update({S.weight_bytes: width, S.activation_bytes: width, S.gradient_bytes: trained_width,
                  S.optimizer_bytes: sympy.Rational(state)})
    return facts


def convention(scenario: Scenario) -> str:
    """The bytes-per-parameter convention, in words, for the output."""
    width = DTYPE_BYTES[canonical_dtype(scenario.dtype)]
    name = {2: "bf16", 4: "fp32"}[int(width)]
    state = {"adamw8bit": "2 bitsandbytes 8-bit moments (2 B + absmax per 256)",
             "paged-adamw8bit": "2 bitsandbytes 8-bit moments, paged (unified memory, not counted)",
             "paged-adamw": "2 fp32 moments, paged (unified memory, not counted)"}.get(
        scenario.optimizer, f"{STATE_COPIES.get(scenario.optimizer, 2)} {name} {scenario.optimizer} moments")
    grads = "one parameter's gradient at a time (optimizer in backward)" if scenario.optimizer_in_backward \
        else f"{name} grads"
    trained = "LoRA adapters" if scenario.lora_rank is not None else "every parameter"
    total = ""
    if scenario.optimizer not in O.PAGED_OPTIMIZERS and not scenario.optimizer_in_backward:
        per_parameter = 2 * width + O.state_bytes_per_parameter(scenario.optimizer, width)
        total = f" = {float(per_parameter):g} B/param"
    return f"torchtune {name} (pure, no fp32 master): {name} weights + {grads} + {state}{total}, for {trained}"


def _inputs(spec: ModelSpec, scenario: Scenario) -> dict[str, object]:
    echoed = shared.inputs(spec, scenario)
    echoed["precision"] = "pure"
    echoed["convention"] = convention(scenario)
    return echoed


KNOBS = frozenset({
    "batch_size", "seq_len", "dtype", "weight_quant", "recompute", "optimizer", "precision", "reserve_bytes",
    "dp", "zero", "offload", "lora_rank", "lora_targets", "adapter_dtype", "torch_compile", "loss_chunks",
    "optimizer_in_backward", "activation_offload", "optimizer_impl", "torchtune_release", "custom_sharded_layers",
})

PROFILE = Profile(
    name="torchtune",
    summary="torchtune's full/LoRA/QLoRA recipes, single device and FSDP2 (torchtune 1814feb17)",
    modes=("training",),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note="torchtune's recipes: FSDP2 data parallelism only (--dp N --zero 3), SDPA attention",
)
