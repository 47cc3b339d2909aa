"""Custom Keras layers of the reviewscore models, registered so that a worker can load a
.keras file after importing this module. Imports TensorFlow."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reviewscore.model.text import standardize


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


class NgramWeights(keras.layers.Layer):
    """What both n-gram logit layers store: `vocabulary_size` n-gram keys (int64), a weight for
    each and a bias. How a text's n-grams become keys, and how keys are looked up, is theirs."""

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

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "ngram_max": self.ngram_max,
        }


@keras.saving.register_keras_serializable(package="reviewscore")
class NgramVocabularyLogit(NgramWeights):
    """Raw strings [n] -> logit [n, 1] = bias + sum of the weights of the distinct vocabulary
    n-grams present in the text. The vocabulary is stored as sorted n-gram fingerprints and
    looked up with a binary search, so the file holds 12 bytes per n-gram and no strings."""

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


# Token hashes are Fingerprint64 values reduced to 63 bits (to_hash_bucket_fast takes at most
# 2**63 - 1 buckets). N-gram keys fold them modulo 2**64 in uint64, whose overflow wraps by
# definition; the multiplier is odd, so each fold step is a bijection of the running key.
TOKEN_HASH_BUCKETS = 2**63 - 1
NGRAM_KEY_MULTIPLIER = 0x9E3779B97F4A7C15


def hash_tokens(tokens: tf.RaggedTensor) -> tf.RaggedTensor:
    """Ragged token strings [n, None] -> ragged uint64 [n, None], one hash per token."""
    hashes = tf.strings.to_hash_bucket_fast(tokens.flat_values, TOKEN_HASH_BUCKETS)
    return tokens.with_flat_values(tf.bitcast(hashes, tf.uint64))


def token_hashes(texts: tf.Tensor) -> tf.RaggedTensor:
    """Raw strings [n] -> ragged uint64 [n, None]: one hash per token of the standardized text."""
    return hash_tokens(tf.strings.split(standardize(texts)))


def ngram_keys(hashes: tf.Tensor, ngram_max: int) -> tf.Tensor:
    """Flat token hashes [N] -> int64 keys [N, ngram_max]: column w - 1 holds the key of the
    w-gram that starts at each token, key = previous key * MULTIPLIER + next token's hash.
    N-grams that run past the end of their text get keys too; callers mask them."""
    multiplier = tf.constant(NGRAM_KEY_MULTIPLIER, tf.uint64)
    count = tf.shape(hashes)[0]
    padded = tf.concat([hashes, tf.zeros([ngram_max - 1], tf.uint64)], axis=0)
    key = hashes
    columns = [key]
    for width in range(2, ngram_max + 1):
        key = key * multiplier + padded[width - 1 : width - 1 + count]
        columns.append(key)
    return tf.bitcast(tf.stack(columns, axis=1), tf.int64)


def overrun_positions(row_limits: tf.Tensor, ngram_max: int) -> tf.Tensor:
    """int64 [k, 2] (token, column) positions in `ngram_keys` of the n-grams that run past the
    end of their text: those starting at its last ngram_max - 1 tokens. A few per text, so
    overwriting them is cheaper than masking every n-gram."""
    overruns = [(back, column) for back in range(1, ngram_max) for column in range(back, ngram_max)]
    if not overruns:
        return tf.zeros([0, 2], tf.int64)
    positions = tf.concat(
        [
            tf.stack(
                [row_limits - back, tf.fill(tf.shape(row_limits), tf.constant(column, tf.int64))], 1
            )
            for back, column in overruns
        ],
        axis=0,
    )
    # A text shorter than ngram_max - 1 tokens can point before the first token: drop those.
    return tf.boolean_mask(positions, positions[:, 0] >= 0)


@keras.saving.register_keras_serializable(package="reviewscore")
class NgramTableLogit(NgramWeights):
    """Raw strings [n] -> logit [n, 1] = bias + sum of the weights of the distinct vocabulary
    n-grams present in the text, like NgramVocabularyLogit but without n-gram strings: each
    token is hashed once, n-gram keys are folded from token hashes (`ngram_keys`) and looked
    up in one step in a static hash table that is built from the stored keys after loading.

    Entries are stored most frequent first. Presence of the first `dense_ngrams` entries is
    counted per text in a dense [n, dense_ngrams] matrix (a binary bincount), which is cheaper
    than deduplicating them; only the rarer n-grams go through tf.unique."""

    def __init__(
        self, vocabulary_size: int, ngram_max: int = 3, dense_ngrams: int = 4096, **kwargs: Any
    ) -> None:
        super().__init__(vocabulary_size, ngram_max, **kwargs)
        self.dense_ngrams = min(dense_ngrams, vocabulary_size)
        self._table: tf.lookup.StaticHashTable | None = None

    def set_vocabulary(self, keys: np.ndarray, weights: np.ndarray, bias: float) -> None:
        """Store entries (distinct keys, most frequent first) and drop any stale table."""
        if len(np.unique(keys)) != self.vocabulary_size:
            raise ValueError(f"expected {self.vocabulary_size} distinct keys, got {len(keys)}")
        self.keys.assign(keys.astype(np.int64))
        self.ngram_weights.assign(weights.astype(np.float32))
        self.bias.assign(bias)
        self._table = None

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        self._table = None  # built again from the loaded keys on the next call

    def _lookup_table(self) -> tf.lookup.StaticHashTable:
        if self._table is None:
            # init_scope: created eagerly even when first called inside a tf.function trace;
            # lookup tables have CPU kernels only.
            with tf.init_scope(), tf.device("CPU:0"):
                self._table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.convert_to_tensor(self.keys),
                        tf.range(self.vocabulary_size, dtype=tf.int32),
                    ),
                    default_value=self.vocabulary_size,
                )
        return self._table

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.reshape(texts, [-1])
        count = tf.shape(texts)[0]
        hashes = token_hashes(texts)
        ids = self._lookup_table().lookup(ngram_keys(hashes.flat_values, self.ngram_max))
        # N-grams that run past the end of their text become misses (id vocabulary_size).
        overrun = overrun_positions(hashes.row_limits(), self.ngram_max)
        ids = tf.tensor_scatter_nd_update(
            ids, overrun, tf.fill([tf.shape(overrun)[0]], self.vocabulary_size)
        )
        logits = self._dense_logits(ids, hashes.row_splits) + self._sparse_logits(
            ids, hashes.value_rowids(), count
        )
        return tf.expand_dims(logits + self.bias, -1)

    def _dense_logits(self, ids: tf.Tensor, row_splits: tf.Tensor) -> tf.Tensor:
        """Sum of the weights of the frequent entries present: bincount ignores ids beyond
        dense_ngrams, misses included."""
        per_text = tf.RaggedTensor.from_row_splits(
            tf.reshape(ids, [-1]), row_splits * self.ngram_max, validate=False
        )
        present = tf.math.bincount(
            per_text,
            minlength=self.dense_ngrams,
            maxlength=self.dense_ngrams,
            binary_output=True,
            axis=-1,
        )
        weights = tf.convert_to_tensor(self.ngram_weights)[: self.dense_ngrams]
        return tf.linalg.matvec(tf.cast(present, weights.dtype), weights)

    def _sparse_logits(self, ids: tf.Tensor, rows: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        """Sum of the weights of the other entries present, each counted once per text."""
        sparse = (ids >= self.dense_ngrams) & (ids < self.vocabulary_size)
        rows = tf.broadcast_to(tf.expand_dims(rows, 1), tf.shape(ids))
        # One int64 per (text, entry) pair makes per-text deduplication a single tf.unique.
        pairs = tf.boolean_mask(rows * self.vocabulary_size + tf.cast(ids, tf.int64), sparse)
        distinct, _ = tf.unique(pairs)
        weights = tf.gather(self.ngram_weights, distinct % self.vocabulary_size)
        return tf.math.unsorted_segment_sum(
            weights, distinct // self.vocabulary_size, num_segments=count
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dense_ngrams": self.dense_ngrams,
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
