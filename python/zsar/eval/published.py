"""Published GZSL results on the AVCA-GZSL benchmarks, as reference rows beside a run.

Figures are copied from the papers and the authors' repositories (percent, stage-2 test set):

* ``main_split`` (SeLaVi features): AVCA and TCaF S/U/HM from the MZST paper's Table 6 and ZSL from its
  Table 5 (AVCA's own numbers, Mercea et al., CVPR 2022, README of ExplainableML/AVCA-GZSL: HM 6.31 /
  27.15 / 12.13, ZSL 6.00 / 20.01 / 9.13); MZST on the same features: Table 6's "MZST (VGG)" row and
  Table 5's "VGG†" row (Doshi et al., the MZST paper, §5.3).
* ``cls_split`` (C3D/VGGish features): HM and ZSL of AVCA (README of ExplainableML/AVCA-GZSL, "Using
  VGGish/C3D features") and of TCaF (Mercea et al., ECCV 2022, README of ExplainableML/TCAF-GZSL); those
  sources give no S and U, which stay empty.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PUBLISHED_GZSL", "published_reports"]

_MZST_T5_T6 = "Doshi et al., MZST paper, Tables 5-6"
_AVCA_README = "Mercea et al. CVPR 2022 (AVCA), github ExplainableML/AVCA-GZSL README"
_TCAF_README = "Mercea et al. ECCV 2022 (TCaF), github ExplainableML/TCAF-GZSL README"

#: (model, dataset, split) -> (S, U, HM, ZSL, source); None where the source gives no figure.
PUBLISHED_GZSL: dict[tuple[str, str, str], tuple[Any, ...]] = {
    ("AVCA", "vggsound", "main_split"): (14.90, 4.00, 6.31, 6.00, _MZST_T5_T6),
    ("AVCA", "ucf", "main_split"): (51.53, 18.43, 27.15, 20.01, _MZST_T5_T6),
    ("AVCA", "activitynet", "main_split"): (24.86, 8.02, 12.13, 9.13, _MZST_T5_T6),
    ("TCaF", "vggsound", "main_split"): (9.64, 5.91, 7.33, 6.06, _MZST_T5_T6),
    ("TCaF", "ucf", "main_split"): (58.60, 21.74, 31.72, 24.81, _MZST_T5_T6),
    ("TCaF", "activitynet", "main_split"): (18.70, 7.50, 10.71, 7.91, _MZST_T5_T6),
    ("MZST (VGG features)", "vggsound", "main_split"): (15.73, 6.01, 8.69, 16.23, _MZST_T5_T6),
    ("MZST (VGG features)", "ucf", "main_split"): (53.86, 20.67, 30.08, 31.35, _MZST_T5_T6),
    ("MZST (VGG features)", "activitynet", "main_split"): (28.32, 14.17, 18.88, 19.3, _MZST_T5_T6),
    ("AVCA", "vggsound", "cls_split"): (None, None, 8.31, 6.91, _AVCA_README),
    ("AVCA", "ucf", "cls_split"): (None, None, 41.34, 37.72, _AVCA_README),
    ("AVCA", "activitynet", "cls_split"): (None, None, 9.92, 7.58, _AVCA_README),
    ("TCaF", "vggsound", "cls_split"): (None, None, 8.77, 7.41, _TCAF_README),
    ("TCaF", "ucf", "cls_split"): (None, None, 50.78, 44.64, _TCAF_README),
    ("TCaF", "activitynet", "cls_split"): (None, None, 12.20, 7.96, _TCAF_README),
}


def published_reports(dataset: str, split: str) -> list[dict[str, Any]]:
    """The published rows of one benchmark in the form of a run's report.

    Args:
        dataset: ``ucf``, ``activitynet`` or ``vggsound``.
        split: ``main_split`` or ``cls_split``.

    Returns:
        ``[{"model": "<name> (published)", "dataset", "split", "test": {S, U, HM, ZSL as fractions, None where
        not published}, "source"}]``, for :func:`zsar.eval.format_gzsl_table` beside a run's report.
    """
    out = []
    for (model, ds, sp), (*scores, source) in PUBLISHED_GZSL.items():
        if ds == dataset and sp == split:
            test = {k: (None if v is None else v / 100.0) for k, v in zip(("S", "U", "HM", "ZSL"), scores)}
            out.append({"model": f"{model} (published)", "dataset": ds, "split": sp, "test": test, "source": source})
    return out
