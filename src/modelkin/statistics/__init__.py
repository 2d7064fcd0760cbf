"""Statistics: per-tensor evidence tests with exact permutation nulls, and their combination."""

from .pvalues import log10_bonferroni, log10_p_two_sided, z_for_log10_p
from .unit_test import UnitTest, tensor_evidence, unit_permutation_test

__all__ = ["UnitTest", "log10_bonferroni", "log10_p_two_sided", "tensor_evidence", "unit_permutation_test", "z_for_log10_p"]
