"""``zsar eval``: zero-shot accuracy of a checkpoint on a labelled video set."""

from __future__ import annotations

from ..data.config import FORMATS

_DESCRIPTION = (
    "Evaluate a zero-shot checkpoint on labelled videos whose classes serve as the candidate labels "
    "(0/100 protocol, or --protocol 0/50 for 10 random half-class splits). Prints top-1, top-5 and "
    "mean class accuracy of the semantic-transfer classifier, the semantic-space baseline and chance; "
    "--report writes them as JSON."
)


def add_arguments(parser) -> None:
    parser.description = _DESCRIPTION
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint directory")
    parser.add_argument("--annotations", required=True, metavar="PATH",
                        help="list file, splits folder, CSV or JSON (see --format)")
    parser.add_argument("--root", default=None, help="video folder (default: paths as written)")
    parser.add_argument("--format", default="list", choices=FORMATS, help="annotation format (default list)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names, one per line, that integer labels index (list format)")
    parser.add_argument("--split", default=None, help="split number/name where the format has splits")
    parser.add_argument("--subset", default="test", help="subset where the format has them (default test)")
    parser.add_argument("--protocol", default="0/100", choices=("0/100", "0/50"), help="default 0/100")
    parser.add_argument("--clips", type=int, default=None, help="clips per video (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=8, help="videos per batch (default 8)")
    parser.add_argument("--backend", default="auto", help="decoder backend (default auto)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--report", default=None, metavar="PATH", help="write the results as JSON")


def run(args) -> int:
    import os

    from . import CLIError

    if not os.path.isdir(args.checkpoint):
        raise CLIError(f"--checkpoint {args.checkpoint}: no such directory")
    if not os.path.exists(args.annotations):
        raise CLIError(f"--annotations {args.annotations}: no such file or folder")

    from dataclasses import replace

    import torch

    from ..data import VideoLoader
    from ..data.config import DataConfig
    from ..eval import evaluate_protocol, format_results_table, transfer_predictor, write_results_json
    from ..zeroshot import ZeroShotClassifier, cosine_similarity_matrix, semantic_space_baseline

    data = DataConfig(format=args.format, annotations=args.annotations, root=args.root, split=args.split,
                      subset=args.subset, classes=args.classes, backend=args.backend)
    videos = data.read()
    clf = ZeroShotClassifier.load(args.checkpoint, device=args.device)
    spec = clf.clip_spec if args.clips is None else replace(clf.clip_spec, num_clips=args.clips)
    loader = VideoLoader(videos, spec, args.batch, backend=args.backend, shuffle=False, num_shards=1)
    from tqdm.auto import tqdm

    feats, labels = [], []
    device = next(clf.model.parameters()).device
    with torch.no_grad():
        for batch in tqdm(loader, desc="encoding videos", unit="batch"):
            x = clf.model.eval().encode_video(batch.clips.to(device))
            feats.append(x.float().cpu())
            labels.append(batch.labels)
    x, y = torch.cat(feats), torch.cat(labels).numpy()
    if loader.skipped.count:
        print(f"skipped {loader.skipped.count} unreadable video(s)")
    seen_emb = clf.embedder.embed(clf.seen_labels)
    class_emb = clf.embedder.embed(videos.classes)
    with torch.no_grad():
        seen_logits = clf.model.cls_head(x.to(device)).float().cpu().numpy()
    transfer = transfer_predictor(x, clf.seen_prototypes, seen_emb, class_emb, videos.classes,
                                  clf.k, clf.theta, clf.rho)
    rows = {name: i for i, name in enumerate(videos.classes)}

    def baseline(names):  # nearest seen label (the CLS head), then its most related candidate
        rel = cosine_similarity_matrix(class_emb[[rows[n] for n in names]], seen_emb)
        return semantic_space_baseline(seen_logits, rel)

    results = {"checkpoint": args.checkpoint, "videos": int(len(y)), "classes": len(videos.classes),
               "protocol": args.protocol}
    n_splits = 10 if args.protocol == "0/50" else 1
    results["transfer"] = evaluate_protocol(transfer, y, videos.classes, protocol=args.protocol, n_splits=n_splits)
    results["semantic_baseline"] = evaluate_protocol(baseline, y, videos.classes, protocol=args.protocol,
                                                     n_splits=n_splits)
    n_candidates = len(videos.classes) if args.protocol == "0/100" else len(videos.classes) // 2
    results["chance"] = 1.0 / max(n_candidates, 1)
    for key in ("transfer", "semantic_baseline"):
        if key in results:
            print(f"== {key.replace('_', ' ')} ==")
            print(format_results_table(results[key]))
    print(f"chance top-1: {results['chance']:.4f}")
    if args.report:
        write_results_json(args.report, results)
        print(f"report: {args.report}")
    return 0
