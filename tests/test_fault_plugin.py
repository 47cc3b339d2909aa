"""The test-only fault switches live in a worker plugin (reviewscore/testing/faults.py) that only
a worker started with its environment installs: Settings knows none of them, and the plugin
does what the fault, resilience and multi-host suites rely on."""

from __future__ import annotations

import pytest

from reviewscore.core.chunks import ChunkRow, ChunkWork
from reviewscore.core.settings import Settings
from reviewscore.testing import faults
from tests import factories as f
from worker import plugins, signals
from worker.scoring import score_texts_isolating_failures

SWITCHES = ("poison_marker", "crash_marker", "score_delay_s", "hold_marker")


def chunk_work(texts: list[str], attempt: int = 1) -> ChunkWork:
    rows = [ChunkRow(i + 1, text, None) for i, text in enumerate(texts)]
    return ChunkWork("job-1", 0, "stub", "stub-1", attempt, rows)


def test_settings_have_no_fault_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SWITCHES:
        monkeypatch.setenv(f"REVIEWSCORE_{name.upper()}", "1")
    settings = Settings()
    for name in SWITCHES:
        assert name not in Settings.model_fields
        assert not hasattr(settings, name)


def test_a_worker_without_the_plugin_variable_installs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugins, "installed", faults.Faults())  # as a leftover would be
    env = {"REVIEWSCORE_FAULT_POISON_MARKER": "P", "REVIEWSCORE_POISON_MARKER": "P"}
    assert plugins.install_from_env(env) is None
    assert plugins.installed is None


def test_worker_env_installs_the_fault_plugin_with_its_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugins, "installed", None)
    env = faults.worker_env(poison_marker="\u2620P", score_delay_s=0.5)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    installed = plugins.install_from_env()
    assert installed is plugins.installed
    assert installed == faults.Faults(poison_marker="\u2620P", score_delay_s=0.5)


def test_a_plugin_that_cannot_be_installed_stops_the_worker_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugins, "installed", None)
    monkeypatch.setenv(plugins.PLUGIN_ENV, "reviewscore.testing.no_such_module:install")
    with pytest.raises(SystemExit, match="cannot install its plugin"):
        signals._install_plugin()


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="SCORE_DELAY_S"):
        faults.worker_env(score_delay_s=-1)


def test_the_wrapped_scorer_raises_on_the_poison_marker_and_the_row_fails_alone() -> None:
    scorer = faults.Faults(poison_marker="\u2620").wrap_scorer(f.StubScorer(batch_size=4))
    assert scorer.batch_size == 4 and scorer.info.version == "stub-1"  # the real scorer's
    texts = [f"review {i}" for i in range(10)]
    texts[6] += " \u2620"
    p, _, errors = score_texts_isolating_failures(scorer, texts)
    assert list(errors) == [6] and errors[6].startswith("scoring failed: PoisonedTextError")
    assert sum(1 for value in p if value == value) == 9


def test_without_poison_or_crash_markers_the_scorer_is_left_as_it_is() -> None:
    scorer = f.StubScorer()
    assert faults.Faults(score_delay_s=1.0).wrap_scorer(scorer) is scorer


def test_the_hold_marker_stops_only_a_first_attempt_at_the_point_it_names() -> None:
    held = faults.Faults(hold_marker="\u23f8")
    assert held.hold_point(chunk_work(["a", "b \u23f8commit"])) == "commit"
    assert held.hold_point(chunk_work(["\u23f8score"])) == "score"
    assert held.hold_point(chunk_work(["\u23f8commit"], attempt=2)) is None
    assert held.hold_point(chunk_work(["plain"])) is None
