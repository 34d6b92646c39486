"""Reading a Hugging Face model directory: config.json, generation_config.json, *.safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor


def read_config(model_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json as a dict."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json")
    return json.loads(path.read_text())


def generation_eos_token_ids(model_dir: str | os.PathLike) -> tuple[int, ...]:
    """End-of-sequence ids from generation_config.json, which chat models often extend (e.g. <|eot_id|>)."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return ()
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        return ()
    return (eos,) if isinstance(eos, int) else tuple(eos)


def load_weights(model_dir: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of the checkpoint, by name, on the CPU in their stored dtype."""
    directory = Path(model_dir)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        paths = [directory / f for f in files]
    else:
        paths = sorted(directory.glob("*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"{directory} has no *.safetensors weights (other formats are not supported)")
    weights: dict[str, Tensor] = {}
    for path in paths:
        weights.update(load_file(path))
    return weights
