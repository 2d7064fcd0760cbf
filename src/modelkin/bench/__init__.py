"""The bench: modelkin against the public baselines on a zoo of models with known lineage.

``run_bench(zoo_dir, json_out=None, threads=2)`` runs every pair of ``zoo_dir/manifest.json`` and returns an
exit code (0, or 1 when some pair failed to run); ``modelkin bench DIR [--json PATH]`` calls it.
"""

from .baselines import BASELINES, BaselineScore, layernorm_cosine, raw_pearson, std_profile
from .harness import load_manifest, run_bench, run_pair, summarize
from .scoring import auc, calibration, fpr, tpr

__all__ = [
    "BASELINES", "BaselineScore", "auc", "calibration", "fpr", "layernorm_cosine", "load_manifest",
    "raw_pearson", "run_bench", "run_pair", "std_profile", "summarize", "tpr",
]
