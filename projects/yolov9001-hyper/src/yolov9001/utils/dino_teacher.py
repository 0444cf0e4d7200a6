"""``DINOTeacher``: a frozen DINOv3 ViT (transformers) that gives the student patch features, a CLS embedding
and a saliency map for a batch that is already on the device.

Loading: ``AutoModel.from_pretrained(model_name)`` (an HF id or a local folder), token from ``hf_token`` or
``HF_TOKEN``; ``HF_HUB_OFFLINE=1`` loads from the local cache only. The official repos are gated (licence
+ token), so a missing token, no network or a wrong name all end in one :class:`DinoLoadError` saying what
to set, never the hub client's traceback. ``model_name: tiny-random`` builds a small random-init
``DINOv3ViTConfig`` (116,800 parameters, milliseconds a batch) for tests and smoke runs; ``vitb16-random``
has the ViT-B/16 shape of the default teacher (85.7M parameters, random weights) for timing it offline.

Numerics: ``quant`` int8/int4 = torchao weight-only (``quantize_``; torchao is optional and its absence is a
clear error), fp16/bf16/fp32 = the weights' dtype; ``auto`` = bf16 on CUDA with bf16 support, else fp16 on
CUDA, fp32 on CPU. Always ``eval()`` (in train mode DINOv3's RoPE jitters coordinates) and
``requires_grad_(False)``; the forward runs under ``no_grad`` (and autocast on CUDA).

Outputs (``DinoOutput``), for an input of side ``resolution`` (a multiple of 16; RoPE takes any grid):
``patches`` [B, Ht, Wt, Ct] (register tokens stripped), ``cls`` [B, Ct], ``saliency`` [B, Ht, Wt] = the
last layer's CLS-to-patch attention averaged over heads. It is read by a forward pre-hook on the last
attention module that recomputes q_cls and k with RoPE (a [B, heads, 1, T] row, not the T x T matrix), so
the model keeps sdpa; if the hook cannot run (another architecture), token energy (the squared norm of each
patch token) is the fallback and ``saliency_source`` says which was used.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger("yolov9001.dino")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY = "tiny-random"
VITB16 = "vitb16-random"


class DinoLoadError(RuntimeError):
    """The teacher cannot be loaded; the message says what to set. The CLI prints it without a traceback."""


@dataclass
class DinoOutput:
    patches: torch.Tensor     # [B, Ht, Wt, Ct] float32
    cls: torch.Tensor         # [B, Ct] float32
    saliency: torch.Tensor    # [B, Ht, Wt] float32, >= 0
    saliency_source: str      # "cls_attention" or "token_energy"

    def patch_map(self) -> torch.Tensor:
        """Patches as a feature map [B, Ct, Ht, Wt]."""
        return self.patches.permute(0, 3, 1, 2)


def tiny_config():
    """The small random DINOv3 ViT of the tests: 2 layers, width 64, 4 heads, 4 register tokens."""
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_register_tokens=4, patch_size=16)


def vitb16_config():
    """facebook/dinov3-vitb16-pretrain-lvd1689m's shape (hidden 768, 12 layers, 12 heads, 4 registers)."""
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           num_register_tokens=4, patch_size=16)


RANDOM_CONFIGS = {TINY: tiny_config, VITB16: vitb16_config}


def hub_kwargs(hf_token: str | None = None) -> dict:
    """``from_pretrained`` keywords: the token (``dino.hf_token``, else ``HF_TOKEN``) and cache-only mode
    under ``HF_HUB_OFFLINE``."""
    return {"token": hf_token or os.environ.get("HF_TOKEN") or None,
            "local_files_only": hub_offline()}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it (1/true/yes/on; "0" is online)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_config(model_name: str, hf_token: str | None = None):
    """The teacher's config alone (no weights): a random config's, or the hub's / a folder's config.json,
    with the same one-message error as the weights. The trainer reads it first to fail fast."""
    if model_name in RANDOM_CONFIGS:
        return RANDOM_CONFIGS[model_name]()
    from transformers import AutoConfig

    kw = hub_kwargs(hf_token)
    try:
        return AutoConfig.from_pretrained(model_name, **kw)
    except Exception as e:  # gated, offline, bad name: one message, no hub traceback
        raise DinoLoadError(_hub_message(model_name, kw["token"], e)) from None


def _hub_message(name: str, token: str | None, err: BaseException) -> str:
    where = f"local folder {name} could not be read" if os.path.isdir(name) else f"{name} could not be loaded"
    hints = [f"point dino.model_name to a local folder holding the model (config.json + weights)",
             f"or use dino.model_name:{TINY} for a test run"]
    if not os.path.isdir(name):
        hints.insert(0, ("the token was refused: accept the licence on https://huggingface.co/" + name +
                         " with the account of that token") if token else
                     ("the facebook/dinov3-* repos are gated: accept the licence on https://huggingface.co/" +
                      name + ", then set HF_TOKEN (or dino.hf_token)"))
        if hub_offline():
            hints.insert(0, "HF_HUB_OFFLINE is set and the model is not in the local cache")
    return f"DINOv3 teacher: {where} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). " + "; ".join(hints)


class DINOTeacher:
    """Frozen DINOv3 teacher; built on first use (``build()``), freed by ``unload()``.

    Args:
        model_name: HF id, local folder or ``tiny-random``.
        device: where it runs (the student's device).
        resolution: input side in pixels, a multiple of the patch size (16).
        quant: ``auto|int4|int8|fp16|bf16|fp32`` (see the module docstring).
        hf_token: overrides ``HF_TOKEN``.
    """

    def __init__(self, model_name: str, device: torch.device, *, resolution: int = 512, quant: str = "auto",
                 hf_token: str | None = None):
        if resolution <= 0 or resolution % 16:
            raise ValueError(f"dino.resolution must be a positive multiple of 16 (the patch size), got {resolution}")
        self.model_name, self.device, self.resolution = model_name, torch.device(device), int(resolution)
        from ..core.precision import resolve_precision

        self.quant = resolve_precision(quant, self.device)   # auto: the student's rule (bf16/fp16 CUDA, fp32 CPU)
        self.hf_token = hf_token or os.environ.get("HF_TOKEN") or None
        self.model = None
        self._cls_attn: torch.Tensor | None = None
        self._hook = None

    # ---- lifecycle ----
    @property
    def loaded(self) -> bool:
        return self.model is not None

    def build(self) -> DINOTeacher:
        if self.model is not None:
            return self
        model = self._load()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.quant, torch.float32)
        model = model.to(self.device, dtype)
        if self.quant in ("int8", "int4"):
            self._quantize(model)
        model.eval().requires_grad_(False)
        self.model = model
        self.patch = int(model.config.patch_size)
        if self.resolution % self.patch:
            raise ValueError(f"dino.resolution {self.resolution} is not a multiple of the patch size {self.patch}")
        self.num_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0))
        self._install_hook()
        n = sum(p.numel() for p in model.parameters())
        log.info("DINOv3 teacher %s: %.2fM params, %s on %s, %d px (%dx%d patches), saliency from %s",
                 self.model_name, n / 1e6, self.quant, self.device, self.resolution, self.resolution // self.patch,
                 self.resolution // self.patch, "CLS attention" if self._hook else "token energy")
        return self

    def _load(self):
        from transformers import AutoModel

        if self.model_name in RANDOM_CONFIGS:
            # Seeded and outside the global RNG stream: building the teacher must not change the student's
            # random draws (a run with the teacher built lazily stays comparable and resumable).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return AutoModel.from_config(RANDOM_CONFIGS[self.model_name](), attn_implementation="sdpa")
        try:
            return AutoModel.from_pretrained(self.model_name, **hub_kwargs(self.hf_token),
                                             attn_implementation="sdpa")
        except Exception as e:  # gated (401/403), offline, missing files, bad name: one message, no traceback
            raise DinoLoadError(_hub_message(self.model_name, self.hf_token, e)) from None

    def _quantize(self, model) -> None:
        try:
            from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise DinoLoadError(f"dino.quant={self.quant} needs torchao (pip install torchao); or use "
                                f"dino.quant:fp16/bf16/fp32") from None
        quantize_(model, Int8WeightOnlyConfig() if self.quant == "int8" else Int4WeightOnlyConfig())

    def unload(self) -> None:
        """Frees the teacher (``dino.max_epochs`` reached); ``build()`` would load it again."""
        if self.model is None:
            return
        if self._hook is not None:
            self._hook.remove()
        self.model, self._hook, self._cls_attn = None, None, None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("DINOv3 teacher unloaded")

    # ---- CLS attention hook ----
    def _install_hook(self) -> None:
        try:
            from transformers.models.dinov3_vit.modeling_dinov3_vit import apply_rotary_pos_emb

            attn = self.model.model.layer[-1].attention
            _ = attn.q_proj, attn.k_proj, attn.num_heads, attn.head_dim, attn.scaling
        except (ImportError, AttributeError):
            self._hook = None   # not a DINOv3 ViT layout: token energy
            return

        def hook(module, args, kwargs):
            h = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
            b, t, _ = h.shape
            q = module.q_proj(h[:, :1]).view(b, 1, module.num_heads, module.head_dim).transpose(1, 2)
            k = module.k_proj(h).view(b, t, module.num_heads, module.head_dim).transpose(1, 2)
            # RoPE touches patch tokens only: the CLS query is unrotated, so rotate k alone (q's copy is unused)
            _, k = apply_rotary_pos_emb(k, k, cos, sin)
            logits = (q.float() @ k.float().transpose(-1, -2)) * module.scaling       # [B, heads, 1, T]
            self._cls_attn = logits.softmax(-1)[:, :, 0]                             # [B, heads, T]

        self._hook = attn.register_forward_pre_hook(hook, with_kwargs=True)

    # ---- forward ----
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in [0, 1] (the student's input) -> resized, ImageNet-normalised teacher input."""
        x = images.float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> DinoOutput:
        self.build()
        x = self.preprocess(images.to(self.device))
        amp = (torch.autocast("cuda", dtype=torch.bfloat16 if self.quant == "bf16" else torch.float16)
               if self.device.type == "cuda" and self.quant != "fp32" else contextlib.nullcontext())
        self._cls_attn = None
        with amp:
            out = self.model(pixel_values=x)
        tokens = out.last_hidden_state.float()
        g = self.resolution // self.patch
        b = tokens.shape[0]
        patches = tokens[:, self.num_prefix:].reshape(b, g, g, -1)
        if self._cls_attn is not None:
            sal = self._cls_attn[:, :, self.num_prefix:].mean(1).reshape(b, g, g)
            source = "cls_attention"
        else:
            sal = patches.pow(2).sum(-1)
            sal = sal / sal.flatten(1).sum(1).clamp_min(1e-12).view(b, 1, 1)
            source = "token_energy"
        return DinoOutput(patches=patches, cls=tokens[:, 0], saliency=sal.clamp_min(0), saliency_source=source)
