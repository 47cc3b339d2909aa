"""The model registry every host shares, on real SQLite and PostgreSQL: publishing, the current
version, pinned versions and the artifact cache a worker host fills from it."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest

from reviewscore.core import model_registry as registry
from reviewscore.core.db import session_scope
from tests import factories as f
from worker import models_cache

pytestmark = pytest.mark.usefixtures("database")


def model_folder(root: Path, name: str, content: bytes, accuracy: float = 0.9) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(content)
    meta = {"name": name, "architecture": "test", "test_accuracy": accuracy}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return root


def test_publishing_the_same_file_twice_publishes_nothing_new(tmp_path: Path) -> None:
    root = model_folder(tmp_path, "m", b"weights v1")
    [(first, new)] = registry.publish_folder(root)
    [(again, new_again)] = registry.publish_folder(root)
    assert (new, new_again) == (True, False) and first.version == again.version


def test_a_new_save_becomes_current_and_the_old_version_stays_resolvable(tmp_path: Path) -> None:
    [(old, _)] = registry.publish_folder(model_folder(tmp_path / "a", "m", b"save 1"))
    [(new, _)] = registry.publish_folder(model_folder(tmp_path / "b", "m", b"save 2"))
    assert old.version != new.version
    with session_scope(readonly=True) as session:
        assert registry.get_model(session, "m").version == new.version
        assert registry.get_version(session, "m", old.version).sha256 == old.sha256


def test_a_worker_host_gets_the_pinned_artifact_from_the_registry(tmp_path: Path) -> None:
    [(info, _)] = registry.publish_folder(model_folder(tmp_path / "src", "m", b"the bytes"))
    cache = tmp_path / "other-host-cache"
    path = registry.artifact_path(info, cache)
    assert path.read_bytes() == b"the bytes" and path.is_relative_to(cache / info.sha256)
    assert registry.artifact_path(info, cache) == path  # cached: no second fetch needed


def test_an_unknown_model_is_named_with_what_is_published() -> None:
    with (
        pytest.raises(registry.UnknownModelError, match="'nope' is not published.*stub"),
        session_scope(readonly=True) as session,
    ):
        registry.get_model(session, "nope")


def test_the_worker_loads_the_version_a_job_is_pinned_to_not_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [(pinned, _)] = registry.publish_folder(model_folder(tmp_path / "a", "m", b"save 1"))
    registry.publish_folder(model_folder(tmp_path / "b", "m", b"save 2"))
    loaded: list[bytes] = []

    def fake_load(info: registry.ModelInfo, batch_size: int) -> f.StubScorer:
        assert info.path is not None
        loaded.append(info.path.read_bytes())
        return f.StubScorer(version=info.version)

    import reviewscore.model.scorer as scorer_module

    monkeypatch.setattr(scorer_module, "load_scorer", fake_load)
    monkeypatch.setattr(models_cache, "_scorers", OrderedDict())
    monkeypatch.setattr(models_cache.get_settings(), "var_dir", tmp_path / "var")
    scorer = models_cache.get_scorer("m", pinned.version)
    assert scorer.info.version == pinned.version and loaded == [b"save 1"]


def test_a_worker_process_keeps_only_the_last_few_versions_it_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = [
        registry.publish_folder(model_folder(tmp_path / str(i), "m", f"save {i}".encode()))[0][0]
        for i in range(4)
    ]
    loaded: list[str] = []

    def fake_load(info: registry.ModelInfo, batch_size: int) -> f.StubScorer:
        loaded.append(info.version)
        return f.StubScorer(version=info.version)

    import reviewscore.model.scorer as scorer_module

    monkeypatch.setattr(scorer_module, "load_scorer", fake_load)
    monkeypatch.setattr(models_cache, "_scorers", OrderedDict())
    monkeypatch.setattr(models_cache.get_settings(), "var_dir", tmp_path / "var")
    monkeypatch.setattr(models_cache.get_settings(), "worker_model_cache", 2)
    # Jobs pinned to four versions in turn, then the newest two again: those stay loaded.
    for info in [*saves, saves[3], saves[2]]:
        assert models_cache.get_scorer("m", info.version).info.version == info.version
    assert loaded == [s.version for s in saves]
    assert sorted(models_cache._scorers) == sorted(s.version for s in saves[2:])
    # The oldest was let go: a job pinned to it loads it again (and lets the least used go).
    models_cache.get_scorer("m", saves[0].version)
    assert loaded[-1] == saves[0].version and len(models_cache._scorers) == 2
    assert saves[2].version in models_cache._scorers  # used more recently than saves[3]
