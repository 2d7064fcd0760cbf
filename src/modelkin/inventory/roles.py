"""Canonical tensor roles, and what each role can and cannot tell about lineage.

A role says what a tensor does, whatever a family calls it. Two facts hang off it:

* ``evidence``: whether matching values can indicate a shared origin. Norm gains start at 1 in every model,
  so their cosine is ~0.99 for any pair; fixed buffers (rotary frequencies, position ids, masks) are equal
  by construction; biases and scalars are too short or too constrained to discriminate. Such tensors are
  reported, labelled with ``non_evidence_reason``, and never counted.
* ``unit_axes``: the axes whose indices are *exchangeable between independently trained models* (hidden
  units, channels, heads, experts). Permuting one of them yields the null distribution of a similarity
  statistic. Axes indexed by things every model learns alike (token ids, positions, RoPE frequency rows,
  image-patch pixels, class labels) are never permuted: shuffling them would make ordinary shared
  structure look like evidence.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    evidence: bool
    unit_axes: tuple[int, ...]  # axes of the stored [out, in, ...] tensor that may be permuted
    non_evidence_reason: str | None = None


def _r(name: str, unit_axes: tuple[int, ...], reason: str | None = None) -> Role:
    return Role(name, reason is None, unit_axes, reason)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        _r("embedding", (1,)),  # rows are token ids: shared vocabulary, not exchangeable
        _r("position_embedding", (1,)),  # rows are positions: every model learns smooth position codes
        _r("token_type_embedding", (1,)),
        _r("lm_head", (1,)),
        _r("attn.q", (1,)),  # output rows carry RoPE frequency structure; the residual input axis is free
        _r("attn.k", (1,)),
        _r("attn.v", (0, 1)),
        _r("attn.o", (0, 1)),
        _r("attn.qkv", (1,)),
        _r("mlp.gate", (0, 1)),
        _r("mlp.up", (0, 1)),
        _r("mlp.down", (0, 1)),
        _r("mlp.gate_up", (1,)),
        _r("router", (0, 1)),
        _r("conv", (0, 1)),  # output or input channels; never the spatial taps
        _r("patch_embed", (0,)),  # input axes are RGB x pixel positions
        _r("projector", (0, 1)),
        _r("pooler", (0, 1)),
        _r("head", (0, 1)),
        _r("classifier", (1,)),  # rows are class labels shared by the task
        _r("other", (0, 1)),
        _r("norm", (), "norm gains start at 1 and biases at 0 in every model: similar for any pair"),
        _r("buffer", (), "fixed buffer, equal by construction (not learned)"),
        _r("scalar", (), "a handful of values cannot discriminate"),
    )
}

# Parameter names (last name segment) whose values are statistics or counters, not learned weights.
PARAM_NON_EVIDENCE: dict[str, str] = {
    "running_mean": "BatchNorm running statistics describe the data, not the weights' origin",
    "running_var": "BatchNorm running statistics describe the data, not the weights' origin",
    "num_batches_tracked": "a step counter",
    "bias": "biases are short and start at 0 in every model: too little to discriminate",
    "weight_scale_inv": "a quantisation scale derived from the weight it scales: no evidence of its own",
    "weight_scale": "a quantisation scale derived from the weight it scales: no evidence of its own",
    "scales": "a quantisation scale derived from the weight it scales: no evidence of its own",
}


def role(name: str) -> Role:
    return ROLES[name]
