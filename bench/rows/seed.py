"""Row 2, the seed's path: the Gradio page called model.predict once per review."""

from __future__ import annotations

import gc
import time

from bench.config import Config
from bench.results import CallsRow
from reviewscore.core.model_registry import ModelInfo


def measure_seed(cfg: Config, texts: list[str], info: ModelInfo) -> CallsRow:
    import keras
    import numpy as np

    import reviewscore.model.layers  # noqa: F401  (custom layers)

    model = keras.saving.load_model(info.path, compile=False)
    sample = texts[: cfg.seed_reviews]
    model.predict(np.array(sample[:1], dtype=object), verbose=0)
    started = time.perf_counter()
    for text in sample:
        model.predict(np.array([text], dtype=object), verbose=0)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()
    return CallsRow(calls=len(sample), seconds=elapsed)
