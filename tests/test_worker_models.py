"""What /readyz says about the workers' models (api/worker_models.py), from their reports."""

from __future__ import annotations

from typing import Any

from api.worker_models import WorkerModels, worker_models
from reviewscore.core.messages import WorkerReport


def reported(states: dict[str, dict[str, Any]]) -> WorkerModels:
    """The summary of these reports, as each worker process stores its JSON in Redis."""
    return worker_models({name: WorkerReport.model_validate(s) for name, s in states.items()})


def test_workers_serving_one_version_are_not_degraded() -> None:
    state = reported(
        {
            "w1:10": {"device": "CPU:0", "models": {"nbsvm": "nbsvm-aaa"}, "error": None},
            "w2:20": {"device": "CPU:0", "models": {"nbsvm": "nbsvm-aaa"}},
        }
    )
    assert not state.degraded and state.problems == []
    assert state.workers["w2:20"].models == {"nbsvm": "nbsvm-aaa"}


def test_different_versions_of_one_model_are_degraded_and_named() -> None:
    state = reported(
        {
            "w1:10": {"device": "CPU:0", "models": {"nbsvm": "nbsvm-aaa", "cnn": "cnn-1"}},
            "w2:20": {"device": "CPU:0", "models": {"nbsvm": "nbsvm-bbb", "cnn": "cnn-1"}},
        }
    )
    assert state.degraded
    assert state.problems == [
        "workers serve different versions of nbsvm: nbsvm-aaa on w1:10; nbsvm-bbb on w2:20"
    ]


def test_a_worker_whose_model_failed_to_load_is_degraded() -> None:
    state = reported(
        {
            "w1:10": {"device": "CPU:0", "models": {"nbsvm": "nbsvm-aaa"}},
            "w3:30": {"device": None, "models": {}, "error": "UnknownModelError: not published"},
        }
    )
    assert state.degraded
    assert state.problems == ["worker w3:30 cannot score: UnknownModelError: not published"]


def test_no_reports_is_not_degraded() -> None:
    assert not reported({}).degraded
