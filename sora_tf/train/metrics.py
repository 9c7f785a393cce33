"""Classification metrics and their pictures, from labels and predicted probabilities."""
import numpy as np


def classification_metrics(labels, probabilities, classes):
    """accuracy, balanced accuracy, per-class precision/recall/F1, macro-F1, top-k (k=2,3 when classes > 2), confusion
    (scikit-learn's; a class never predicted has precision 0, one absent recall 0)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    labels = np.asarray(labels)
    probs = np.asarray(probabilities)
    n = len(classes)
    pred = probs.argmax(1)
    ids = np.arange(n)
    confusion = confusion_matrix(labels, pred, labels=ids)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=ids, zero_division=0)
    result = {
        "num_clips": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": balanced_accuracy(confusion),
        "macro_f1": float(f1.mean()),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion_matrix": {"labels": list(classes), "rows_true_cols_pred": confusion.tolist()},
    }
    for k in (2, 3)[: max(n - 2, 0)]:
        result[f"top{k}_accuracy"] = float(top_k_accuracy_score(labels, probs, k=k, labels=ids))
    return result


def recalls(confusion):
    """Each class's recall from a confusion matrix (rows true); 0 for a class with no clips."""
    confusion = np.asarray(confusion)
    return np.diag(confusion) / np.maximum(confusion.sum(1), 1)


def balanced_accuracy(confusion):
    """Mean recall over the classes present: accuracy as if every class were equally common,
    which is what a held-out set with another class mix sees."""
    present = np.asarray(confusion).sum(1) > 0
    return float(recalls(confusion)[present].mean()) if present.any() else 0.0


def plot_confusion(metrics, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion_matrix"]["rows_true_cols_pred"])
    classes = metrics["confusion_matrix"]["labels"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(classes),) * 2)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_title(f"accuracy {metrics['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(history_csv, path):
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        for prefix in ("", "val_"):
            # Keras's CSVLogger writes val_ columns of "NA" for a run without validation clips.
            if rows and rows[0].get(prefix + key, "NA") != "NA":
                ax.plot(epochs, [float(r[prefix + key]) for r in rows], label=prefix + key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
