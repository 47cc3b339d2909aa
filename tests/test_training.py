"""Training end to end on a few hundred reviews, the data layouts, and the shipped models."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from reviewscore.core.model_registry import local_model, local_models
from reviewscore.model.layers import NGRAM_KEY_MULTIPLIER, TOKEN_HASH_BUCKETS, NgramTableLogit
from reviewscore.model.scorer import load_scorer
from reviewscore.model.text import standardize
from training import architectures
from training.data import load_dataset, stratified_sample, stratified_split
from training.reexport import table_weights, to_fingerprint_model, to_table_model
from training.train import predict, run_training, train_cnn, train_nbsvm

REPO = Path(__file__).resolve().parents[1]
IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"
SHIPPED = REPO / "models"

needs_imdb = pytest.mark.skipif(
    not (IMDB / "train.csv.gz").is_file(), reason=f"IMDB data not found at {IMDB}"
)

CLEARLY_POSITIVE = [
    "I love this movie! It is amazing.",
    "A wonderful, moving film with brilliant performances. One of the best I have ever "
    "seen; I loved every minute and highly recommend it.",
]
CLEARLY_NEGATIVE = [
    "Bad movie.",
    "Awful. The worst film I have ever seen: boring, stupid plot, terrible acting. "
    "A complete waste of time and money.",
]


def test_cnn_network_has_2806273_trainable_parameters():
    network = architectures.cnn_network()
    assert sum(int(np.prod(w.shape)) for w in network.trainable_weights) == 2_806_273


@pytest.fixture(scope="module")
def small_imdb():
    dataset = load_dataset(IMDB)
    train = stratified_sample(dataset.train, 300, seed=7)
    return stratified_split(train, 0.2, seed=7)  # (validation, fit)


@needs_imdb
@pytest.mark.parametrize(
    ("trainer", "overrides"),
    [
        (train_cnn, {}),
        (train_nbsvm, {}),
        (train_nbsvm, {"vocabulary_size": 0, "num_buckets": 2**16}),
    ],
    ids=["cnn", "nbsvm", "nbsvm-hashed"],
)
def test_exported_model_scores_like_the_in_memory_one(tmp_path, small_imdb, trainer, overrides):
    val, fit = small_imdb
    trained = trainer(fit, val, 1, 7, **overrides)
    trained.model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(
        predict(reloaded, val.texts), predict(trained.model, val.texts), rtol=1e-5, atol=1e-6
    )


@needs_imdb
@pytest.mark.parametrize("arch", ["cnn", "nbsvm"])
def test_run_training_installs_a_loadable_model_with_metadata_and_report(tmp_path, arch):
    folder = run_training(arch, IMDB, tmp_path, epochs=1, limit=300, seed=3)
    assert folder == tmp_path / arch
    meta = json.loads((folder / "metadata.json").read_text())
    for key in (
        "version",
        "architecture",
        "model_file",
        "max_tokens",
        "test_accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "ece",
        "confusion_matrix",
        "train_seconds",
        "epochs_run",
        "best_epoch",
        "reviews_per_second",
        "params",
        "tf_version",
        "keras_version",
        "created_at",
        "seed",
    ):
        assert key in meta, key
    assert meta["data"]["fingerprint"] == load_dataset(IMDB).fingerprint()
    assert meta["data"]["test"] == 300
    for figure in ("confusion_matrix.png", "roc_curve.png", "reliability.png"):
        assert 0 < (folder / "report" / figure).stat().st_size < 500_000
    assert (folder / "report" / "report.md").is_file()
    scores = load_scorer(local_model(tmp_path, arch)).score(["Bad movie.", "Great film!"])
    assert scores.p_positive.shape == (2,) and scores.p_positive.dtype == np.float32


def _shipped(name: str):
    if not (SHIPPED / name / "metadata.json").is_file():
        pytest.skip(f"model {name} is not shipped")
    return load_scorer(local_model(SHIPPED, name))


@pytest.mark.parametrize("name", ["cnn", "nbsvm"])
def test_shipped_model_outputs_p_positive(name):
    scores = _shipped(name).score(CLEARLY_POSITIVE + CLEARLY_NEGATIVE)
    assert (scores.p_positive[:2] > 0.5).all(), scores.p_positive
    assert (scores.p_positive[2:] < 0.5).all(), scores.p_positive


@pytest.mark.parametrize("name", ["cnn", "nbsvm"])
def test_shipped_model_file_is_small_and_named_by_its_content(name):
    info = next((m for m in local_models(SHIPPED) if m.name == name), None)
    if info is None:
        pytest.skip(f"model {name} is not shipped")
    import hashlib

    assert info.path.stat().st_size < 20_000_000
    assert info.version == f"{name}-" + hashlib.sha256(info.path.read_bytes()).hexdigest()[:12]


def test_scorer_flags_texts_longer_than_the_cnn_reads_and_scores_any_batch_size():
    scorer = _shipped("cnn")
    scorer.batch_size = 3
    texts = ["word " * 500, "word " * 501, "short"] * 3 + ["one more"]
    scores = scorer.score(texts)
    assert scores.truncated.tolist() == [False, True, False] * 3 + [False]
    assert scores.p_positive.shape == (10,)
    # Batched by length, answered in input order.
    alone = [scorer.score([text]).p_positive[0] for text in texts]
    np.testing.assert_allclose(scores.p_positive, alone, atol=1e-6)
    empty = scorer.score([])
    assert empty.p_positive.shape == (0,) and empty.truncated.shape == (0,)


def test_scorer_never_flags_truncation_for_a_model_reading_every_token():
    assert not _shipped("nbsvm").score(["word " * 5000]).truncated.any()


REVIEWS = {
    ("train", "pos", 0, 9): "A great film.",
    ("train", "pos", 3, 7): "Good\x85fun<br />really.",
    ("train", "neg", 1, 2): "Awful, just awful.",
    ("test", "pos", 2, 10): "Loved it!",
    ("test", "neg", 5, 1): 'Terrible "acting".',
    ("test", "neg", 4, 3): "Meh; bad.",
}


def _write_aclimdb(root: Path) -> None:
    for (split, polarity, n, rating), text in REVIEWS.items():
        folder = root / "aclImdb" / split / polarity
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n}_{rating}.txt").write_text(text, encoding="utf-8")
    unsup = root / "aclImdb" / "train" / "unsup"
    unsup.mkdir(parents=True)
    (unsup / "9_0.txt").write_text("unlabelled", encoding="utf-8")


def _check_small_layout(dataset) -> None:
    assert dataset.train.ids == ["train_pos_0", "train_pos_3", "train_neg_1"]
    assert dataset.train.labels.tolist() == [1, 1, 0]
    assert dataset.train.texts[1] == "Good\x85fun<br />really."
    assert dataset.test.ids == ["test_pos_2", "test_neg_4", "test_neg_5"]
    assert dataset.test.labels.tolist() == [1, 0, 0]


def test_load_dataset_reads_an_aclimdb_folder_ignoring_unsup(tmp_path):
    _write_aclimdb(tmp_path)
    _check_small_layout(load_dataset(tmp_path / "aclImdb"))
    _check_small_layout(load_dataset(tmp_path))


def test_load_dataset_streams_the_tarball_like_the_folder(tmp_path):
    _write_aclimdb(tmp_path / "src")
    tarball = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
        archive.addfile(tarfile.TarInfo("aclImdb/README"), io.BytesIO(b""))
    from_tarball = load_dataset(tarball)
    _check_small_layout(from_tarball)
    assert from_tarball.fingerprint() == load_dataset(tmp_path / "src").fingerprint()
    assert not (tmp_path / "aclImdb").exists()  # nothing was extracted


@needs_imdb
def test_csv_reader_gives_balanced_splits_of_25000():
    dataset = load_dataset(IMDB)
    assert len(dataset.train) == len(dataset.test) == 25_000
    assert dataset.train.labels.sum() == dataset.test.labels.sum() == 12_500


def test_stratified_split_keeps_label_balance_and_is_seeded():
    from training.data import Reviews

    reviews = Reviews(
        ids=[str(i) for i in range(100)],
        texts=[str(i) for i in range(100)],
        labels=np.array([1] * 60 + [0] * 40, dtype=np.int32),
    )
    first, rest = stratified_split(reviews, 0.2, seed=1)
    assert len(first) == 20 and first.labels.sum() == 12
    assert set(first.ids).isdisjoint(rest.ids)
    assert stratified_split(reviews, 0.2, seed=1)[0].ids == first.ids
    assert tf.is_tensor(tf.constant(first.texts))


@pytest.mark.parametrize("name", ["cnn", "nbsvm"])
def test_shipped_model_loads_in_a_fresh_process_importing_only_the_scorer(name):
    # What a worker does: nothing from training/ is imported, yet the custom objects resolve.
    if not (SHIPPED / name / "metadata.json").is_file():
        pytest.skip(f"model {name} is not shipped")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from reviewscore.core.model_registry import local_model\n"
        "from reviewscore.model.scorer import configure_threads, load_scorer\n"
        "configure_threads(1, 1)\n"
        "scorer = load_scorer(local_model(Path(sys.argv[1]), sys.argv[2]))\n"
        "scores = scorer.score(['I love this movie! It is amazing.', 'Bad movie.'])\n"
        "print(json.dumps([scorer.device, scores.p_positive.tolist()]))\n"
        "assert 'training' not in sys.modules\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(SHIPPED), name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    device, (positive, negative) = json.loads(run.stdout.strip().splitlines()[-1])
    assert device in ("CPU:0", "GPU:0")
    assert positive > 0.5 > negative


def _string_key(tokens: list[bytes]) -> int:
    """An n-gram's key computed from its token strings with Python integers: the reference
    for NgramTableLogit's in-graph fold."""
    hashes = tf.strings.to_hash_bucket_fast(tokens, TOKEN_HASH_BUCKETS).numpy().tolist()
    key = 0
    for position, token_hash in enumerate(hashes):
        key = token_hash if position == 0 else (key * NGRAM_KEY_MULTIPLIER + token_hash) % 2**64
    return key - 2**64 if key >= 2**63 else key


def _reference_logits(model: keras.Model, texts: list[str]) -> np.ndarray:
    """bias + sum of the weights of each text's distinct n-gram strings, built in Python."""
    table = table_weights(model)
    weight_of = dict(zip(table.entries.tolist(), table.weights.tolist(), strict=True))
    logits = []
    for tokens in tf.strings.split(standardize(tf.constant(texts))).to_list():
        grams = {
            tuple(tokens[i : i + width])
            for width in range(1, table.ngram_max + 1)
            for i in range(len(tokens) - width + 1)
        }
        logits.append(table.bias + sum(weight_of.get(_string_key(list(g)), 0.0) for g in grams))
    return np.array(logits)


EDGE_TEXTS = ["", "the", "of the", "the movie", "movie", "great", "!!!", "a\x85b  c<br />d"]


@needs_imdb
def test_shipped_table_model_matches_an_ngram_string_reference_on_real_reviews():
    if not (SHIPPED / "nbsvm" / "metadata.json").is_file():
        pytest.skip("model nbsvm is not shipped")
    model = keras.saving.load_model(local_model(SHIPPED, "nbsvm").path, compile=False)
    # Short texts between real ones: an n-gram that ran across two texts would show.
    reviews = load_dataset(IMDB).test.texts[::83][:300]
    texts = [t for pair in zip(reviews, (EDGE_TEXTS * 40)[:300], strict=True) for t in pair]
    logits = _reference_logits(model, texts)
    p_positive = predict(model, texts, batch_size=64)
    np.testing.assert_allclose(p_positive, 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert ((p_positive >= 0.5) == (logits >= 0)).all()


@needs_imdb
def test_table_export_scores_like_the_fingerprint_export_of_the_same_weights(small_imdb):
    val, fit = small_imdb
    trained = train_nbsvm(fit, val, 1, 7)  # refitted on fit + val: its vocabulary's reviews
    reviews = fit.texts + val.texts
    fingerprint_model = to_fingerprint_model(trained.model, reviews)
    texts = load_dataset(IMDB).test.texts[:300]
    table_scores = predict(trained.model, texts)
    np.testing.assert_allclose(table_scores, predict(fingerprint_model, texts), atol=1e-5)
    # And back again: the re-export path gives the entries training exported.
    again = table_weights(to_table_model(fingerprint_model, reviews))
    exported = table_weights(trained.model)
    np.testing.assert_array_equal(again.entries, exported.entries)
    np.testing.assert_array_equal(again.weights, exported.weights)


def _table_model(keys: np.ndarray, weights: np.ndarray, bias: float, dense: int) -> keras.Model:
    inputs = keras.Input(shape=(), dtype="string")
    layer = NgramTableLogit(len(keys), 3, dense_ngrams=dense, name="ngram_table_logit")
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(layer(inputs)))
    layer.set_vocabulary(keys, weights, bias)
    return model


@pytest.mark.parametrize("dense", [0, 2, 4], ids=["all-unique", "mixed", "all-dense"])
def test_table_layer_round_trips_through_a_keras_file_and_rebuilds_its_table(tmp_path, dense):
    grams = [[b"great"], [b"bad"], [b"not", b"bad"], [b"waste", b"of", b"time"]]
    keys = np.array([_string_key(g) for g in grams], dtype=np.int64)
    weights = np.array([1.0, -1.0, 1.5, -2.0], dtype=np.float32)
    model = _table_model(keys, weights, 0.25, dense)
    texts = ["Great! great.", "Not bad.", "bad", "A waste of time, not great", "", "of time"]
    expected_logits = np.array([1.25, 0.75, -0.75, -0.75, 0.25, 0.25])
    np.testing.assert_allclose(predict(model, texts), 1 / (1 + np.exp(-expected_logits)), rtol=1e-6)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(reloaded.get_layer("ngram_table_logit"), NgramTableLogit)
    np.testing.assert_array_equal(predict(reloaded, texts), predict(model, texts))


def test_trimmed_padding_leaves_the_cnn_scores_as_at_500_tokens():
    if not (SHIPPED / "cnn" / "metadata.json").is_file():
        pytest.skip("model cnn is not shipped")
    shipped = keras.saving.load_model(local_model(SHIPPED, "cnn").path, compile=False)
    vectorizer = shipped.get_layer("text_vectorization")
    network = shipped.get_layer("cnn_network")
    trimmed = architectures.cnn_end_to_end(vectorizer, network)
    lengths = [0, 1, 6, 7, 8, 9, 10, 24, 25, 26, 33, 34, 100, 440, 466, 467, 468, 499, 500, 600]
    texts = [" ".join(["film", "bad", "great"][i % 3] for i in range(n)) for n in lengths]
    full = keras.ops.convert_to_numpy(network(vectorizer(tf.constant(texts)))).ravel()
    batched = predict(trimmed, texts)
    alone = np.concatenate([predict(trimmed, [text]) for text in texts])
    np.testing.assert_allclose(batched, full, atol=1e-6)
    np.testing.assert_allclose(alone, full, atol=1e-6)
