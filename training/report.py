"""A small evaluation report for one trained model: three PNG figures and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.metrics import reliability_bins, roc_curve  # noqa: E402

FIGSIZE = (4, 4)
DPI = 80


def write_report(
    folder: Path, metadata: dict[str, Any], labels: np.ndarray, scores: np.ndarray
) -> Path:
    out = Path(folder) / "report"
    out.mkdir(parents=True, exist_ok=True)
    _confusion_matrix(out / "confusion_matrix.png", metadata["confusion_matrix"], metadata["name"])
    _roc(out / "roc_curve.png", labels, scores, metadata)
    _reliability(out / "reliability.png", labels, scores, metadata)
    (out / "report.md").write_text(_markdown(metadata))
    return out


def _confusion_matrix(path: Path, matrix: list[list[int]], name: str) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    values = np.asarray(matrix)
    ax.imshow(values, cmap="Blues")
    for (row, col), count in np.ndenumerate(values):
        color = "white" if count > values.max() / 2 else "black"
        ax.text(col, row, f"{count:,}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _roc(path: Path, labels: np.ndarray, scores: np.ndarray, metadata: dict[str, Any]) -> None:
    fpr, tpr = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(fpr, tpr, label=f"AUC {metadata['roc_auc']:.4f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{metadata['name']}: ROC curve (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _reliability(
    path: Path, labels: np.ndarray, scores: np.ndarray, metadata: dict[str, Any]
) -> None:
    bins = [b for b in reliability_bins(labels, scores) if b["count"]]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    ax.plot(
        [b["mean_score"] for b in bins],
        [b["positive_rate"] for b in bins],
        marker="o",
        label=f"model (ECE {metadata['ece']:.3f})",
    )
    ax.set_xlabel("mean P(positive) in bin")
    ax.set_ylabel("observed positive rate")
    ax.set_title(f"{metadata['name']}: reliability (test)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _markdown(m: dict[str, Any]) -> str:
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    data = m["data"]
    refit = m["hyperparameters"].get("refit_reviews")
    training = (
        f"Epoch count chosen on {data['validation']:,} held-out train reviews after training on "
        f"the other {data['train']:,} (lowest validation loss: epoch {m['best_epoch']} of "
        f"{m['epochs_run']}), then refitted on all {refit:,} train reviews for that many epochs."
        if refit
        else f"Trained on {data['train']:,} IMDB train reviews, best epoch chosen on "
        f"{data['validation']:,} held-out train reviews (lowest validation loss: epoch "
        f"{m['best_epoch']} of {m['epochs_run']})."
    )
    return f"""# Model `{m["name"]}` ({m["version"]})

{m["architecture"]}

{training} Evaluated once on {data["test"]:,} IMDB test reviews (Maas et al., ACL 2011).
Data fingerprint `{data["fingerprint"][:16]}`, seed {m["seed"]}, TensorFlow {m["tf_version"]},
Keras {m["keras_version"]}.

| metric (test) | value |
|---|---|
| accuracy | {m["test_accuracy"]:.4f} |
| precision | {m["precision"]:.4f} |
| recall | {m["recall"]:.4f} |
| F1 | {m["f1"]:.4f} |
| ROC AUC | {m["roc_auc"]:.4f} |
| ECE (10 bins) | {m["ece"]:.4f} |
| log loss | {m["log_loss"]:.4f} |

| | predicted negative | predicted positive |
|---|---|---|
| true negative | {tn:,} | {fp:,} |
| true positive | {fn:,} | {tp:,} |

Training took {m["train_seconds"]:.0f} s; scoring runs at {m["reviews_per_second"]:,.0f} reviews/s
(batches of {m["throughput"]["batch_size"]}, {m["throughput"]["device"]}, in-process);
{m["params"]:,} trainable parameters; model file {m["model_bytes"] / 1e6:.1f} MB.

![confusion matrix](confusion_matrix.png) ![ROC curve](roc_curve.png)
![reliability diagram](reliability.png)
"""


def main() -> None:
    """Re-render the report of an installed model by scoring the test split again."""
    import argparse
    import json

    from reviewscore.core.model_registry import local_model
    from reviewscore.model.scorer import load_scorer
    from training.data import load_dataset

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    info = local_model(args.models_dir, args.name)
    assert info.path is not None
    dataset = load_dataset(args.data)
    if dataset.fingerprint() != info.metadata["data"]["fingerprint"]:
        raise SystemExit(f"{args.data} is not the data {info.name} was trained and tested on")
    scores = load_scorer(info).score(dataset.test.texts).p_positive
    metadata = json.loads((info.path.parent / "metadata.json").read_text())
    write_report(info.path.parent, metadata, dataset.test.labels, scores)


if __name__ == "__main__":
    main()
