"""The channel test: a network's channels recovered layer by layer (``alignment.channels``), each layer's
output units scored on held-out weights against their own siblings (``margins``).

Each node's fingerprints are its kernel rows with the input channels in matched order. The columns
(input channel x kernel tap) are split in two halves: units are matched on one half and scored on the other,
so a match found by chance does not score. A copied channel matches its copy far better than any other
channel of its own layer; a channel of an independently trained network does not. The map used to align the
next layer is fitted on all columns of *this* layer, never on the next layer's own weights, so the next
layer's held-out score is not fitted to its own data.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..alignment.channels import ChannelAlignment, ChannelGraph, align_channels, graphs_agree
from ..sources import ModelSource
from .margins import ComponentTest, Margins, from_margins, not_run, sibling_margins, split_features

NAME = "channels"


def channel_test(src_a: ModelSource, src_b: ModelSource, ga: ChannelGraph, gb: ChannelGraph) -> ComponentTest:
    why = graphs_agree(ga, gb)
    if why is not None:
        return not_run(NAME, f"channels could not be aligned: {why}")
    result = ChannelAlignment()
    found: list[Margins] = []
    nodes = []
    for i, node in enumerate(align_channels(src_a, src_b, ga, gb, result)):
        entry = {"module": node.key, "units_a": node.fa.shape[0], "units_b": node.fb.shape[0], "tested": 0, "counterparts": 0}
        nodes.append(entry)
        if not node.scored:
            continue
        rng = np.random.default_rng(zlib.crc32(f"{NAME}:{node.key}".encode()))
        split = split_features(node.fa.shape[1], rng)
        if split is None:
            continue
        small_a = node.fa.shape[0] <= node.fb.shape[0]
        fs, fl = (node.fa, node.fb) if small_a else (node.fb, node.fa)
        m = sibling_margins(fs, np.full(fs.shape[0], i), fl, np.full(fl.shape[0], i), *split, rng)
        if m is None:
            continue
        found.append(m)
        entry.update(tested=int(m.margin.size), counterparts=int(m.counterpart.sum()), mean_margin=float(m.margin.mean()))
    details = {"graph": ga.describe(), "layers": nodes,
               "channel_maps": result.to_list()}
    if result.reason:
        details["stopped"] = result.reason
    if not found:
        return not_run(NAME, f"channels could not be aligned: {result.reason or 'no layer had enough channels to score'}")
    return from_margins(NAME, found, lambda n, k, mean, z: (
        f"{len([x for x in nodes if x['tested']])} layers aligned channel by channel from the input basis: "
        f"{k} of {n} channels of the narrower model match the other model better than their own siblings on "
        f"held-out weights (mean margin {mean:+.3f}, z = {z:.1f})"
    ), details)
