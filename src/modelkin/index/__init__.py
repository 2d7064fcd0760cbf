"""Fingerprints, the fingerprint index, 1-vs-N search, audits and lineage graphs.

Everything here sits above the comparison pipeline (``modelkin.api``) and reuses it: a fingerprint is a
weights format (``sources/fingerprint_format.py``) that the pipeline compares like any sampled model; the
index stores fingerprints and cheap sketches for pruning; search, audit and graph confirm candidates with
the calibrated compare.
"""
