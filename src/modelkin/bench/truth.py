"""Ground truth about *structure* for derived zoo pairs, read from the zoo's recipes (never from scores).

Depth pruning, up-scaling and width growth (a layer inserted) fix which layer of the child came from which
layer of the parent; width pruning fixes the fraction of FFN units kept; a permuted and pruned ResNet fixes
every channel map. The bench checks modelkin's layer map, kept-unit fraction and channel maps against these.
"""

from __future__ import annotations

import json
from pathlib import Path


def _config(root: Path, rel: str) -> dict:
    try:
        return json.loads((root / rel / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _recipe(manifest: dict, rel_b: str) -> dict:
    model_id = Path(rel_b).name
    return (manifest.get("models", {}).get(model_id) or {}).get("recipe") or {}


def expected_structure(root: Path, manifest: dict, pair: dict) -> dict | None:
    """{"layer_pairs": ...}, {"kept_unit_fraction": x}, {"experts": {layer: [[a, b], ...]}} or
    {"matching_roles_within": [...]} (what may match in a shared-embedding pair), or None."""
    kind = pair.get("kind")
    recipe = _recipe(manifest, pair["b"])
    n = _config(root, pair["a"]).get("num_hidden_layers")
    if kind == "depth_pruning" and isinstance(n, int) and "n_drop" in recipe:
        drop = set(range(n - 1 - recipe["n_drop"], n - 1))  # as zoo.derive.drop_layers
        keep = [i for i in range(n) if i not in drop]
        return {"layer_pairs": [[a, b] for b, a in enumerate(keep)]}
    if kind == "depth_upscaling" and isinstance(n, int) and "overlap" in recipe:
        k = recipe["overlap"]
        keep = list(range(n - k)) + list(range(k, n))  # as zoo.derive.upscale_depth
        return {"layer_pairs": [[a, b] for b, a in enumerate(keep)]}
    order = (manifest.get("models", {}).get(Path(pair["b"]).name) or {}).get("expert_order")
    if kind == "permutation" and order:
        # B's expert j is A's expert order[j]: A's expert i went to the j with order[j] == i.
        return {"experts": {layer: sorted([i, j] for j, i in enumerate(o)) for layer, o in order.items()}}
    if kind == "width_growth" and isinstance(n, int) and recipe.get("insert_layer"):
        inserted = n // 2 + 1  # as zoo.reshape.widen_decoder: a new layer at this index of the child
        return {"layer_pairs": [[i, i if i < inserted else i + 1] for i in range(n)]}
    meta_b = manifest.get("models", {}).get(Path(pair["b"]).name) or {}
    if kind == "cnn_permute_prune" and "channel_permutation" in meta_b:
        return {"channel_maps": _resnet_channel_truth(meta_b)}
    if kind == "shared_embedding_init":
        # Only the token embedding started from the same vectors. Trained on, it also fixes the residual
        # basis the output head writes its token rows in, so the head may match too; no layer may.
        return {"matching_roles_within": ["embedding", "lm_head"]}
    if kind == "width_pruning":
        fa = _config(root, pair["a"]).get("intermediate_size")
        fb = _config(root, pair["b"]).get("intermediate_size")
        if isinstance(fa, int) and isinstance(fb, int) and fa:
            return {"kept_unit_fraction": fb / fa}
    return None


def _resnet_channel_truth(meta: dict) -> dict[str, list[list[int]]]:
    """Expected [channel of parent, channel of child] pairs per channel map, keyed by its first module
    (the zoo's ResNets: one stream per stage, one inner axis per block; see zoo.reshape)."""
    perm, kept = meta["channel_permutation"], meta["kept_inner_channels"]
    # Child channel b of a stream is parent channel stream[b]; of a pruned inner axis, parent inner[keep[b]].
    out = {"conv1": sorted([a, b] for b, a in enumerate(perm["stream"][0]))}
    for block, inner, keep in zip(perm["blocks"], perm["inner"], kept):
        out[block + "conv1"] = sorted([inner[k], b] for b, k in enumerate(keep))
    for stage, stream in enumerate(perm["stream"][1:], start=2):  # a later stage's stream: first written by conv2
        out[f"layer{stage}.0.conv2"] = sorted([a, b] for b, a in enumerate(stream))
    return out


def observed_structure(result, expected: dict) -> dict:
    """What modelkin reported for the same fact, and whether it matches."""
    if "channel_maps" in expected:
        comp = result.components.get("vision")
        tests = comp.invariant_tests if comp else []
        got = {m["modules"][0]: sorted(m["pairs"]) for t in tests for m in t.get("channel_maps", [])}
        return {"got": got, "ok": got == expected["channel_maps"]}
    text = result.components.get("text")
    if "layer_pairs" in expected:
        got = text.layer_map.get("pairs") if text else None
        return {"got": got, "ok": got == expected["layer_pairs"]}
    if "matching_roles_within" in expected:
        got = text.matching_roles if text else None
        ok = bool(got) and "embedding" in got and set(got) <= set(expected["matching_roles_within"])
        return {"got": got, "ok": ok}
    if "experts" in expected:
        got = text.layer_map.get("experts") if text else None
        return {"got": got, "ok": got == expected["experts"]}
    fractions = sorted({round(t.kept_unit_fraction, 6) for t in result.tensors if t.kept_unit_fraction is not None})
    want = round(expected["kept_unit_fraction"], 6)
    return {"got": fractions, "ok": fractions == [want]}
