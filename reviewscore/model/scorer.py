"""Loads one installed model and scores batches of texts: P(positive) and the truncated
flag. Imports TensorFlow: only workers, training and benchmarks import this module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

import reviewscore.model.layers  # noqa: F401  (registers the custom layers before loading)
from reviewscore.core.model_registry import ModelInfo
from reviewscore.model.text import token_counts


@dataclass(frozen=True)
class Scores:
    p_positive: np.ndarray  # float32 [n], P(positive)
    truncated: np.ndarray  # bool [n]: the text has more tokens than the model reads


def configure_threads(intra_op: int, inter_op: int) -> None:
    """Limit TensorFlow's thread pools; call before any TensorFlow op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def default_device() -> str:
    """The first GPU TensorFlow sees, else the CPU."""
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def compile_model_call(model: keras.Model) -> tf.types.experimental.PolymorphicFunction:
    """A traced call taking any 1-D string tensor (one trace for every batch size) and
    returning P(positive) as float32 [n]."""

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string)])
    def call(texts: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.cast(model(texts, training=False), tf.float32), [-1])

    return call


class Scorer:
    def __init__(self, info: ModelInfo, model: keras.Model, device: str, batch_size: int) -> None:
        self.info = info
        self.device = device
        self.batch_size = batch_size
        self._model = model
        with tf.device(device):
            self._call = compile_model_call(model)
            self._call(tf.constant(["warm up"]))  # trace and run once at load

    def score(self, texts: Sequence[str]) -> Scores:
        texts = list(texts)
        if self.info.max_tokens is None or not texts:
            order = np.arange(len(texts))
            truncated = np.zeros((len(texts),), dtype=bool)
        else:
            counts = token_counts(texts)
            truncated = counts > self.info.max_tokens
            # Batches of texts of similar length: a model that pads each batch only to its
            # longest text (the CNN, see TrimPadding) then does far less work.
            order = np.argsort(counts, kind="stable")
        p_positive = np.zeros((len(texts),), dtype=np.float32)
        with tf.device(self.device):
            for start in range(0, len(texts), self.batch_size):
                batch = order[start : start + self.batch_size]
                strings = tf.constant([texts[i] for i in batch], dtype=tf.string)
                p_positive[batch] = self._call(strings).numpy()
        return Scores(p_positive=p_positive, truncated=truncated)


def load_scorer(info: ModelInfo, batch_size: int = 256) -> Scorer:
    device = default_device()
    with tf.device(device):
        model = keras.saving.load_model(info.path, compile=False)
    return Scorer(info, model, device, batch_size)
