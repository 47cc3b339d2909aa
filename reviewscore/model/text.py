"""Text standardization shared by every reviewscore model, and the token count used for
the `truncated` flag. Imports TensorFlow: only workers, training and benchmarks use it."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

# Unicode line breaks that Python's str.splitlines() splits on. Keras re-reads a saved
# TextVectorization vocabulary with splitlines(), so a token holding one of these (IMDB has
# U+0085) would come back as two terms and the .keras file would fail to load with
# "repeated term ''". Mapping them to spaces keeps them out of every token.
LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

_PUNCTUATION_OR_BREAK = "[" + re.escape(string.punctuation + LINE_BREAKS) + "]"


@keras.saving.register_keras_serializable(package="reviewscore")
def standardize(text: tf.Tensor) -> tf.Tensor:
    """Lowercase, `<br />` -> space, punctuation and Unicode line breaks -> space."""
    lowered = tf.strings.lower(text)
    no_html = tf.strings.regex_replace(lowered, "<br />", " ")
    return tf.strings.regex_replace(no_html, _PUNCTUATION_OR_BREAK, " ")


# Traced once: run eagerly these ops take about 1.1 ms per call (0.3 ms traced), more than
# the CNN itself takes to score one review.
@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def _count_tokens(texts: tf.Tensor) -> tf.Tensor:
    return tf.strings.split(standardize(texts)).row_lengths()


def token_counts(texts: Sequence[str] | tf.Tensor) -> np.ndarray:
    """Number of whitespace-separated tokens per text after `standardize` (int64 [n])."""
    tensor = texts if isinstance(texts, tf.Tensor) else tf.constant(list(texts), dtype=tf.string)
    if tensor.shape.rank == 0 or tensor.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    return _count_tokens(tensor).numpy().astype(np.int64)
