"""Statistics: per-tensor evidence tests (permutation nulls with normal tails; the realigned test's stated assumption), and their combination."""

from .anchored import Anchor, anchored_evidence, find_anchor
from .evidence import pair_evidence
from .pvalues import log10_bonferroni, log10_p_two_sided, z_for_log10_p
from .unit_test import EVIDENCE_CLASS, UnitTest, tensor_evidence, unit_permutation_test

__all__ = [
    "EVIDENCE_CLASS", "Anchor", "UnitTest", "anchored_evidence", "find_anchor", "log10_bonferroni", "log10_p_two_sided",
    "pair_evidence", "tensor_evidence", "unit_permutation_test", "z_for_log10_p",
]
