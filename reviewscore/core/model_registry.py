"""The installed models: what lies in the models folder, read from metadata only (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reviewscore.core.errors import ReviewscoreError


class UnknownModelError(ReviewscoreError):
    """A job or request named a model that is not installed."""

    status_code = 422


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    max_tokens: int | None = None
    test_accuracy: float | None = None
    path: Path
    metadata: dict[str, Any]


def _read(folder: Path) -> ModelInfo | None:
    meta_file = folder / "metadata.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    return ModelInfo(
        name=meta.get("name", folder.name),
        version=meta["version"],
        architecture=meta.get("architecture", "unknown"),
        max_tokens=meta.get("max_tokens"),
        test_accuracy=meta.get("test_accuracy"),
        path=folder / meta.get("model_file", "model.keras"),
        metadata=meta,
    )


def list_models(models_dir: Path) -> list[ModelInfo]:
    if not models_dir.is_dir():
        return []
    found = (_read(folder) for folder in sorted(models_dir.iterdir()) if folder.is_dir())
    return [info for info in found if info is not None]


def default_model_name(models: list[ModelInfo], configured: str = "") -> str | None:
    if configured:
        return configured
    if not models:
        return None
    return max(models, key=lambda m: (m.test_accuracy or 0.0, m.name)).name


def get_model(models_dir: Path, name: str | None, configured_default: str = "") -> ModelInfo:
    models = list_models(models_dir)
    wanted = name or default_model_name(models, configured_default)
    for info in models:
        if info.name == wanted:
            return info
    installed = ", ".join(m.name for m in models) or "none"
    raise UnknownModelError(
        f"model {wanted!r} is not installed in {models_dir} (installed: {installed})"
    )
