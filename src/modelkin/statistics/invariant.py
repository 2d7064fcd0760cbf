"""Per component, the test that is invariant to permutations and rotations of hidden units.

Same-index tests see nothing once a copier has permuted or rotated hidden units, and they cannot compare
models of different widths at all. So every component present in both models gets one component-level test
that can:

* **shared-basis** (``shared_basis``): when both models embed inputs they share — token strings (a text
  component), pixels of a patch (a vision tower), or the vision tower's pixels seen through a projector.
* **channels** (``channel_test``): networks without such an embedding (CNNs, plain MLP stacks) whose first
  layer reads the input directly; channels are recovered layer by layer from that input basis.
* otherwise the test cannot run, and says why; the verdict then cannot be "independent" (see ``verdict``).
"""

from __future__ import annotations

from ..alignment import VocabMap, logical_shape
from ..alignment.channels import infer_graph
from ..inventory import Inventory, TensorEntry
from ..sources import ModelSource
from .channel_test import channel_test
from .margins import ComponentTest, not_run
from .shared_basis import Basis, head_counts, pixel_basis, shared_basis_test, token_basis

IMAGE_CHANNELS = 4  # a first kernel reading at most this many channels reads an image (RGB, RGBA, grey)
NO_BASIS = "channels could not be aligned: no input basis shared"


def _first(entries: list[TensorEntry], role: str) -> TensorEntry | None:
    return next((e for e in entries if e.role == role and len(e.shape) >= 2), None)


def _own_basis(src_a, src_b, ea: list[TensorEntry], eb: list[TensorEntry],
               vocab: VocabMap | None) -> tuple[Basis | None, str | None]:
    """The component's own shared basis, or why its embeddings give none (None, None: it has no embedding)."""
    emb_a, emb_b = _first(ea, "embedding"), _first(eb, "embedding")
    if emb_a is not None and emb_b is not None:
        basis = token_basis(src_a, src_b, emb_a, emb_b, vocab)
        return basis, None if basis else "too few token strings shared by the two vocabularies to fingerprint units"
    pe_a, pe_b = _first(ea, "patch_embed"), _first(eb, "patch_embed")
    if pe_a is not None and pe_b is not None:
        basis = pixel_basis(src_a, src_b, pe_a, pe_b)
        why = f"the patch embeddings read different pixel layouts ({list(pe_a.shape[1:])} vs {list(pe_b.shape[1:])})"
        return basis, None if basis else why
    return None, None


def component_tests(src_a: ModelSource, src_b: ModelSource, inv_a: Inventory, inv_b: Inventory,
                    vocab: VocabMap | None, components: list[str]) -> dict[str, list[ComponentTest]]:
    """Component name -> its invariant test(s) (one per component today)."""
    entries = {c: ([e for e in inv_a.tensors if e.component == c], [e for e in inv_b.tensors if e.component == c])
               for c in components}
    found = {c: _own_basis(src_a, src_b, *entries[c], vocab) for c in components}
    bases = {c: b for c, (b, _) in found.items()}
    out: dict[str, list[ComponentTest]] = {}
    for comp in components:
        ea, eb = entries[comp]
        if not any(e.evidence for e in ea) or not any(e.evidence for e in eb):
            continue  # nothing to test (only scalars, buffers, norm gains, biases): not counted at all
        basis, why_not = found[comp]
        if why_not is not None:
            out[comp] = [not_run("shared-basis", f"{NO_BASIS}: {why_not}")]
        elif basis is not None:
            heads = (head_counts(src_a.config), head_counts(src_b.config)) if basis.kind == "tokens" else (None, None)
            out[comp] = [shared_basis_test(src_a, src_b, ea, eb, basis, comp, heads=heads)]
        elif comp == "projector" and bases.get("vision") is not None and bases["vision"].kind == "pixels":
            # A projector reads the vision tower's stream: its units are fingerprinted through the pixels.
            out[comp] = [shared_basis_test(src_a, src_b, ea, eb, bases["vision"], comp, residual=False)]
        else:
            out[comp] = [_channels(src_a, src_b, inv_a, inv_b, comp, ea, eb)]
    return out


def _channels(src_a, src_b, inv_a: Inventory, inv_b: Inventory, comp: str, ea, eb) -> ComponentTest:
    ga, gb = infer_graph(ea), infer_graph(eb)
    if ga is None or gb is None:
        return not_run("channels", f"{NO_BASIS} (no layer with channels to align)")
    if not (ga.input_found and gb.input_found):
        return not_run("channels", f"{NO_BASIS}: no layer reads an input of a width the network does not also "
                                   "produce inside, so the layer reading the input could not be identified")
    first = ga.nodes[0].entry
    reads_image = len(first.shape) >= 3 and logical_shape(first)[1] <= IMAGE_CHANNELS
    whole_network = all(e.component == comp for e in inv_a.tensors if e.evidence) and all(
        e.component == comp for e in inv_b.tensors if e.evidence)
    if not (reads_image or whole_network):
        return not_run("channels", f"{NO_BASIS}: its first layer ({ga.nodes[0].key}) reads the hidden units of "
                                   "another part of the model, not an input both models share")
    return channel_test(src_a, src_b, ga, gb)
