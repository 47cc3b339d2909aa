"""The shared text standardization and the .keras round trip of an adapted vocabulary."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from reviewscore.model.layers import ngram_keys, token_hashes
from reviewscore.model.text import LINE_BREAKS, standardize, token_counts
from training.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"


def test_standardize_lowercases_and_replaces_html_breaks_punctuation_and_line_breaks():
    text = "Great<br />Film!" + "".join(f"a{c}" for c in LINE_BREAKS)
    out = standardize(tf.constant([text])).numpy()[0].decode()
    assert out.split() == ["great", "film"] + ["a"] * len(LINE_BREAKS)
    assert not any(c in out for c in LINE_BREAKS)


def test_token_counts_count_whitespace_tokens_after_standardization():
    assert token_counts(["It's a <br />film.", "", "one\x85two"]).tolist() == [4, 0, 2]
    assert token_counts([]).shape == (0,)


def test_token_hashes_see_the_tokens_standardization_makes():
    # The n-gram layer hashes tokens of the standardized text: U+0085, <br /> and punctuation
    # split words exactly as they do for the CNN's vectorizer.
    def keys(text: str) -> np.ndarray:
        return ngram_keys(token_hashes(tf.constant([text])).flat_values, 3).numpy()

    raw = keys("Good\x85fun<br />REALLY.")
    np.testing.assert_array_equal(raw, keys("good fun really"))
    assert len(np.unique(raw[:, 0])) == 3  # three different tokens, three different keys
    assert raw[0, 2] != keys("really fun good")[0, 2]  # the same tokens in another order


_LOAD_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import sys, numpy as np, keras, tensorflow as tf
    {imports}
    model = keras.saving.load_model(sys.argv[1])
    probe = np.load(sys.argv[2], allow_pickle=True)
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(tf.constant(probe.tolist()))))
    """
)


def _save_adapted_vectorizer(path: Path, texts: list[str], standardize_fn) -> keras.Model:
    vectorizer = keras.layers.TextVectorization(
        max_tokens=20000, output_sequence_length=50, standardize=standardize_fn
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(512))
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, vectorizer(inputs))
    model.save(path)
    return model


def _load_in_fresh_process(tmp_path: Path, model_path: Path, probe: list[str], imports: str):
    np.save(tmp_path / "probe.npy", np.array(probe, dtype=object))
    script = _LOAD_IN_FRESH_PROCESS.format(imports=imports)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(model_path),
            str(tmp_path / "probe.npy"),
            str(tmp_path / "out.npy"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def real_texts_with_nel() -> list[str]:
    if not (IMDB / "train.csv.gz").is_file():
        pytest.skip(f"IMDB data not found at {IMDB}")
    texts = load_dataset(IMDB).train.texts
    with_nel = [t for t in texts if "\x85" in t]
    assert with_nel, "the real data holds U+0085: that is what this test is about"
    return with_nel + texts[::10]


# System tier (not `make test-fast`): a fresh Python process that imports TensorFlow, 6-8 s.
@pytest.mark.system
def test_vocabulary_adapted_on_real_data_round_trips_through_keras_file_in_fresh_process(
    tmp_path, real_texts_with_nel
):
    model_path = tmp_path / "vectorizer.keras"
    model = _save_adapted_vectorizer(model_path, real_texts_with_nel, standardize)
    probe = real_texts_with_nel[:20]
    run = _load_in_fresh_process(tmp_path, model_path, probe, "import reviewscore.model.text")
    assert run.returncode == 0, run.stderr[-2000:]
    expected = keras.ops.convert_to_numpy(model(tf.constant(probe)))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@keras.saving.register_keras_serializable(package="reviewscore_test")
def seed_standardize(text):
    """The seed's standardization, without the line-break mapping."""
    import re
    import string

    lowered = tf.strings.lower(text)
    no_html = tf.strings.regex_replace(lowered, "<br />", " ")
    return tf.strings.regex_replace(no_html, f"[{re.escape(string.punctuation)}]", "")


# System tier (not `make test-fast`): a fresh Python process that imports TensorFlow, 6-8 s.
@pytest.mark.system
def test_seed_standardization_without_line_break_mapping_fails_to_reload(
    tmp_path, real_texts_with_nel
):
    # The control for the test above: the trap is real on this data and Keras version.
    model_path = tmp_path / "seed_vectorizer.keras"
    _save_adapted_vectorizer(model_path, real_texts_with_nel, seed_standardize)
    run = _load_in_fresh_process(
        tmp_path, model_path, real_texts_with_nel[:2], "import tests.test_text"
    )
    assert run.returncode != 0
    assert "repeated" in run.stderr
