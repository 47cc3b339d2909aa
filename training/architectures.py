"""The model architectures, each a short function: the seed CNN and the NB-weighted hashed
n-gram linear model (`nbsvm`). Training-time networks and their end-to-end exports."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from reviewscore.model.layers import (
    HashedNgramLogit,
    NgramTableLogit,
    NgramVocabularyLogit,
    TrimPadding,
)
from reviewscore.model.text import standardize

# The seed CNN (keras-io "text classification from scratch").
CNN_VOCABULARY = 20_000
CNN_SEQUENCE_LENGTH = 500
CNN_EMBEDDING_DIM = 128
CNN_KERNEL = 7
CNN_STRIDE = 3
# Padding the exported CNN keeps past the longest text of a batch (see TrimPadding): the
# receptive field of the second convolution (7 + 6 * 3 = 25 tokens) plus its stride in tokens
# (3 * 3 = 9) minus one.
CNN_PADDING_MARGIN = CNN_KERNEL + (CNN_KERNEL - 1) * CNN_STRIDE + CNN_STRIDE * CNN_STRIDE - 1

# NBSVM-style model: binarized hashed 1..3-grams, logit = sum (w + A) * r / B over present ones.
NBSVM_BUCKETS = 2**22
NBSVM_NGRAM_MAX = 3
NBSVM_W_OFFSET = 0.4  # A
NBSVM_R_SCALE = 10.0  # B


def cnn_vectorizer() -> keras.layers.TextVectorization:
    return keras.layers.TextVectorization(
        max_tokens=CNN_VOCABULARY,
        output_mode="int",
        output_sequence_length=CNN_SEQUENCE_LENGTH,
        standardize=standardize,
    )


def cnn_network() -> keras.Model:
    """Token ids [n, 500] -> P(positive) [n, 1]; 2,806,273 trainable parameters."""
    inputs = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    x = keras.layers.Embedding(CNN_VOCABULARY, CNN_EMBEDDING_DIM)(inputs)
    x = keras.layers.Dropout(0.5)(x)
    for _ in range(2):
        x = keras.layers.Conv1D(
            128, CNN_KERNEL, padding="valid", activation="relu", strides=CNN_STRIDE
        )(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_positive")(x)
    return keras.Model(inputs, outputs, name="cnn_network")


def cnn_end_to_end(vectorizer: keras.layers.TextVectorization, network: keras.Model) -> keras.Model:
    """Raw strings [n] -> P(positive) [n, 1], in one model that saves as one .keras file.
    Texts are vectorized to 500 tokens, then padding beyond what changes a score is cut."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    ids = TrimPadding(CNN_PADDING_MARGIN, name="trim_padding")(vectorizer(inputs))
    outputs = network(ids)
    return keras.Model(inputs, outputs, name="cnn")


@keras.saving.register_keras_serializable(package="reviewscore")
class NBWeightedBuckets(keras.layers.Layer):
    """Training-time NBSVM layer: padded bucket ids [n, L] (-1 = padding) -> logit [n, 1] =
    bias + sum over present buckets of (w + A) * r / B, with r initialised to the NB
    log-count ratios and both w and r trained (and weight-decayed)."""

    def __init__(self, nb_ratios: np.ndarray, w_init_scale: float = 0.1, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._nb_ratios = np.asarray(nb_ratios, dtype=np.float32)
        self.w_init_scale = w_init_scale

    def build(self, input_shape: object) -> None:
        size = self._nb_ratios.shape[0]
        self.w = self.add_weight(
            name="w",
            shape=(size,),
            initializer=keras.initializers.RandomUniform(-self.w_init_scale, self.w_init_scale),
        )
        self.r = self.add_weight(
            name="r", shape=(size,), initializer=keras.initializers.Constant(self._nb_ratios)
        )
        self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        present = ids >= 0
        safe = tf.where(present, ids, tf.zeros_like(ids))
        terms = (tf.gather(self.w, safe) + NBSVM_W_OFFSET) * tf.gather(self.r, safe)
        terms = tf.where(present, terms, tf.zeros_like(terms))
        return tf.reduce_sum(terms, axis=1, keepdims=True) / NBSVM_R_SCALE + self.bias

    def bucket_weights(self) -> np.ndarray:
        """The per-bucket weight v = (w + A) * r / B that the export stores."""
        w = keras.ops.convert_to_numpy(self.w)
        r = keras.ops.convert_to_numpy(self.r)
        return ((w + NBSVM_W_OFFSET) * r / NBSVM_R_SCALE).astype(np.float32)


def nb_log_count_ratios(
    rows: np.ndarray, buckets: np.ndarray, labels: np.ndarray, num_buckets: int, alpha: float = 1.0
) -> np.ndarray:
    """r = log((p/|p|1) / (q/|q|1)), p and q the smoothed binarized bucket counts over the
    positive and the negative reviews."""
    positive = labels[rows] == 1
    p = np.bincount(buckets[positive], minlength=num_buckets).astype(np.float64) + alpha
    q = np.bincount(buckets[~positive], minlength=num_buckets).astype(np.float64) + alpha
    return (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)


def nbsvm_network(nb_ratios: np.ndarray, w_init_scale: float = 0.1) -> keras.Model:
    inputs = keras.Input(shape=(None,), dtype="int64", name="bucket_ids")
    logits = NBWeightedBuckets(nb_ratios, w_init_scale, name="nb_weighted")(inputs)
    outputs = keras.layers.Activation("sigmoid", name="p_positive")(logits)
    return keras.Model(inputs, outputs, name="nbsvm_network")


def nbsvm_end_to_end(
    bucket_weights: np.ndarray, bias: float, num_buckets: int, ngram_max: int
) -> keras.Model:
    """Raw strings [n] -> P(positive) [n, 1] with the trained (w, r) folded into one vector."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    layer = HashedNgramLogit(num_buckets, ngram_max, name="hashed_ngram_logit")
    outputs = keras.layers.Activation("sigmoid", name="p_positive")(layer(inputs))
    model = keras.Model(inputs, outputs, name="nbsvm")
    layer.bucket_weights.assign(bucket_weights)
    layer.bias.assign(bias)
    return model


def nbsvm_vocabulary_end_to_end(
    vocabulary: np.ndarray, ngram_weights: np.ndarray, bias: float, ngram_max: int
) -> keras.Model:
    """Raw strings [n] -> P(positive) [n, 1] over a stored (fingerprinted) n-gram vocabulary.
    Training's own key space; the shipped export is nbsvm_table_end_to_end."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    layer = NgramVocabularyLogit(len(vocabulary), ngram_max, name="ngram_vocabulary_logit")
    outputs = keras.layers.Activation("sigmoid", name="p_positive")(layer(inputs))
    model = keras.Model(inputs, outputs, name="nbsvm")
    layer.keys.assign(vocabulary.astype(np.int64))
    layer.ngram_weights.assign(ngram_weights)
    layer.bias.assign(bias)
    return model


def nbsvm_table_end_to_end(
    keys: np.ndarray, ngram_weights: np.ndarray, bias: float, ngram_max: int
) -> keras.Model:
    """Raw strings [n] -> P(positive) [n, 1] over an n-gram vocabulary keyed by token hashes
    (entries most frequent first, see training.ngram_vocabulary.table_vocabulary)."""
    inputs = keras.Input(shape=(), dtype="string", name="text")
    layer = NgramTableLogit(len(keys), ngram_max, name="ngram_table_logit")
    outputs = keras.layers.Activation("sigmoid", name="p_positive")(layer(inputs))
    model = keras.Model(inputs, outputs, name="nbsvm")
    layer.set_vocabulary(keys, ngram_weights, bias)
    return model
