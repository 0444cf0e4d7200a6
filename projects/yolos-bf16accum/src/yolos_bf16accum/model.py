"""Building the YOLOS detector: pretrained from the hub / a local dir, or a tiny random one."""

from __future__ import annotations

import os

from yolos_bf16accum.config import TrainConfig


def tiny_yolos_config(num_labels: int, image_size: tuple[int, int] = (64, 96), id2label: dict | None = None):
    """A ``YolosConfig`` small enough for CPU tests: hidden 64, 4 blocks, 2 heads, 10 detection tokens.

    Four blocks (not two) so a ``blocks_per_stage=1`` ramp has stages to walk through. Dropout is 0:
    the bf16-accum attention has no probability dropout (yolos-tiny uses none either).
    """
    from transformers import YolosConfig

    id2label = id2label or {i: f"class_{i}" for i in range(num_labels)}
    return YolosConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                       image_size=list(image_size), patch_size=16, num_detection_tokens=10,
                       use_mid_position_embeddings=False, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, num_labels=num_labels,
                       id2label={int(k): v for k, v in id2label.items()},
                       label2id={v: int(k) for k, v in id2label.items()})


def build_model(cfg: TrainConfig, num_labels: int, id2label: dict[int, str]):
    """The ``YolosForObjectDetection`` for this run.

    Args:
        cfg: run config (``model``, ``model_config``, ``image_size``).
        num_labels: classes of the dataset's label space (no-object excluded).
        id2label: label index -> name.

    Raises:
        RuntimeError: the model cannot be loaded (not a local dir, not in the HF cache while offline,
            no network); the message says what to pass instead.
    """
    from transformers import YolosForObjectDetection

    if cfg.model_config == "tiny-random":
        return YolosForObjectDetection(tiny_yolos_config(num_labels, cfg.image_size, id2label))
    kwargs = {}
    # No network: the hub client retries for ~50 s before giving up. Probe once (2 s) and read only the
    # local cache when the hub is unreachable, so the error comes at once and says why.
    env_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    offline = env_offline or (not os.path.isdir(cfg.model) and not hub_reachable())
    try:
        from transformers import AutoConfig

        hub_cfg = AutoConfig.from_pretrained(cfg.model, local_files_only=offline)
        if hub_cfg.num_labels != num_labels:
            # New head for a new label space (CPPE-5, synthetic); the pretrained COCO head is kept
            # when the label space is COCO's own 91 ids.
            kwargs = dict(num_labels=num_labels, id2label=id2label,
                          label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True)
        return YolosForObjectDetection.from_pretrained(cfg.model, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as e:
        why = ("the hub is unreachable (no network?)" if offline and not env_offline
               else "HF_HUB_OFFLINE is set" if offline else "it could not be fetched")
        raise ModelLoadError(
            f"cannot load YOLOS model {cfg.model!r}: it is not a local directory, {why}, and it is not in the "
            f"HF cache. Pass --model /path/to/yolos-tiny (a from_pretrained directory) or --model_config "
            f"tiny-random for a random-init model. Cause: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the CLI prints the message as an ``error:`` line (no traceback)."""


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """One TCP connect to the hub (HTTPS port); False on any failure within ``timeout`` seconds."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
