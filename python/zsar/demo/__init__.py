"""The main jobs, end to end on benchmarks zsar renders itself (``zsar demo``).

* :mod:`zsar.demo.rest` (``zsar demo``, ``--model rest``): ResT on the compositional benchmark
  (colour x shape x motion); seen-class visual prototypes transferred to held-out compositions
  through the semantic-relatedness integer program, against the semantic-space baseline.
* :mod:`zsar.demo.mzst` (``zsar demo --model mzst``): MZST on the audio-visual benchmark (shape x
  motion drawn, sound heard); audio + video against video only and audio only, ZSL and GZSL with
  calibrated stacking.

Both render real video files, decode them once (:mod:`zsar.data.cache`), run the pipeline every
run goes through (:class:`zsar.train.pipeline.Pipeline`: train, encode, zero-shot head, save),
evaluate through :mod:`zsar.eval.runner`, and write a JSON report, figures and a zero-shot
checkpoint for ``zsar predict``; what is theirs is the benchmark, the step timer and the report.

    from zsar.demo import DemoConfig, run_demo                  # ResT
    from zsar.demo import MZSTDemoConfig, run_mzst_demo         # MZST
"""

from .mzst import MZSTDemoConfig, format_mzst_report, mzst_quick_config, run_mzst_demo
from .rest import DemoConfig, format_report, quick_config, run_demo

__all__ = ["DemoConfig", "quick_config", "run_demo", "format_report", "MZSTDemoConfig", "mzst_quick_config",
           "run_mzst_demo", "format_mzst_report", "DEMOS"]

#: ``zsar demo --model NAME``: the demo's (config class, quick config, run, table formatter).
DEMOS = {
    "rest": (DemoConfig, quick_config, run_demo, format_report),
    "mzst": (MZSTDemoConfig, mzst_quick_config, run_mzst_demo, format_mzst_report),
}
