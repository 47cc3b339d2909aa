"""training.blend: the mean of two n-gram linear models is one table model scoring the mean
of their logits."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from training import architectures as arch
from training.blend import average
from training.reexport import LinearNgramModel, table_weights
from training.train import predict

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "nbsvm" / "model.keras"
TEXTS = ["I loved it.", "Awful, boring and far too long.", "A film.", "Not bad at all!"]


def logits(model: keras.Model) -> np.ndarray:
    p = np.clip(predict(model, TEXTS).astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def test_the_mean_of_two_tables_scores_the_mean_of_their_logits_over_the_union():
    shipped = table_weights(keras.saving.load_model(SHIPPED, compile=False))
    # Two models with different vocabularies: every other entry of the shipped table, and
    # the first half of it with its weights tripled (entries in one model only count 0 there).
    first = LinearNgramModel(shipped.entries[::2], shipped.weights[::2], 0.5, shipped.ngram_max)
    half = len(shipped.entries) // 2
    second = LinearNgramModel(
        shipped.entries[:half], 3 * shipped.weights[:half], -1.0, shipped.ngram_max
    )
    models = [
        arch.nbsvm_table_end_to_end(m.entries, m.weights, m.bias, m.ngram_max)
        for m in (first, second)
    ]
    blended = average(first, second)
    expected = 0.5 * (logits(models[0]) + logits(models[1]))
    np.testing.assert_allclose(logits(blended), expected, atol=1e-3)
    union = len(np.union1d(first.entries, second.entries))
    assert len(table_weights(blended).entries) == union
