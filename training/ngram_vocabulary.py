"""N-gram keys of the `nbsvm` vocabulary. Training selects n-grams by 40-bit fingerprints of
their strings (NGRAM_KEY_SPACE); the exported NgramTableLogit looks them up by 64-bit keys
folded from token hashes. The reviews the vocabulary was selected from tell which n-grams each
fingerprint stands for, so one pass over them maps fingerprints to keys, and back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from reviewscore.model.layers import NGRAM_KEY_SPACE, hash_tokens, ngram_keys
from reviewscore.model.text import standardize

CHUNK = 2048


@dataclass(frozen=True)
class NgramOccurrences:
    """Every n-gram occurrence of some texts, three aligned vectors."""

    fingerprints: np.ndarray  # int64: 40-bit fingerprint of the n-gram string (training's key)
    keys: np.ndarray  # int64: token-hash key (NgramTableLogit's key)
    identities: np.ndarray  # int64 [k, 2]: two independent 64-bit hashes of the string


@dataclass(frozen=True)
class TableVocabulary:
    """A fingerprint vocabulary re-keyed for NgramTableLogit, most frequent entries first."""

    keys: np.ndarray  # int64 [E], distinct
    source: np.ndarray  # int64 [E]: index of each entry's fingerprint in the fingerprint vocabulary


def ngram_occurrences(texts: list[str], ngram_max: int) -> NgramOccurrences:
    """The 1..ngram_max-grams of `texts`, each with its string fingerprint and its token-hash
    key (the n-gram strings are built here once, for the fingerprints)."""
    tokens = tf.strings.split(standardize(tf.constant(texts, dtype=tf.string)))
    keys = ngram_keys(hash_tokens(tokens).flat_values, ngram_max)
    starts, limits = tokens.row_starts(), tokens.row_limits()
    fingerprints, matched_keys, identities = [], [], []
    for width in range(1, ngram_max + 1):
        # tf.strings.ngrams lists a text's w-grams by start token, as the ragged range does.
        grams = tf.strings.ngrams(tokens, width, separator=" ").flat_values
        first_tokens = tf.ragged.range(starts, tf.maximum(starts, limits - width + 1)).flat_values
        fingerprints.append(tf.strings.to_hash_bucket_fast(grams, NGRAM_KEY_SPACE).numpy())
        matched_keys.append(tf.gather(keys[:, width - 1], first_tokens).numpy())
        identities.append(
            np.stack(
                [
                    tf.strings.to_hash_bucket_fast(grams, 2**63 - 1).numpy(),
                    tf.strings.to_hash_bucket_strong(grams, 2**63 - 1, [17, 1337]).numpy(),
                ],
                axis=1,
            )
        )
    return NgramOccurrences(
        np.concatenate(fingerprints), np.concatenate(matched_keys), np.concatenate(identities)
    )


def _chunks(texts: list[str], ngram_max: int) -> Iterator[NgramOccurrences]:
    for start in range(0, len(texts), CHUNK):
        yield ngram_occurrences(texts[start : start + CHUNK], ngram_max)


def _index_in(sorted_values: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each value in `sorted_values`, and whether it is there."""
    index = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return index, sorted_values[index] == values


def _distinct_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.unique(np.stack([left, right], axis=1), axis=0)


def fingerprint_key_pairs(
    texts: list[str],
    ngram_max: int,
    fingerprints: np.ndarray | None = None,
    keys: np.ndarray | None = None,
) -> np.ndarray:
    """int64 [k, 2]: the distinct (fingerprint, key) pairs of the n-grams in `texts`, only
    those whose fingerprint is in the sorted `fingerprints`, or whose key is in the sorted
    `keys`, when given."""
    pairs = []
    for chunk in _chunks(texts, ngram_max):
        keep = np.ones(len(chunk.keys), dtype=bool)
        if fingerprints is not None:
            keep &= _index_in(fingerprints, chunk.fingerprints)[1]
        if keys is not None:
            keep &= _index_in(keys, chunk.keys)[1]
        pairs.append(_distinct_pairs(chunk.fingerprints[keep], chunk.keys[keep]))
    return np.unique(np.concatenate(pairs), axis=0)


def table_vocabulary(
    texts: list[str], fingerprints: np.ndarray, document_frequency: np.ndarray, ngram_max: int
) -> TableVocabulary:
    """Re-key the sorted fingerprint vocabulary selected from `texts`. A fingerprint that two
    different n-grams share (a 40-bit collision, which training could not tell apart) gives
    one entry per n-gram, both with its weight. Entries are ordered by the fingerprint's
    document frequency (ties by key), which NgramTableLogit's dense part relies on for speed."""
    pairs = fingerprint_key_pairs(texts, ngram_max, fingerprints)
    keys, counts = np.unique(pairs[:, 1], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{int((counts > 1).sum())} keys stand for n-grams of two fingerprints")
    source, _ = _index_in(fingerprints, pairs[:, 0])
    missing = len(fingerprints) - len(np.unique(source))
    if missing:
        raise ValueError(f"{missing} fingerprints match no n-gram of the texts given")
    order = np.lexsort((pairs[:, 1], -document_frequency[source]))
    return TableVocabulary(keys=pairs[order, 1], source=source[order])


def fingerprint_vocabulary(
    texts: list[str], keys: np.ndarray, ngram_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reverse of table_vocabulary, for comparisons with the fingerprint model: the sorted
    fingerprints of the n-grams whose keys are in `keys`, and for each the index of one of
    those keys (n-grams sharing a fingerprint share its weight)."""
    order = np.argsort(keys)
    pairs = fingerprint_key_pairs(texts, ngram_max, keys=keys[order])
    if len(np.unique(pairs[:, 1])) != len(keys):
        raise ValueError("some keys match no n-gram of the texts given")
    found, first = np.unique(pairs[:, 0], return_index=True)
    return found, order[_index_in(keys[order], pairs[first, 1])[0]]


def key_collisions(texts: list[str], ngram_max: int) -> dict[str, int]:
    """How many distinct n-grams of `texts` share a key with another one: in the token-hash
    key space and in the 40-bit fingerprint space. An n-gram is told apart from another by two
    independent 64-bit string hashes (Fingerprint64 and SipHash)."""
    identities, keys, fingerprints = [], [], []
    for chunk in _chunks(texts, ngram_max):
        distinct, first = np.unique(chunk.identities, axis=0, return_index=True)
        identities.append(distinct)
        keys.append(chunk.keys[first])
        fingerprints.append(chunk.fingerprints[first])
    all_identities, first = np.unique(np.concatenate(identities), axis=0, return_index=True)
    all_keys = np.concatenate(keys)[first]
    all_fingerprints = np.concatenate(fingerprints)[first]
    ngrams = len(all_identities)
    return {
        "ngrams": ngrams,
        "key_collisions": ngrams - len(np.unique(all_keys)),
        "fingerprint_collisions": ngrams - len(np.unique(all_fingerprints)),
    }
