"""Two nbsvm models as one: the mean of their logits is again a linear model over n-gram
presence (weights averaged over the union of both vocabularies, 0 where one lacks an
n-gram), so it ships as one NgramTableLogit file that scores as fast as either.
Usage: python -m training.blend --first models/nbsvm --second /tmp/pieces/nbsvm
  --data ../shared/data/imdb --out models/nbsvm"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from reviewscore.core.model_registry import ModelInfo
from training import architectures as arch
from training.data import load_dataset
from training.metrics import classification_metrics
from training.reexport import LinearNgramModel, table_weights
from training.train import MODEL_FILE, file_version, predict, test_figures, throughput_figures


def average(first: LinearNgramModel, second: LinearNgramModel) -> keras.Model:
    """The model whose logit is the mean of both logits; entries keep `first`'s order (most
    frequent first) and `second`'s own n-grams follow."""
    extra = ~np.isin(second.entries, first.entries)
    keys = np.concatenate([first.entries, second.entries[extra]])
    order = np.argsort(keys)

    def spread(model: LinearNgramModel) -> np.ndarray:
        weights = np.zeros(len(keys), dtype=np.float64)
        weights[order[np.searchsorted(keys[order], model.entries)]] = model.weights
        return weights

    weights = (0.5 * (spread(first) + spread(second))).astype(np.float32)
    return arch.nbsvm_table_end_to_end(
        keys, weights, 0.5 * (first.bias + second.bias), first.ngram_max
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", type=Path, required=True, help="a model folder")
    parser.add_argument("--second", type=Path, required=True, help="a model folder")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    metas = [json.loads((f / "metadata.json").read_text()) for f in (args.first, args.second)]
    models = [
        table_weights(keras.saving.load_model(f / MODEL_FILE, compile=False))
        for f in (args.first, args.second)
    ]
    model = average(*models)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / MODEL_FILE
    model.save(path)
    test = load_dataset(args.data).test
    scores = predict(model, test.texts)
    metrics = classification_metrics(test.labels, scores)
    metadata: dict[str, Any] = {
        **metas[0],
        "version": file_version("nbsvm", path),
        "architecture": (
            "nbsvm: mean of the logits of two NB-weighted linear models over binarized presence "
            "of 1..3-grams (one: the train reviews; two: the train reviews plus their first "
            "and last sentences), folded into one table of "
            f"{len(keras.ops.convert_to_numpy(model.get_layer('ngram_table_logit').keys)):,} "
            "n-grams looked up by 64-bit keys folded from token hashes"
        ),
        **test_figures(metrics),
        "train_seconds": round(sum(m["train_seconds"] for m in metas), 1),
        "blend": {
            "of": [m["version"] for m in metas],
            "test_accuracy": [m["test_accuracy"] for m in metas],
            "train_seconds": [m["train_seconds"] for m in metas],
            "train_cpu_seconds": [m.get("train_cpu_seconds") for m in metas],
            "weights": [0.5, 0.5],
        },
        "model_bytes": path.stat().st_size,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }
    # The first model's re-export record and short-review figures are not this file's.
    metadata.pop("short_reviews", None)
    metadata.pop("export", None)
    metadata["params"] = (
        len(keras.ops.convert_to_numpy(model.get_layer("ngram_table_logit").keys)) + 1
    )
    info = ModelInfo(
        name="nbsvm",
        version=metadata["version"],
        architecture=metadata["architecture"],
        max_tokens=None,
        test_accuracy=metadata["test_accuracy"],
        path=path,
        metadata=metadata,
    )
    metadata.update(throughput_figures(info, test.texts))
    (args.out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    from training.report import write_report

    write_report(args.out, metadata, test.labels, scores)
    print(f"blend: test accuracy {metrics['accuracy']:.4f}, installed {path}")


if __name__ == "__main__":
    main()
