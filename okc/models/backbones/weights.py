"""``pretrained`` for timm backbones: false, true (the hub), or a local weights file.

Offline machines are common on clusters, so a local file must be a first-class option and a failed
download must say how to use one. timm loads a file with ``strict=False`` once the classifier is
dropped, which would turn a wrong file into a silent random init; okc checks the keys first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from okc.errors import ParamError

_HOW_TO = (
    "download the weights elsewhere (e.g. model.safetensors from the model's Hugging Face page) "
    "and pass the file: `pretrained: path/to/weights.safetensors` (or a .pth file)"
)


def weights_path(value: str) -> Path:
    """The local weights file ``pretrained: <value>`` names; it must exist."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise ParamError(
            "pretrained",
            f"no weights file at '{path}'; pretrained takes true, false or the path of a "
            ".safetensors or .pth file",
        )
    return path


def check_weights_fit(model_name: str, path: Path, model_kwargs: dict[str, Any]) -> None:
    """Raise unless ``path`` holds a tensor for every weight of timm's ``model_name``.

    The reference model is built on the meta device (no memory, no init), with the same arguments
    but no classifier, which timm drops from pretrained weights anyway.
    """
    import timm
    from timm.models import load_state_dict

    try:  # torch.load(weights_only=True), or safetensors by suffix
        state = load_state_dict(str(path))
    except Exception as err:  # unpickling, safetensors and zip errors share no base class
        raise ParamError(
            "pretrained",
            f"cannot read '{path}' as a .safetensors or torch weights file "
            f"({type(err).__name__}: {err})",
        ) from err
    with torch.device("meta"):
        reference = timm.create_model(model_name, num_classes=0, **model_kwargs)
    expected = list(reference.state_dict())
    missing = [k for k in expected if k not in state]
    if missing:
        found = ", ".join(list(state)[:3]) or "nothing"
        raise ParamError(
            "pretrained",
            f"'{path}' does not hold {model_name} weights: {len(missing)} of {len(expected)} "
            f"tensors are missing (e.g. {', '.join(missing[:3])}); the file has {found}, ...",
        )


def download_failed(model_name: str, err: Exception) -> ParamError:
    """The error for ``pretrained: true`` when timm cannot fetch the weights (offline, no hub)."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ParamError(
        "pretrained",
        f"cannot fetch pretrained weights for '{model_name}' ({reason}); "
        f"to work offline, {_HOW_TO}",
    )


def offline_unless_hub_reachable(timeout: float = 2.0) -> None:
    """Switch huggingface_hub to offline mode when its host cannot be reached.

    Offline, huggingface_hub retries for ~50 s before failing; in offline mode it serves weights
    already in its cache and fails at once otherwise, so ``pretrained: true`` errors in seconds.
    """
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE"):
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
