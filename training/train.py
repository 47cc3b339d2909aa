"""Train one architecture on IMDB, evaluate it once on the test split and install it as
models/<name>/ (model.keras + metadata.json + report/). Entry point: run_training()."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from reviewscore.core.model_registry import ModelInfo
from reviewscore.model.layers import NGRAM_KEY_SPACE, hashed_ngram_ids
from reviewscore.model.scorer import compile_model_call, default_device, load_scorer
from training import architectures as arch
from training.data import Reviews, concat_reviews, load_dataset, stratified_sample, stratified_split
from training.metrics import classification_metrics
from training.ngram_vocabulary import TableVocabulary, table_vocabulary
from training.short_reviews import training_pieces

VALIDATION_FRACTION = 0.2
MODEL_FILE = "model.keras"
THROUGHPUT_REVIEWS = 2_000
THROUGHPUT_BATCH = 256


@dataclass
class TrainedModel:
    """What a trainer hands back: the end-to-end model and how its training went."""

    model: keras.Model
    architecture: str
    max_tokens: int | None
    epochs_run: int
    best_epoch: int
    history: dict[str, list[float]]
    params: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    # The model the validation figures belong to, when `model` was refitted on them too.
    selection_model: keras.Model | None = None


class KeepBestEpoch(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest validation loss, stop after
    `patience` epochs without improvement, and restore the best weights at the end."""

    def __init__(self, patience: int) -> None:
        super().__init__()
        self.patience = patience
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        loss = (logs or {}).get("val_loss", float("inf"))
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
            self.best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def _history(fit_result: keras.callbacks.History) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in fit_result.history.items()}


CNN_ARCHITECTURE = (
    f"cnn: TextVectorization({arch.CNN_VOCABULARY}, {arch.CNN_SEQUENCE_LENGTH} tokens) -> "
    f"padding cut to the batch's longest text + {arch.CNN_PADDING_MARGIN} -> "
    f"Embedding({arch.CNN_EMBEDDING_DIM}) -> Dropout -> "
    f"2x Conv1D(128, {arch.CNN_KERNEL}, stride {arch.CNN_STRIDE}) -> "
    "GlobalMaxPool -> Dense(128) -> Dropout -> Dense(1, sigmoid)"
)


def train_cnn(fit: Reviews, val: Reviews, epochs: int | None, seed: int) -> TrainedModel:
    vectorizer = arch.cnn_vectorizer()
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(fit.texts).batch(1024))

    def token_ids(reviews: Reviews) -> np.ndarray:
        return np.concatenate(
            [
                vectorizer(tf.constant(reviews.texts[i : i + 1024])).numpy()
                for i in range(0, len(reviews), 1024)
            ]
        )

    network = arch.cnn_network()
    network.summary()
    network.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    keep_best = KeepBestEpoch(patience=2)
    result = network.fit(
        token_ids(fit),
        fit.labels.astype("float32"),
        validation_data=(token_ids(val), val.labels.astype("float32")),
        batch_size=32,
        epochs=epochs or 8,
        callbacks=[keep_best],
        verbose=2,
    )
    history = _history(result)
    # Export a fresh, uncompiled copy so that no optimizer state goes into the .keras file.
    exported = arch.cnn_network()
    exported.set_weights(network.get_weights())
    return TrainedModel(
        model=arch.cnn_end_to_end(vectorizer, exported),
        architecture=CNN_ARCHITECTURE,
        max_tokens=arch.CNN_SEQUENCE_LENGTH,
        epochs_run=len(history["loss"]),
        best_epoch=keep_best.best_epoch,
        history=history,
        params=int(sum(np.prod(w.shape) for w in network.trainable_weights)),
        hyperparameters={
            "vocabulary": arch.CNN_VOCABULARY,
            "sequence_length": arch.CNN_SEQUENCE_LENGTH,
            "embedding_dim": arch.CNN_EMBEDDING_DIM,
            "batch_size": 32,
            "optimizer": "adam(1e-3)",
        },
    )


def bucket_ids(texts: list[str], num_buckets: int, ngram_max: int) -> tf.RaggedTensor:
    """The distinct hashed n-gram buckets of each text, as a ragged [n, None] int64 tensor."""
    parts = []
    for start in range(0, len(texts), 2048):
        chunk = tf.constant(texts[start : start + 2048])
        rows, buckets = hashed_ngram_ids(chunk, num_buckets, ngram_max)
        parts.append(
            tf.RaggedTensor.from_value_rowids(buckets, rows, nrows=len(texts[start : start + 2048]))
        )
    return tf.concat(parts, axis=0)


# NBSVM hyperparameters, chosen on the validation split (see training/README-models.md).
NBSVM_SETTINGS: dict[str, Any] = {
    "vocabulary_size": 400_000,  # 0: hash every n-gram into num_buckets instead
    "min_df": 2,
    "num_buckets": arch.NBSVM_BUCKETS,
    "ngram_max": arch.NBSVM_NGRAM_MAX,
    "learning_rate": 5e-3,
    "weight_decay": 1e-5,
    "batch_size": 64,
    "w_init_scale": 0.1,
    "nb_alpha": 1.0,
    "epochs": 6,
    "refit_on_all_train": True,
    # Sentences of the train reviews added as extra training texts with their review's label
    # (training.short_reviews; "first,last" or "every"). Off here: the shipped nbsvm is the
    # mean of a model without and one with "first,last" (training.blend; README, Models).
    "sentence_pieces": "",
}


@dataclass(frozen=True)
class NBSVMFeatures:
    """Hashed n-gram buckets of the train and validation reviews, and the NB ratios."""

    fit_ids: tf.RaggedTensor
    fit_labels: np.ndarray
    val_ids: tf.RaggedTensor | None  # None when refitting without a validation split
    val_labels: np.ndarray | None
    ratios: np.ndarray
    vocabulary: np.ndarray | None  # sorted n-gram keys; None when n-grams are hashed
    # The vocabulary keyed by token hashes, for the export; None when n-grams are hashed.
    table: TableVocabulary | None = None


def select_vocabulary(keys: tf.RaggedTensor, size: int, min_df: int) -> np.ndarray:
    """The `size` n-gram keys found in most training reviews (at least min_df), sorted."""
    unique, document_frequency = np.unique(keys.flat_values.numpy(), return_counts=True)
    frequent = np.flatnonzero(document_frequency >= min_df)
    # Most frequent first; ties broken by key so that the choice is deterministic.
    order = np.lexsort((unique[frequent], -document_frequency[frequent]))
    return np.sort(unique[frequent[order[:size]]])


def vocabulary_ids(keys: tf.RaggedTensor, vocabulary: np.ndarray) -> tf.RaggedTensor:
    """Replace each key by its index in the sorted vocabulary, dropping unknown keys."""
    flat = keys.flat_values.numpy()
    index = np.minimum(np.searchsorted(vocabulary, flat), len(vocabulary) - 1)
    known = vocabulary[index] == flat
    return tf.RaggedTensor.from_value_rowids(
        index[known], keys.value_rowids().numpy()[known], nrows=keys.nrows()
    )


def document_frequencies(ids: tf.RaggedTensor, size: int) -> np.ndarray:
    """In how many reviews each vocabulary entry occurs (ids are distinct within a review)."""
    return np.bincount(ids.flat_values.numpy(), minlength=size)


def nbsvm_features(fit: Reviews, val: Reviews | None, settings: dict[str, Any]) -> NBSVMFeatures:
    if settings.get("sentence_pieces"):
        fit = concat_reviews(fit, training_pieces(fit, settings["sentence_pieces"]))
    ngram_max = settings["ngram_max"]
    vocabulary = None
    table = None
    val_ids = None
    if settings["vocabulary_size"]:
        fit_keys = bucket_ids(fit.texts, NGRAM_KEY_SPACE, ngram_max)
        vocabulary = select_vocabulary(fit_keys, settings["vocabulary_size"], settings["min_df"])
        fit_ids = vocabulary_ids(fit_keys, vocabulary)
        if val is not None:
            val_ids = vocabulary_ids(bucket_ids(val.texts, NGRAM_KEY_SPACE, ngram_max), vocabulary)
        size = len(vocabulary)
        # Training keeps the fingerprints (they chose the vocabulary); the export looks the
        # same n-grams up by token-hash keys, found in the same reviews.
        table = table_vocabulary(
            fit.texts, vocabulary, document_frequencies(fit_ids, size), ngram_max
        )
    else:
        size = settings["num_buckets"]
        fit_ids = bucket_ids(fit.texts, size, ngram_max)
        if val is not None:
            val_ids = bucket_ids(val.texts, size, ngram_max)
    ratios = arch.nb_log_count_ratios(
        fit_ids.value_rowids().numpy(),
        fit_ids.flat_values.numpy(),
        fit.labels,
        size,
        alpha=settings["nb_alpha"],
    )
    val_labels = None if val is None else val.labels
    return NBSVMFeatures(fit_ids, fit.labels, val_ids, val_labels, ratios, vocabulary, table)


def vocabulary_text(size: int, ngram_max: int, min_df: int) -> str:
    return (
        f"the {size:,} most frequent 1..{ngram_max}-grams (df >= {min_df}), "
        "looked up by 64-bit keys folded from token hashes"
    )


def fit_nbsvm(
    features: NBSVMFeatures, settings: dict[str, Any], epochs: int | None, seed: int
) -> TrainedModel:
    def batches(ids: tf.RaggedTensor, labels: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        data = tf.data.Dataset.from_tensor_slices((ids, labels.astype("float32")))
        if shuffle:
            data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        return (
            data.batch(settings["batch_size"])
            .map(lambda x, y: (x.to_tensor(default_value=-1), y))
            .prefetch(2)
        )

    network = arch.nbsvm_network(features.ratios, settings["w_init_scale"])
    network.summary()
    network.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.AdamW(
            learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"]
        ),
        metrics=["accuracy"],
    )
    keep_best = KeepBestEpoch(patience=1)
    validation = None
    if features.val_ids is not None and features.val_labels is not None:
        validation = batches(features.val_ids, features.val_labels, shuffle=False)
    result = network.fit(
        batches(features.fit_ids, features.fit_labels, shuffle=True),
        validation_data=validation,
        epochs=epochs or settings["epochs"],
        callbacks=[keep_best] if validation is not None else [],
        verbose=2,
    )
    history = _history(result)
    best_epoch = keep_best.best_epoch if validation is not None else len(history["loss"])
    layer = network.get_layer("nb_weighted")
    ngram_max = settings["ngram_max"]
    bias = float(keras.ops.convert_to_numpy(layer.bias))
    if features.vocabulary is not None and features.table is not None:
        model = arch.nbsvm_table_end_to_end(
            features.table.keys, layer.bucket_weights()[features.table.source], bias, ngram_max
        )
        features_text = vocabulary_text(len(features.vocabulary), ngram_max, settings["min_df"])
    else:
        model = arch.nbsvm_end_to_end(
            layer.bucket_weights(), bias, settings["num_buckets"], ngram_max
        )
        features_text = f"1..{ngram_max}-grams hashed into {settings['num_buckets']:,} buckets"
    return TrainedModel(
        model=model,
        architecture=f"nbsvm: NB-weighted linear model over binarized presence of {features_text}",
        max_tokens=None,
        epochs_run=len(history["loss"]),
        best_epoch=best_epoch,
        history=history,
        params=len(features.ratios) + 1,
        hyperparameters={
            **settings,
            "w_offset": arch.NBSVM_W_OFFSET,
            "r_scale": arch.NBSVM_R_SCALE,
        },
    )


def train_nbsvm(
    fit: Reviews, val: Reviews, epochs: int | None, seed: int, **overrides: Any
) -> TrainedModel:
    settings = {**NBSVM_SETTINGS, **overrides}
    selected = fit_nbsvm(nbsvm_features(fit, val, settings), settings, epochs, seed)
    if not settings["refit_on_all_train"]:
        return selected
    # The learning curve on the validation split still rises at 20,000 reviews, so the
    # shipped model is refitted on all train reviews for the epoch count chosen above.
    keras.utils.set_random_seed(seed)
    everything = concat_reviews(fit, val)
    refit = fit_nbsvm(
        nbsvm_features(everything, None, settings), settings, selected.best_epoch, seed
    )
    refit.selection_model = selected.model
    refit.best_epoch = selected.best_epoch
    refit.epochs_run = selected.epochs_run
    refit.history = selected.history
    refit.hyperparameters["refit_reviews"] = len(everything)
    refit.architecture += f", refitted on all {len(everything):,} train reviews"
    return refit


TRAINERS: dict[str, Callable[..., TrainedModel]] = {
    "cnn": train_cnn,
    "nbsvm": train_nbsvm,
}


def predict(model: keras.Model, texts: list[str], batch_size: int = 256) -> np.ndarray:
    call = compile_model_call(model)
    parts = [
        call(tf.constant(texts[i : i + batch_size])).numpy()
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)


def file_version(name: str, path: Path) -> str:
    return f"{name}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def test_figures(test_metrics: dict[str, Any]) -> dict[str, Any]:
    """The metadata.json fields that report the test split."""
    return {
        "test_accuracy": test_metrics["accuracy"],
        **{
            key: test_metrics[key]
            for key in ("precision", "recall", "f1", "roc_auc", "ece", "log_loss")
        },
        "confusion_matrix": test_metrics["confusion_matrix"],
    }


def measure_throughput(info: ModelInfo, texts: list[str]) -> float:
    """Reviews per second through the worker's scorer, batched, in-process, after warm-up."""
    scorer = load_scorer(info, batch_size=THROUGHPUT_BATCH)
    scorer.score(texts[:THROUGHPUT_BATCH])
    started = time.perf_counter()
    scorer.score(texts)
    return len(texts) / (time.perf_counter() - started)


def throughput_figures(info: ModelInfo, test_texts: list[str]) -> dict[str, Any]:
    """The metadata.json fields that report scoring speed (a rough, single-model figure;
    training.benchmark compares models side by side)."""
    sample = test_texts[:THROUGHPUT_REVIEWS]
    return {
        "reviews_per_second": round(measure_throughput(info, sample), 1),
        "throughput": {
            "reviews": len(sample),
            "batch_size": THROUGHPUT_BATCH,
            "device": default_device(),
            "cpu_count": os.cpu_count(),
        },
    }


def run_training(
    arch: str,
    data: Path,
    models_dir: Path,
    *,
    epochs: int | None = None,
    seed: int = 1337,
    limit: int | None = None,
    report: bool = True,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Train `arch` on the IMDB data at `data`, install it as models_dir/<arch>/ and return
    that folder. `limit` trains and tests on a stratified sample of that many reviews."""
    if arch not in TRAINERS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(TRAINERS)})")
    keras.utils.set_random_seed(seed)
    dataset = load_dataset(Path(data))
    fingerprint = dataset.fingerprint()
    train, test = dataset.train, dataset.test
    if limit is not None:
        train = stratified_sample(train, limit, seed)
        test = stratified_sample(test, limit, seed)
    val, fit = stratified_split(train, VALIDATION_FRACTION, seed)
    print(f"{arch}: {len(fit)} train, {len(val)} validation, {len(test)} test reviews")

    started = time.perf_counter()
    cpu_started = time.process_time()
    trained = TRAINERS[arch](fit, val, epochs, seed, **(overrides or {}))
    train_seconds = time.perf_counter() - started
    # CPU time of all threads: the budget that holds on a shared machine, where wall time
    # depends on what else runs.
    train_cpu_seconds = time.process_time() - cpu_started

    # The test split is used once, here, for the figures reported in metadata.json.
    test_scores = predict(trained.model, test.texts)
    test_metrics = classification_metrics(test.labels, test_scores)
    val_metrics = classification_metrics(
        val.labels, predict(trained.selection_model or trained.model, val.texts)
    )
    print(
        f"{arch}: test accuracy {test_metrics['accuracy']:.4f}, val {val_metrics['accuracy']:.4f}"
    )

    folder = Path(models_dir) / arch
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    # The end-to-end model is built fresh and never compiled: no optimizer state is saved.
    trained.model.save(model_path)
    metadata: dict[str, Any] = {
        "name": arch,
        "version": file_version(arch, model_path),
        "architecture": trained.architecture,
        "model_file": MODEL_FILE,
        "max_tokens": trained.max_tokens,
        **test_figures(test_metrics),
        # Of the model that chose the epoch count (before any refit on all train reviews).
        "validation": {k: v for k, v in val_metrics.items() if k != "confusion_matrix"},
        "data": {
            "source": dataset.source,
            "fingerprint": fingerprint,
            "limit": limit,
            "train": len(fit),
            "validation": len(val),
            "test": len(test),
        },
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "history": trained.history,
        "params": trained.params,
        "hyperparameters": trained.hyperparameters,
        "model_bytes": model_path.stat().st_size,
        "seed": seed,
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    info = ModelInfo(
        name=arch,
        version=metadata["version"],
        architecture=trained.architecture,
        max_tokens=trained.max_tokens,
        test_accuracy=metadata["test_accuracy"],
        path=model_path,
        metadata=metadata,
    )
    metadata.update(throughput_figures(info, test.texts))
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    if report:
        from training.report import write_report

        write_report(folder, metadata, test.labels, test_scores)
    print(f"{arch}: installed {model_path} ({metadata['version']})")
    return folder


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=run_training.__doc__)
    parser.add_argument("--arch", choices=sorted(TRAINERS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--sentence-pieces", help="nbsvm: also train on these sentences (first,last or every)"
    )
    args = parser.parse_args(argv)
    run_training(
        args.arch,
        args.data,
        args.models_dir,
        epochs=args.epochs,
        seed=args.seed,
        limit=args.limit,
        report=not args.no_report,
        overrides={"sentence_pieces": args.sentence_pieces} if args.sentence_pieces else None,
    )


if __name__ == "__main__":
    main()
