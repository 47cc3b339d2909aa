"""Re-export an installed model's weights in the current graph, without retraining; compare
old and new on the test split and install the result in models/<arch>/ (model.keras,
metadata.json with the training fields kept, report/).
- nbsvm: from a file made with the n-gram-fingerprint layer (NgramVocabularyLogit, the export
  before the token-hash table) to NgramTableLogit, same weights.
- cnn: the same vectorizer and network with TrimPadding between them (same scores).
Usage: python -m training.reexport --arch nbsvm|cnn --data PATH [--source FILE] [--models-dir models]
The shipped files came from the files of commit fecad63:
  git show fecad63:models/nbsvm/model.keras > /tmp/nbsvm-fingerprints.keras
  python -m training.reexport --arch nbsvm --source /tmp/nbsvm-fingerprints.keras \\
      --data ../shared/data/imdb --check-collisions
  git show fecad63:models/cnn/model.keras > /tmp/cnn-500.keras
  python -m training.reexport --arch cnn --source /tmp/cnn-500.keras --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from reviewscore.core.model_registry import ModelInfo
from reviewscore.core.results import POSITIVE_FROM
from reviewscore.model.layers import NGRAM_KEY_SPACE, NgramTableLogit, NgramVocabularyLogit
from training import architectures as arch
from training.data import load_dataset
from training.metrics import classification_metrics
from training.ngram_vocabulary import fingerprint_vocabulary, key_collisions, table_vocabulary
from training.train import (
    CNN_ARCHITECTURE,
    MODEL_FILE,
    bucket_ids,
    document_frequencies,
    file_version,
    predict,
    test_figures,
    throughput_figures,
    vocabulary_ids,
    vocabulary_text,
)


@dataclass(frozen=True)
class LinearNgramModel:
    """What an exported nbsvm holds: one weight per vocabulary entry and a bias."""

    entries: np.ndarray  # int64 keys: fingerprints (sorted) or token-hash keys
    weights: np.ndarray  # float32
    bias: float
    ngram_max: int


def fingerprint_weights(model: keras.Model) -> LinearNgramModel:
    layer = next(x for x in model.layers if isinstance(x, NgramVocabularyLogit))
    return LinearNgramModel(
        entries=keras.ops.convert_to_numpy(layer.keys),
        weights=keras.ops.convert_to_numpy(layer.ngram_weights),
        bias=float(keras.ops.convert_to_numpy(layer.bias)),
        ngram_max=layer.ngram_max,
    )


def table_weights(model: keras.Model) -> LinearNgramModel:
    layer = next(x for x in model.layers if isinstance(x, NgramTableLogit))
    return LinearNgramModel(
        entries=keras.ops.convert_to_numpy(layer.keys),
        weights=keras.ops.convert_to_numpy(layer.ngram_weights),
        bias=float(keras.ops.convert_to_numpy(layer.bias)),
        ngram_max=layer.ngram_max,
    )


def to_table_model(source: keras.Model, train_texts: list[str]) -> keras.Model:
    """The fingerprint model `source` as an NgramTableLogit model with the same weights;
    `train_texts` are the reviews its vocabulary was selected from."""
    old = fingerprint_weights(source)
    # Document frequencies as training counted them: they order the entries (see the layer).
    ids = vocabulary_ids(bucket_ids(train_texts, NGRAM_KEY_SPACE, old.ngram_max), old.entries)
    table = table_vocabulary(
        train_texts, old.entries, document_frequencies(ids, len(old.entries)), old.ngram_max
    )
    return arch.nbsvm_table_end_to_end(
        table.keys, old.weights[table.source], old.bias, old.ngram_max
    )


def to_fingerprint_model(table_model: keras.Model, train_texts: list[str]) -> keras.Model:
    """The reverse: the same weights in the fingerprint layer, for side-by-side comparisons."""
    new = table_weights(table_model)
    fingerprints, index = fingerprint_vocabulary(train_texts, new.entries, new.ngram_max)
    return arch.nbsvm_vocabulary_end_to_end(
        fingerprints, new.weights[index], new.bias, new.ngram_max
    )


def agreement(labels: np.ndarray, old: np.ndarray, new: np.ndarray) -> dict[str, Any]:
    """How the re-exported model's test answers compare with the source model's."""
    return {
        "label_agreement": float(np.mean((old >= POSITIVE_FROM) == (new >= POSITIVE_FROM))),
        "labels_changed": int(np.sum((old >= POSITIVE_FROM) != (new >= POSITIVE_FROM))),
        "source_test_accuracy": float(np.mean((old >= POSITIVE_FROM) == labels)),
        "max_abs_p_difference": float(np.max(np.abs(old - new))),
    }


def to_trimmed_cnn(source: keras.Model) -> keras.Model:
    """The CNN `source` with TrimPadding between its vectorizer and its network."""
    return arch.cnn_end_to_end(
        source.get_layer("text_vectorization"), source.get_layer("cnn_network")
    )


def nbsvm_architecture(metadata: dict[str, Any], ngram_max: int) -> str:
    hyper = metadata["hyperparameters"]
    text = "nbsvm: NB-weighted linear model over binarized presence of " + vocabulary_text(
        hyper["vocabulary_size"], ngram_max, hyper["min_df"]
    )
    if hyper.get("refit_reviews"):
        text += f", refitted on all {hyper['refit_reviews']:,} train reviews"
    return text


def reexport(
    name: str, source: Path, data: Path, models_dir: Path, check_collisions: bool = False
) -> Path:
    """Convert `source` to the current graph of `name`, write models_dir/<name>/model.keras and
    update its metadata.json (test figures, version, size and speed measured again) and report."""
    dataset = load_dataset(data)
    test = dataset.test
    folder = models_dir / name
    metadata: dict[str, Any] = json.loads((folder / "metadata.json").read_text())
    source_model = keras.saving.load_model(source, compile=False)
    source_version = file_version(name, source)  # before a source in `folder` is overwritten
    started = time.perf_counter()
    if name == "nbsvm":
        model = to_table_model(source_model, dataset.train.texts)
        ngram_max = table_weights(model).ngram_max
        metadata["architecture"] = nbsvm_architecture(metadata, ngram_max)
    else:
        model = to_trimmed_cnn(source_model)
        metadata["architecture"] = CNN_ARCHITECTURE
    convert_seconds = time.perf_counter() - started

    old_scores = predict(source_model, test.texts)
    scores = predict(model, test.texts)
    model_path = folder / MODEL_FILE
    model.save(model_path)
    metadata.update(
        version=file_version(name, model_path),
        model_bytes=model_path.stat().st_size,
        **test_figures(classification_metrics(test.labels, scores)),
    )
    metadata["export"] = {
        "source_version": source_version,
        "convert_seconds": round(convert_seconds, 1),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **agreement(test.labels, old_scores, scores),
    }
    if name == "nbsvm":
        metadata["export"]["table_entries"] = len(table_weights(model).entries)
    if check_collisions and name == "nbsvm":
        metadata["export"]["collisions_in_train_and_test_ngrams"] = key_collisions(
            dataset.train.texts + test.texts, ngram_max
        )
    info = ModelInfo(
        name=name,
        version=metadata["version"],
        architecture=metadata["architecture"],
        max_tokens=metadata["max_tokens"],
        test_accuracy=metadata["test_accuracy"],
        path=model_path,
        metadata=metadata,
    )
    metadata.update(throughput_figures(info, test.texts))
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    from training.report import write_report

    write_report(folder, metadata, test.labels, scores)
    print(json.dumps({"version": metadata["version"], **metadata["export"]}, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=reexport.__doc__)
    parser.add_argument("--arch", choices=["cnn", "nbsvm"], required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--source",
        type=Path,
        help="the .keras file to convert (nbsvm: a fingerprint-layer file; "
        "default: the installed model)",
    )
    parser.add_argument(
        "--check-collisions",
        action="store_true",
        help="nbsvm: count key collisions over every train and test n-gram (about a minute)",
    )
    args = parser.parse_args()
    source = args.source or args.models_dir / args.arch / MODEL_FILE
    reexport(args.arch, source, args.data, args.models_dir, args.check_collisions)


if __name__ == "__main__":
    main()
