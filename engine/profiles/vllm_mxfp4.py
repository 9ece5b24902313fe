"""gpt-oss's MXFP4 experts as the MoE backend vLLM picks holds them after loading.

vllm/model_executor/layers/quantization/mxfp4.py ``get_mxfp4_backend`` (no LoRA), read as of
0.19 with vLLM's default environment: FlashInfer on SM90 only with the opt-in
``VLLM_USE_FLASHINFER_MOE_MXFP4_BF16``; FlashInfer on the SM100 family whenever FlashInfer is
installed (vLLM's CUDA wheels depend on flashinfer-python); otherwise Triton where
``triton_kernels`` is importable, torch >= 2.8 and ``(9, 0) <= capability < (11, 0)`` (vLLM
ships its own copy of triton_kernels), unless ``VLLM_MXFP4_USE_MARLIN=1``; else Marlin.
``Mxfp4Config.get_min_capability`` is 80. vLLM 0.10.1's wheel had no triton_kernels, so the
same rule chose Marlin on an H100 (vllm-project/vllm#23278 logs "leveraging the Marlin
kernel"): ``--mxfp4-backend marlin`` states that environment.

``Mxfp4MoEMethod.create_weights`` pads per backend (Triton: ``f_e / t`` to 64; Marlin: to 128
and ``h`` to 256); ``process_weights_after_loading`` then keeps (Triton) the swizzled values
in place of the originals, two uint8 copies of the scales where ``_swizzle_mxfp4`` builds a
Hopper/Blackwell scale layout (one where the layout stays ``StridedLayout``, below sm90) and
float32 biases; (Marlin, ``prepare_moe_fp4_layer_for_marlin``) repacked values and scales in
place, bf16 biases. FlashInfer's shuffled layouts and ROCm's padding
(``get_padding_alignment``) are not modelled: an error naming the flag, never a silent count.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy

from engine.errors import InputError
from engine.gpus import gpu as catalog_gpu
from formulas import symbols as S
from formulas.frameworks import vllm as F

# the choices: engine/profiles/vllm_settings.py MXFP4_BACKENDS
MIN_CAPABILITY = (8, 0)  # Mxfp4Config.get_min_capability: 80
TRITON_CAPABILITIES = ((9, 0), (11, 0))  # get_mxfp4_backend: (9, 0) <= capability < (11, 0)
SWIZZLED_SCALE_MAJORS = (9, 10)  # triton_kernels make_default_matmul_mxfp4_w_scale_layout: Hopper, Blackwell


@dataclass(frozen=True)
class Backend:
    """The chosen backend, why, and the layout it leaves."""

    name: str  # "Triton" or "Marlin"
    why: str
    scale_copies: int
    float32_biases: bool
    width_padding: int
    pads_hidden: bool

    @property
    def note(self) -> str:
        return f"MXFP4 experts as the {self.name} backend holds them ({self.why}; engine/profiles/vllm_mxfp4.py)"


def capability(gpu_name: str | None) -> tuple[int, int] | None:
    """The catalog GPU's CUDA compute capability; None without ``--gpu``."""
    if gpu_name is None:
        return None
    cc = catalog_gpu(gpu_name).compute_capability
    if cc is None:
        raise InputError(f"--gpu {gpu_name}: gpt-oss's MXFP4 experts on ROCm (get_padding_alignment) are not "
                         "modelled (modelled: NVIDIA GPUs)")
    return cc


def choose(requested: str, gpu_name: str | None) -> Backend:
    """vLLM's backend for ``--mxfp4-backend requested`` on ``gpu_name`` (auto: vLLM's rule)."""
    cc = capability(gpu_name)
    if cc is not None and cc < MIN_CAPABILITY:
        raise InputError(f"--gpu {gpu_name}: vLLM's mxfp4 needs compute capability 8.0 or newer "
                         f"(Mxfp4Config.get_min_capability), this GPU has {cc[0]}.{cc[1]}")
    if requested == "flashinfer" or requested == "auto" and cc is not None and cc[0] == 10:
        raise InputError(f"--mxfp4-backend {requested}: the FlashInfer MXFP4 layouts (vLLM's choice on "
                         "sm100 GPUs) are not modelled; pass --mxfp4-backend triton or marlin")
    where = "no --gpu: an H100's choice" if cc is None else f"{gpu_name}, sm{cc[0]}{cc[1]}"
    supported = cc is None or TRITON_CAPABILITIES[0] <= cc < TRITON_CAPABILITIES[1]
    if requested == "marlin" or requested == "auto" and not supported:
        how = "--mxfp4-backend marlin" if requested == "marlin" else "vLLM's choice below sm90 and from sm110"
        return Backend("Marlin", f"{where}, {how}", 1, False, F.MXFP4_MARLIN_INTERMEDIATE_PADDING, True)
    copies = F.MXFP4_RESIDENT_SCALE_COPIES if cc is None or cc[0] in SWIZZLED_SCALE_MAJORS else 1
    how = "vLLM's choice on sm90-sm10x" if supported else "--mxfp4-backend triton, strided layouts"
    return Backend("Triton", f"{where}, {how}", copies, True, F.MXFP4_TRITON_PADDING, False)


def expert_bytes(stored: sympy.Expr, tensor_is_bias: bool, numel: sympy.Expr, backend: Backend) -> sympy.Expr:
    """One routed-expert tensor family's bytes: ``stored`` (the checkpoint's MXFP4 form) with
    the backend's padding, and the biases in the backend's dtype."""
    if tensor_is_bias and backend.float32_biases:
        stored = numel * F.MXFP4_RESIDENT_BIAS_BYTES
    padded = {S.moe_intermediate_size: F.mxfp4_padded_expert_width(backend.width_padding) * S.tensor_parallel}
    if backend.pads_hidden:
        padded[S.hidden_size] = F.mxfp4_marlin_hidden()
    return stored.xreplace(padded)


def scale_factor(backend: Backend) -> Fraction:
    """Copies of every E8M0 scale byte the backend keeps."""
    return Fraction(backend.scale_copies)
