"""The model registry, shared by every host through the database: each published model version
with its artifact and sha256. Jobs are pinned to a version; a worker on any host fetches the
pinned artifact from here (cached locally by hash), so no host scores with another save.

No TensorFlow here: the API lists and resolves models, workers load what `artifact_path` gives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reviewscore.core.clock import db_now
from reviewscore.core.db import make_engine, session_scope
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.schema import ModelVersion

log = logging.getLogger(__name__)


class UnknownModelError(ReviewscoreError):
    """A job or request named a model that is not published."""

    status_code = 422


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    max_tokens: int | None = None
    test_accuracy: float | None = None
    sha256: str = ""
    # The order of publication within a name (1, 2, ...): the newest is the current version.
    generation: int = 0
    file_name: str = "model.keras"
    metadata: dict[str, Any] = {}
    # When a version of this name was last made the default (--make-default), if ever.
    made_default_at: datetime | None = None
    # Where the artifact lies on this host, when known (a models folder, or the local cache).
    path: Path | None = None


def _info(row: ModelVersion, path: Path | None = None) -> ModelInfo:
    meta = row.meta or {}
    return ModelInfo(
        name=row.name,
        version=row.version,
        architecture=row.architecture,
        max_tokens=meta.get("max_tokens"),
        test_accuracy=meta.get("test_accuracy"),
        sha256=row.sha256,
        generation=row.generation,
        file_name=row.file_name,
        metadata=meta,
        path=path,
        made_default_at=row.made_default_at,
    )


# --- publishing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    """A model folder as training writes it: metadata.json and the model file."""

    folder: Path
    meta: dict[str, Any]
    file: Path

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.folder.name))


def read_folder(models_dir: Path) -> list[LocalModel]:
    """The model folders under `models_dir` (each with a metadata.json)."""
    if not models_dir.is_dir():
        return []
    found = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        meta_file = folder / "metadata.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            found.append(LocalModel(folder, meta, folder / meta.get("model_file", "model.keras")))
    return found


def local_models(models_dir: Path) -> list[ModelInfo]:
    """The models in a folder, without the registry: for training, reports and benchmarks
    that load a file directly."""
    return [
        ModelInfo(
            name=m.name,
            version=str(m.meta.get("version", m.name)),
            architecture=str(m.meta.get("architecture", "unknown")),
            max_tokens=m.meta.get("max_tokens"),
            test_accuracy=m.meta.get("test_accuracy"),
            file_name=m.file.name,
            metadata=m.meta,
            path=m.file,
        )
        for m in read_folder(models_dir)
    ]


def local_model(models_dir: Path, name: str | None = None) -> ModelInfo:
    """One model of a folder by name (default: the best test accuracy)."""
    models = local_models(models_dir)
    wanted = name or default_model_name(models)
    for info in models:
        if info.name == wanted:
            return info
    raise UnknownModelError(f"model {wanted!r} is not in {models_dir}")


def version_of(name: str, sha256: str) -> str:
    """A version names the exact file: the same formula training uses (name and sha256)."""
    return f"{name}-{sha256[:12]}"


def publish(session: Session, model: LocalModel) -> tuple[ModelInfo, bool]:
    """Stores a model file as a version (idempotent: the same bytes publish nothing new).
    Returns the version and whether it is new. The newest published version of a name is the
    one new jobs get; jobs already pinned to an older one keep it."""
    data = model.file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    version = version_of(model.name, digest)
    if model.meta.get("version") not in (None, version):
        log.warning(
            "%s: metadata.json says version %s, the file is %s (a re-save?); publishing %s",
            model.folder,
            model.meta.get("version"),
            version,
            version,
        )
    existing = session.get(ModelVersion, (model.name, version))
    if existing is not None:
        return _info(existing, model.file), False
    latest = session.execute(
        select(func.max(ModelVersion.generation)).where(ModelVersion.name == model.name)
    ).scalar_one()
    row = ModelVersion(
        name=model.name,
        generation=(latest or 0) + 1,
        version=version,
        sha256=digest,
        architecture=str(model.meta.get("architecture", "unknown"))[:255],
        file_name=model.file.name,
        size_bytes=len(data),
        meta={**model.meta, "version": version},
        artifact=data,
    )
    session.add(row)
    session.flush()
    return _info(row, model.file), True


def publish_folder(
    models_dir: Path, database_url: str | None = None
) -> list[tuple[ModelInfo, bool]]:
    """Publishes every model folder under `models_dir` (what `make run` does at start) to the
    configured database, or to the one at `database_url` (as `migrate.upgrade` takes it).
    Returns (model, newly published) for each."""
    engine = make_engine(database_url) if database_url else None
    try:
        published = []
        for model in read_folder(models_dir):
            with session_scope(engine) as session:
                published.append(publish(session, model))
        return published
    finally:
        if engine is not None:
            engine.dispose()


# --- resolving ----------------------------------------------------------------------------------


def list_models(session: Session) -> list[ModelInfo]:
    """The current (newest published) version of each model name."""
    rows = session.execute(
        select(ModelVersion).order_by(ModelVersion.name, ModelVersion.generation.desc())
    ).scalars()
    current: dict[str, ModelInfo] = {}
    for row in rows:
        info = current.setdefault(row.name, _info(row))
        # A name made default stays so when a later version of it is published.
        if row.made_default_at and (
            info.made_default_at is None or row.made_default_at > info.made_default_at
        ):
            info.made_default_at = row.made_default_at
    return list(current.values())


def default_model_name(models: list[ModelInfo], configured: str = "") -> str | None:
    """REVIEWSCORE_DEFAULT_MODEL if set; else the name made default last (`--make-default`);
    else the best test accuracy (models trained from a user's labels report none, so they never
    become the default by being published)."""
    if configured:
        return configured
    if not models:
        return None
    chosen = [m for m in models if m.made_default_at is not None]
    if chosen:
        return max(chosen, key=lambda m: m.made_default_at or datetime.min).name
    return max(models, key=lambda m: (m.test_accuracy or 0.0, m.name)).name


def make_default(session: Session, name: str, version: str) -> None:
    """Makes `name` the default model from now on (its version `version` carries the flag)."""
    row = session.get(ModelVersion, (name, version))
    if row is None:
        raise UnknownModelError(f"model version {version!r} of {name!r} is not published")
    row.made_default_at = db_now()
    session.flush()


def get_model(session: Session, name: str | None, configured_default: str = "") -> ModelInfo:
    """The current version of the named model (or of the default one)."""
    models = list_models(session)
    wanted = name or default_model_name(models, configured_default)
    for info in models:
        if info.name == wanted:
            return info
    installed = ", ".join(m.name for m in models) or "none"
    raise UnknownModelError(
        f"model {wanted!r} is not published (published: {installed}); "
        "publish one with `reviewscore models publish`"
    )


def get_version(session: Session, name: str, version: str) -> ModelInfo:
    row = session.get(ModelVersion, (name, version))
    if row is None:
        raise UnknownModelError(f"model version {version!r} of {name!r} is not published")
    return _info(row)


# --- the artifact on a worker's disk -------------------------------------------------------------


def artifact_path(info: ModelInfo, cache_dir: Path) -> Path:
    """The model file of a version on this host: from the local cache (by sha256), fetched from
    the registry and checked on first use. Writes are atomic, so pool processes that fetch the
    same version at once never see a half-written file."""
    target = cache_dir / info.sha256 / info.file_name
    if target.is_file():
        return target
    with session_scope(readonly=True) as session:
        data = session.execute(
            select(ModelVersion.artifact).where(
                ModelVersion.name == info.name, ModelVersion.version == info.version
            )
        ).scalar_one_or_none()
    if data is None:
        raise UnknownModelError(f"model version {info.version!r} is not published")
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise UnknownModelError(f"model version {info.version!r}: the stored artifact is corrupt")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, target)
    return target
