"""Custom Keras layers of the reviewscore models, registered so that a worker can load a
.keras file after importing this module. Imports TensorFlow."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from reviewscore.text import standardize


def hashed_ngram_ids(
    texts: tf.Tensor, num_buckets: int, ngram_max: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The distinct hashed 1..ngram_max-grams of each standardized text, as two aligned
    int64 vectors (row index, bucket); each (row, bucket) pair occurs once (binarized)."""
    tokens = tf.strings.split(standardize(texts))
    grams = tf.concat(
        [tf.strings.ngrams(tokens, width, separator=" ") for width in range(1, ngram_max + 1)],
        axis=1,
    )
    buckets = tf.strings.to_hash_bucket_fast(grams.flat_values, num_buckets)
    rows = grams.value_rowids()
    # One int64 key per (row, bucket) pair makes per-row deduplication a single tf.unique.
    keys, _ = tf.unique(rows * num_buckets + buckets)
    return keys // num_buckets, keys % num_buckets


@keras.saving.register_keras_serializable(package="reviewscore")
class HashedNgramLogit(keras.layers.Layer):
    """Raw strings [n] -> logit [n, 1] = bias + sum of one weight per distinct hashed n-gram
    bucket present in the text: a binarized linear model that needs no stored vocabulary."""

    def __init__(self, num_buckets: int, ngram_max: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_buckets = num_buckets
        self.ngram_max = ngram_max

    def build(self, input_shape: Any) -> None:
        self.bucket_weights = self.add_weight(
            name="bucket_weights", shape=(self.num_buckets,), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.reshape(texts, [-1])
        rows, buckets = hashed_ngram_ids(texts, self.num_buckets, self.ngram_max)
        logits = tf.math.unsorted_segment_sum(
            tf.gather(self.bucket_weights, buckets), rows, num_segments=tf.shape(texts)[0]
        )
        return tf.expand_dims(logits + self.bias, -1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_buckets": self.num_buckets,
            "ngram_max": self.ngram_max,
        }


# N-grams are keyed by a 40-bit fingerprint: among the ~10^7 distinct n-grams of IMDB a
# collision is unlikely, and row * 2**40 + key still fits int64 for up to 2**23 rows.
NGRAM_KEY_SPACE = 2**40


@keras.saving.register_keras_serializable(package="reviewscore")
class NgramVocabularyLogit(keras.layers.Layer):
    """Raw strings [n] -> logit [n, 1] = bias + sum of the weights of the distinct vocabulary
    n-grams present in the text. The vocabulary is stored as sorted n-gram fingerprints and
    looked up with a binary search, so the file holds 12 bytes per n-gram and no strings."""

    def __init__(self, vocabulary_size: int, ngram_max: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.ngram_max = ngram_max

    def build(self, input_shape: Any) -> None:
        self.keys = self.add_weight(
            name="keys",
            shape=(self.vocabulary_size,),
            dtype="int64",
            initializer="zeros",
            trainable=False,
        )
        self.ngram_weights = self.add_weight(
            name="ngram_weights", shape=(self.vocabulary_size,), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.reshape(texts, [-1])
        rows, keys = hashed_ngram_ids(texts, NGRAM_KEY_SPACE, self.ngram_max)
        vocabulary = tf.convert_to_tensor(self.keys)
        index = tf.minimum(
            tf.searchsorted(vocabulary, keys, out_type=tf.int64), self.vocabulary_size - 1
        )
        known = tf.equal(tf.gather(vocabulary, index), keys)
        weights = tf.where(known, tf.gather(self.ngram_weights, index), 0.0)
        logits = tf.math.unsorted_segment_sum(weights, rows, num_segments=tf.shape(texts)[0])
        return tf.expand_dims(logits + self.bias, -1)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "ngram_max": self.ngram_max,
        }


@keras.saving.register_keras_serializable(package="reviewscore")
class TrimPadding(keras.layers.Layer):
    """Token ids [n, L], padded with 0 after each text -> [n, min(L, longest text + margin)]:
    the CNN's convolutions then skip padding that no text of the batch reaches. With `margin`
    at least the last convolution's receptive field plus its stride in tokens minus one,
    every text keeps all windows it had at L, including one window of padding only (which the
    global max pooling also saw at L), so the scores do not change."""

    def __init__(self, margin: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.margin = margin

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        # Vectorized text holds no 0 (that is padding; unknown tokens are 1).
        lengths = tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1)
        longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))  # 0 for an empty batch
        return ids[:, : tf.minimum(tf.shape(ids)[1], longest + self.margin)]

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, None]:
        return (input_shape[0], None)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}
