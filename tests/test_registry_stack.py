"""The shared model registry on the real stack: a worker with no model files scores from the
registry, a newly published save reaches new jobs without a restart while a job keeps the
version it was pinned to, and a worker that cannot get its model refuses to start."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from reviewscore.core.model_registry import publish_folder
from tests.conftest import (
    RunningStack,
    sample_reviews,
    sqlite_stack,
    wait_for,
    write_csv,
)


@pytest.fixture(scope="module")
def bare_worker_stack(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[RunningStack]:
    """The stack's worker sees an empty models folder: everything it scores comes from the
    registry in the database (published by the stack's start, as `make run` does)."""
    empty = tmp_path_factory.mktemp("no-models")
    env = {"REVIEWSCORE_MODELS_DIR": str(empty)}
    with sqlite_stack(tmp_path_factory.mktemp("var-registry"), models_dir, env) as running:
        yield running


def resave(models_dir: Path, name: str, target: Path) -> Path:
    """Another save of the same model: the same weights, a different file (Keras stamps the
    save date), so a different version."""
    import shutil

    import keras

    import reviewscore.model.layers  # noqa: F401  (registers the custom layers)

    folder = target / name
    shutil.copytree(models_dir / name, folder)
    model = keras.saving.load_model(models_dir / name / "model.keras", compile=False)
    (folder / "model.keras").unlink()
    model.save(folder / "model.keras")
    return target


def versions_in_results(stack: RunningStack, job_id: str) -> set[str]:
    with stack.http() as http:
        body = http.get(f"/v1/jobs/{job_id}/results").text
    return {row["model_version"] for row in csv.DictReader(io.StringIO(body))}


def test_a_worker_without_model_files_scores_from_the_registry(
    bare_worker_stack: RunningStack, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "r.csv", sample_reviews(300, seed=5), ["id", "text"])
    job = bare_worker_stack.wait_job(bare_worker_stack.client.upload(path, id_column="id")["id"])
    assert (job["status"], job["scored"], job["failed"]) == ("succeeded", 300, 0)
    assert versions_in_results(bare_worker_stack, job["id"]) == {job["model_version"]}


def test_a_new_save_reaches_new_jobs_without_a_restart_and_old_jobs_keep_theirs(
    bare_worker_stack: RunningStack, models_dir: Path, tmp_path: Path
) -> None:
    stack = bare_worker_stack
    path = write_csv(tmp_path / "r.csv", sample_reviews(200, seed=6), ["id", "text"])
    before = stack.wait_job(stack.client.upload(path, id_column="id")["id"])
    default = before["model"]
    saves = resave(models_dir, default, tmp_path / "saves")
    [(new, is_new)] = publish_folder(saves, stack.settings.database_url)  # `models publish`
    assert is_new and new.version != before["model_version"]
    after = stack.wait_job(stack.client.upload(path, id_column="id")["id"])
    assert (after["model_version"], after["scored"], after["failed"]) == (new.version, 200, 0)
    assert versions_in_results(stack, after["id"]) == {new.version}
    assert versions_in_results(stack, before["id"]) == {before["model_version"]}
    listed = {m["name"]: m["version"] for m in stack.client.models()["models"]}
    assert listed[default] == new.version


def test_a_worker_that_cannot_get_its_model_refuses_to_start(tmp_path: Path) -> None:
    from reviewscore.core.migrate import upgrade
    from reviewscore.core.settings import Settings
    from reviewscore.shell.runner import Stack

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)  # a registry with nothing published
    stack = Stack(Settings(var_dir=tmp_path, database_url=url, models_dir=tmp_path / "none"))
    worker = stack.spawn("worker", stack.worker_args())
    try:
        code = wait_for(lambda: worker.process.poll(), 120, "the worker to exit")
    except AssertionError:
        stack.stop()
        raise
    stack.stop()
    assert code != 0
    log = worker.log_path.read_text(errors="replace")
    assert "cannot get the default model" in log and "not published" in log
