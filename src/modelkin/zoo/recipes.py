"""What the zoo contains: model recipes and the labelled pairs built from them.

A recipe is a plain dict (``id``, ``op`` and the op's arguments); ``build.py`` executes them in
order, so a parent always precedes its children.  Pairs only reference recipe ids.

``strength`` per kind (``None`` where the kind has no knob):
  finetune_short / finetune_long / continued_pretraining / component_graft / moe_upcycling:
      training steps of the derivation as a fraction of the parent's pre-training steps;
  lora_merged: LoRA rank;  quant_4bit: group size;  rescaling: largest scale factor;
  depth_pruning: fraction of layers removed;  depth_upscaling: fraction of layers added;
  width_pruning: fraction of FFN units removed;  vocab_extension: tokens added / vocab size;
  vocab_pruning: fraction of the merged tokens targeted for removal (unreachable merges go too);  permutation / rotation: fine-tune steps
  after the transform as a fraction of pre-training;  merge: the parent's weight in the average;
  width_growth: new hidden width / old;  cnn_permute_prune: fraction of each block's inner channels pruned.

Shapes that differ (``independent_width``: another width, depth and tokenizer; ``width_growth``;
``cnn_permute_prune``) have no same-shape tensors to compare: they exercise the shared-basis and channel tests.
"""

from __future__ import annotations

from itertools import combinations

# Which components each family has (used to label pairs component by component).
COMPONENTS = {
    "qwen2": ("text",), "qwen3": ("text",), "qwen3_moe": ("text",), "bert": ("text",),
    "qwen2_5_vl": ("vision", "projector", "text"), "qwen2_5_vl_vision": ("vision", "projector"),
    "resnet": ("vision",),
}

# Architecture presets per build size.  Every text model of a size shares hidden width, so the
# cross-family independent pairs compare equal widths.
PRESETS = {
    "smoke": {
        "H": 64, "layers": 3, "vocab": 512, "steps": 120,
        # patch 8 on 32x32 images: 16 patches -> 4 image tokens; keeps the smoke VLMs cheap
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 8},
        "resnet": {"widths": [16, 32], "blocks": [1, 1]}, "images": 1024,
    },
    # The shipped examples/ (<= 5 MB together): hidden 64, 2 layers, vocab 512.
    "examples": {
        "H": 64, "layers": 2, "vocab": 512, "steps": 250,
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 8},
        "resnet": {"widths": [32, 64], "blocks": [1, 1]}, "images": 1024,
    },
    # Hard negatives: smoke-sized families trained 10x longer (towards a plateau of the held-out loss),
    # distillation pairs and shared-embedding-init pairs.
    "hard": {
        "H": 64, "layers": 3, "vocab": 512, "steps": 120, "long_steps": 1200,
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 8},
        "resnet": {"widths": [32, 64], "blocks": [1, 1]}, "images": 1024,
    },
    # Many cheap independent pairs for the calibration of every test: N small seeds, every pair.
    "null": {
        "H": 64, "layers": 2, "vocab": 512, "steps": 120, "n_seeds": 25,
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "patch_size": 8},
        "resnet": {"widths": [32, 64], "blocks": [1, 1]}, "images": 1024,
    },
    "full": {
        "H": 128, "layers": 4, "vocab": 1024, "steps": 300,
        "vision": {"depth": 3, "hidden_size": 96, "intermediate_size": 192, "num_heads": 4},
        "resnet": {"widths": [64, 128], "blocks": [1, 1]}, "images": 2048,
    },
}


SEED_STRIDE = 100_003  # zoo seed S adds S * SEED_STRIDE to every seed of a recipe (a fresh instance)
SEEDED = ("seed", "batch_seed")


class Plan:
    """Collects recipes and pairs, with small helpers that keep the listing below readable.

    ``zoo_seed`` S > 0 makes a fresh instance of the same zoo: every initialisation, batch order and
    derivation seed is shifted by S * SEED_STRIDE (ids, data and labels stay), so a bench can run on a
    zoo no threshold was tuned on.
    """

    def __init__(self, size: str, zoo_seed: int = 0):
        self.size = size
        self.zoo_seed = zoo_seed
        self.p = PRESETS[size]
        self.models: dict[str, dict] = {}
        self.pairs: list[dict] = []

    def model(self, id: str, op: str, **kw) -> str:
        if id not in self.models:
            for key in SEEDED:
                if kw.get(key) is not None:
                    kw[key] = kw[key] + self.zoo_seed * SEED_STRIDE
            self.models[id] = {"id": id, "op": op, **kw}
        return id

    def base(self, family: str, seed: int, data: str = "A", tok: str = "A", steps: int | None = None,
             batch_seed: int | None = None, images: int = 0, vocab: int | None = None, **extra) -> str:
        vocab = vocab or self.p["vocab"]
        tag = f"{family}-{data}-t{tok}{vocab}-s{seed}" + (f"-b{batch_seed}" if batch_seed is not None else "")
        if extra.get("arch"):  # overrides of the size preset: H, layers, ffn, heads, kv
            tag += "-" + "".join(f"{k}{v}" for k, v in sorted(extra["arch"].items()))
        if family in ("resnet", "qwen2_5_vl_vision"):
            tag = f"{family}-img{images}-s{seed}"
        elif family == "qwen2_5_vl":
            tag += f"-img{images}"
        if extra.get("holdout"):  # trained long, to a plateau of the held-out loss
            tag += f"-long{steps}"
        if extra.get("hidden"):
            tag += f"-h{extra['hidden']}"
        if extra.get("embed_from"):
            tag += "-embinit"
        return self.model(tag, "base", family=family, seed=seed, data=data, tok=f"{tok}:{vocab}",
                          steps=steps or self.p["steps"], batch_seed=batch_seed, images=images, **extra)

    def derive(self, kind: str, parent: str, op: str, suffix: str, **kw) -> str:
        return self.model(f"{parent}~{suffix}", op, parent=parent, kind=kind, **kw)

    def pair(self, kind: str, a: str, b: str, label: str, strength=None, **components) -> None:
        self.pairs.append({"kind": kind, "a": a, "b": b, "label": label, "strength": strength,
                           "components": components})

    def related(self, kind: str, parent: str, child: str, strength=None, **components) -> None:
        self.pair(kind, parent, child, "related", strength, **components)

    def steps_frac(self, steps: int) -> float:
        return round(steps / self.p["steps"], 3)


def family_of(recipes: dict[str, dict], model_id: str) -> str:
    r = recipes[model_id]
    while "family" not in r:
        if r["op"] == "upcycle":
            return "qwen3_moe"
        r = recipes[r["parent"]]
    return r["family"]


def plan(size: str, zoo_seed: int = 0) -> Plan:
    return {"smoke": _smoke, "full": _full, "examples": _examples, "hard": _hard, "null": _null}[size](zoo_seed)


# ---------------------------------------------------------------------------------------------


def _add_function_preserving(P: Plan, parent: str, seed: int, ft: int, kinds=("permutation", "rotation", "rescaling"),
                             rescale: float = 4.0) -> dict[str, str]:
    out = {}
    ops = {"permutation": "permute", "rotation": "rotate", "rescaling": "rescale"}
    for kind in kinds:
        child = P.derive(kind, parent, ops[kind], f"{kind}{seed}", seed=seed, steps=ft, data="B",
                         strength=rescale if kind == "rescaling" else None)
        P.related(kind, parent, child, rescale if kind == "rescaling" else P.steps_frac(ft))
        out[kind] = child
    return out


def _widen(P: Plan, parent: str, factor: float, seed: int, steps: int) -> str:
    """Net2Net-style growth of a decoder of the preset size (4 heads, 2 per kv head): same head size, more heads."""
    H, head = int(P.p["H"] * factor), P.p["H"] // 4
    child = P.derive("width_growth", parent, "widen", f"wide{H}", hidden=H, intermediate=2 * H, heads=H // head,
                     kv_heads=H // head // 2, insert_layer=True, seed=seed, steps=steps, data="B")
    P.related("width_growth", parent, child, factor)
    return child


def _permute_prune(P: Plan, parent: str, seed: int, steps: int, fraction: float = 0.2) -> str:
    child = P.derive("cnn_permute_prune", parent, "permute_prune", f"pp{int(fraction * 100)}", fraction=fraction,
                     seed=seed, steps=steps, images=seed % 7)
    P.related("cnn_permute_prune", parent, child, fraction)
    return child


def _smoke(zoo_seed: int = 0) -> Plan:
    P = Plan("smoke", zoo_seed)
    s = P.p["steps"]
    a1, a2, a3 = P.base("qwen2", 1), P.base("qwen2", 2), P.base("qwen2", 3)
    for a, b in ((a1, a2), (a1, a3), (a2, a3)):  # three, so baselines with a measured null have one
        P.pair("independent_seed", a, b, "independent")
    ft = P.derive("finetune_short", a1, "finetune", "ft30C", data="C", steps=30, seed=101)
    P.related("finetune_short", a1, ft, P.steps_frac(30))
    _add_function_preserving(P, a1, 7, ft=20)
    q = P.derive("quant_int8", a1, "quant", "int8", bits=8, group=None)
    P.related("quant_int8", a1, q)
    dp = P.derive("depth_pruning", a1, "drop_layers", "drop1", n_drop=1, steps=40, data="A", seed=102)
    P.related("depth_pruning", a1, dp, round(1 / P.p["layers"], 3))
    # VLMs: two independent donors, and a graft of donor 1's vision tower onto a fresh text tower.
    v1, v2 = P.base("qwen2_5_vl", 61, images=0), P.base("qwen2_5_vl", 62, images=1)
    P.pair("independent_seed", v1, v2, "independent")
    g = P.model(f"{v1}~graft", "graft", parent=v1, kind="component_graft", seed=63, data="B",
                images=2, steps=s, with_projector=True)
    P.pair("component_graft", v1, g, "related", P.steps_frac(s),
           vision="related", projector="related", text="independent")
    # Shapes differ: a width-grown child; an independent model of another width, depth and tokenizer (same
    # data), also against the VLM's text tower (another family); a permuted, pruned, fine-tuned ResNet.
    _widen(P, a1, 1.5, seed=103, steps=30)
    wide = P.base("qwen2", 3, tok="B", vocab=384, steps=80, arch={"H": 96, "layers": 2, "ffn": 256, "heads": 6, "kv": 3})
    P.pair("independent_width", a1, wide, "independent")
    P.pair("independent_family", v1, wide, "independent")
    # (Independent ResNets of this width have too few channels for an "independent" verdict: the full plan
    # and the unit tests hold them.)
    _permute_prune(P, P.base("resnet", 81, images=0, steps=100), seed=104, steps=20)
    return P


# Names of the shipped examples -> recipe ids (scripts/make_examples.py copies them out).
EXAMPLES: dict[str, str] = {}


def _examples(zoo_seed: int = 0) -> Plan:
    P = Plan("examples", zoo_seed)
    base = P.base("qwen2", 1)
    ft = P.derive("finetune_long", base, "finetune", "ftC120", data="C", steps=120, seed=101)
    P.related("finetune_long", base, ft, P.steps_frac(120))
    other = P.base("qwen2", 2)
    P.pair("independent_seed", base, other, "independent")
    donor = P.base("qwen2_5_vl", 61, images=0)
    # The graft copies the vision tower but not the merger: like a vendor adopting an external
    # encoder and training its own projector and language model.
    graft = P.model(f"{donor}~graft", "graft", parent=donor, kind="component_graft", seed=63, data="B",
                    images=2, steps=P.p["steps"], with_projector=False)
    P.pair("component_graft", donor, graft, "related", 1.0,
           vision="related", projector="independent", text="independent")
    EXAMPLES.update({"base": base, "finetuned": ft, "independent": other, "vlm-donor": donor, "vlm-graft": graft})
    return P


def _full(zoo_seed: int = 0) -> Plan:  # noqa: C901  (a long but flat listing)
    P = Plan("full", zoo_seed)
    S, L = P.p["steps"], P.p["layers"]
    q2 = [P.base("qwen2", s) for s in range(1, 7)]  # the workhorse family, corpus A
    for a, b in combinations(q2, 2):
        P.pair("independent_seed", a, b, "independent")

    # --- fine-tuning family of kinds
    for i, parent in enumerate(q2[:3]):
        c = P.derive("finetune_short", parent, "finetune", "ftC30", data="C", steps=30, seed=200 + i)
        P.related("finetune_short", parent, c, P.steps_frac(30))
        c = P.derive("finetune_long", parent, "finetune", "ftB150", data="B", steps=150, seed=210 + i)
        P.related("finetune_long", parent, c, P.steps_frac(150))
        P.pair("independent_seed", c, q2[(i + 1) % 6], "independent")  # hard negative: child vs stranger
    for i, parent in enumerate(q2[:5]):
        c = P.derive("continued_pretraining", parent, "finetune", "cptD", data="D", steps=S, seed=220 + i)
        P.related("continued_pretraining", parent, c, 1.0)
        rank = (4, 8, 16, 4, 8)[i]
        c = P.derive("lora_merged", parent, "lora", f"lora{rank}", data="C", steps=100, rank=rank, seed=230 + i)
        P.related("lora_merged", parent, c, rank)

    # --- numeric formats
    for parent in q2[:2]:
        P.related("quant_int8", parent, P.derive("quant_int8", parent, "quant", "int8", bits=8, group=None))
    for parent, group in ((q2[0], 32), (q2[1], 128)):
        P.related("quant_4bit", parent, P.derive("quant_4bit", parent, "quant", f"q4g{group}", bits=4, group=group),
                  group)
    for parent in q2[:2]:
        for kind, dt in (("cast_fp16", "float16"), ("cast_bf16", "bfloat16")):
            P.related(kind, parent, P.derive(kind, parent, "cast", dt, dtype=dt))

    # --- structural edits of the decoder
    for i, parent in enumerate(q2[:5]):
        n_drop = 1 + i % 2
        c = P.derive("depth_pruning", parent, "drop_layers", f"drop{n_drop}", n_drop=n_drop, steps=100,
                     data="A", seed=240 + i)
        P.related("depth_pruning", parent, c, round(n_drop / L, 3))
        if i == 0:
            P.pair("independent_seed", c, q2[1], "independent")
        overlap = (1, 0)[i % 2]  # 0: the whole stack twice; 1: Solar's "drop k at the seam"
        c = P.derive("depth_upscaling", parent, "upscale_depth", f"dus{overlap}", overlap=overlap, steps=150,
                     data="A", seed=250 + i)
        P.related("depth_upscaling", parent, c, round((L - 2 * overlap) / L, 3))
        frac = (0.25, 0.5)[i % 2]
        c = P.derive("width_pruning", parent, "prune_ffn", f"ffn{int(frac * 100)}", fraction=frac, steps=100,
                     data="A", seed=260 + i)
        P.related("width_pruning", parent, c, frac)
        n_new = (32, 64, 128, 32, 64)[i]
        c = P.derive("vocab_extension", parent, "vocab_extend", f"ext{n_new}", n_new=n_new, steps=100,
                     data="C", seed=270 + i)
        P.related("vocab_extension", parent, c, round(n_new / P.p["vocab"], 3))
        keep = (0.5, 0.75)[i % 2]
        c = P.derive("vocab_pruning", parent, "vocab_prune", f"keep{int(keep * 100)}", keep=keep, steps=50,
                     data="A", seed=280 + i)
        P.related("vocab_pruning", parent, c, 1 - keep)

    # --- function-preserving re-parametrisations (+ fine-tune)
    for i, parent in enumerate(q2[:4]):
        made = _add_function_preserving(P, parent, 300 + i, ft=(0, 30, 60, 100)[i], rescale=(2.0, 4.0, 8.0, 16.0)[i])
        if i == 1:
            P.pair("independent_seed", made["permutation"], q2[4], "independent")
            P.pair("independent_seed", made["rotation"], q2[5], "independent")

    # --- merges (each merge is related to both of its parents)
    for a, b, w in ((q2[0], q2[1], 0.5), (q2[2], q2[3], 0.8), (q2[4], q2[5], 0.5)):
        m = P.model(f"merge-{a}+{b}-{int(w * 100)}", "merge", parent=a, other=b, weight=w, kind="merge")
        P.related("merge", a, m, w)
        P.related("merge", b, m, round(1 - w, 3))

    # --- data / tokenizer controls
    shared = [P.base("qwen2", s, data="C", batch_seed=500 + s) for s in range(1, 6)]
    for s, c in zip(q2, shared):
        P.related("shared_init", s, c)
    qb = [P.base("qwen2", s, data="B") for s in (11, 12)]
    for a in q2[:4]:
        for b in qb:
            P.pair("independent_data", a, b, "independent")
    for i in range(4):  # different seed *and* different data
        P.pair("independent_data", q2[i], shared[(i + 1) % 5], "independent")
    qt = [P.base("qwen2", 21, tok="B"), P.base("qwen2", 22, tok="D", vocab=768)]
    for a in q2[:4]:
        for b in qt:
            P.pair("independent_tokenizer", a, b, "independent")

    # --- qwen3 dense -> MoE upcycling; MoE from scratch
    q3 = [P.base("qwen3", s) for s in range(31, 36)]
    for i, parent in enumerate(q3):
        c = P.derive("moe_upcycling", parent, "upcycle", "moe4", experts=4, top_k=2, steps=150, data="A",
                     seed=600 + i)
        P.related("moe_upcycling", parent, c, P.steps_frac(150))
    for a, b in list(combinations(q3, 2))[:4]:
        P.pair("independent_seed", a, b, "independent")
    moe = [P.base("qwen3_moe", s) for s in (41, 42)]
    P.pair("independent_seed", moe[0], moe[1], "independent")
    made = _add_function_preserving(P, moe[0], 700, ft=30, rescale=4.0)
    P.pair("independent_seed", made["permutation"], moe[1], "independent")
    for kind, op, kw in (("quant_int8", "quant", {"bits": 8, "group": None}),
                         ("quant_4bit", "quant", {"bits": 4, "group": 64}),
                         ("cast_bf16", "cast", {"dtype": "bfloat16"})):
        P.related(kind, moe[0], P.derive(kind, moe[0], op, kind, **kw), kw.get("group"))

    # --- BERT
    bert = [P.base("bert", s) for s in (51, 52, 53)]
    for a, b in combinations(bert, 2):
        P.pair("independent_seed", a, b, "independent")
    _generic_derivations(P, bert[0], bert[1], text=True, seed=800)

    # --- standalone vision tower and ResNet (vision component)
    vit = [P.base("qwen2_5_vl_vision", s, images=0) for s in (71, 72, 73)]
    for a, b in combinations(vit, 2):
        P.pair("independent_seed", a, b, "independent")
    _generic_derivations(P, vit[0], vit[1], text=False, seed=810)
    res = [P.base("resnet", s, images=0, steps=200) for s in (81, 82, 83)]
    for a, b in combinations(res, 2):
        P.pair("independent_seed", a, b, "independent")
    _generic_derivations(P, res[0], res[1], text=False, seed=820)

    # --- VLMs: donors, grafts, and format derivations
    donors = [P.base("qwen2_5_vl", s, images=s % 3) for s in range(61, 66)]
    for a, b in list(combinations(donors, 2))[:6]:
        P.pair("independent_seed", a, b, "independent")
    grafts = []
    for i, d in enumerate(donors):
        with_proj = i % 2 == 0
        g = P.model(f"{d}~graft{i}", "graft", parent=d, kind="component_graft", seed=900 + i, data="B",
                    images=3 + i, steps=S, with_projector=with_proj)
        grafts.append(g)
        P.pair("component_graft", d, g, "related", 1.0, vision="related",
               projector="related" if with_proj else "independent", text="independent")
    P.pair("independent_seed", grafts[0], donors[1], "independent")
    for kind, op, kw in (("quant_int8", "quant", {"bits": 8, "group": None}),
                         ("quant_4bit", "quant", {"bits": 4, "group": 32}),
                         ("cast_bf16", "cast", {"dtype": "bfloat16"}),
                         ("finetune_short", "finetune", {"data": "C", "steps": 30, "seed": 950, "images": 5})):
        strength = kw.get("group") if kind == "quant_4bit" else (P.steps_frac(30) if "steps" in kw else None)
        P.related(kind, donors[0], P.derive(kind, donors[0], op, kind, **kw), strength)
    P.related("permutation", donors[1], P.derive("permutation", donors[1], "permute", "perm", seed=960,
                                                 steps=30, data="B", images=5), P.steps_frac(30))

    # --- different families of equal width (text hidden = H everywhere)
    for a, b in ((q2[0], bert[0]), (q2[1], q3[0]), (q2[2], moe[0]), (q2[3], donors[0]), (bert[1], moe[1]),
                 (q3[1], donors[1]), (vit[0], donors[2]), (vit[1], res[0])):
        P.pair("independent_family", a, b, "independent")

    # --- shapes that differ: width growth, permuted and pruned ResNets, independent models of other sizes
    for i, parent in enumerate(q2[:3]):
        _widen(P, parent, (1.5, 2.0, 1.5)[i], seed=1000 + i, steps=(50, 100, 150)[i])
    for i, parent in enumerate(res):
        _permute_prune(P, parent, seed=1100 + i, steps=(20, 60, 100)[i])
    wide = [P.base("qwen2", 23, tok="B", arch={"H": 192, "layers": 3, "ffn": 384, "heads": 6, "kv": 3}),
            P.base("qwen2", 24, tok="D", vocab=768, arch={"H": 96, "layers": 5, "ffn": 256, "heads": 6, "kv": 3})]
    for a in q2[:3]:
        for b in wide:
            P.pair("independent_width", a, b, "independent")
    for a, b in ((wide[0], bert[0]), (wide[1], q3[0]), (wide[0], donors[0]), (wide[1], moe[0])):
        P.pair("independent_family", a, b, "independent")  # other families *and* other sizes
    return P


def _generic_derivations(P: Plan, parent: str, other: str, text: bool, seed: int) -> None:
    """Derivations every family supports: fine-tunes, formats, merges."""
    ft_data = {"data": "C"} if text else {"images": 9}
    c = P.derive("finetune_short", parent, "finetune", "ft30", steps=30, seed=seed, **ft_data)
    P.related("finetune_short", parent, c, P.steps_frac(30))
    c = P.derive("finetune_long", parent, "finetune", "ft150", steps=150, seed=seed + 1, **ft_data)
    P.related("finetune_long", parent, c, P.steps_frac(150))
    P.related("quant_int8", parent, P.derive("quant_int8", parent, "quant", "int8", bits=8, group=None))
    P.related("cast_fp16", parent, P.derive("cast_fp16", parent, "cast", "fp16", dtype="float16"))
    if text:
        P.related("quant_4bit", parent, P.derive("quant_4bit", parent, "quant", "q4g32", bits=4, group=32), 32)
        P.related("cast_bf16", parent, P.derive("cast_bf16", parent, "cast", "bf16", dtype="bfloat16"))
    w = 0.8 if text else 0.5
    m = P.model(f"merge-{parent}+{other}-{int(w * 100)}", "merge", parent=parent, other=other, weight=w, kind="merge")
    P.related("merge", parent, m, w)
    P.related("merge", other, m, round(1 - w, 3))


def _hard(zoo_seed: int = 0) -> Plan:
    """Hard negatives: the pairs that share the most without sharing weights, and their related twins.

    * same architecture, tokenizer and data, different seeds, trained ``long_steps`` (10x the zoo's usual)
      with a held-out validation curve recorded: qwen2 at two widths, the Qwen2.5-VL vision tower, and an
      MoE;
    * distillation: students trained on a teacher's next-token distributions, from scratch (function
      copied, weights not: independent) or initialised from the teacher's layers (related);
    * shared-embedding init only: models whose token embedding starts from the same (published) vectors and
      whose other weights do not; related, with the embedding as the shared part.

    Listed most informative first: the build is resumable and its manifest usable at any point.
    """
    P = Plan("hard", zoo_seed)
    long = P.p["long_steps"]
    q = [P.base("qwen2", s, steps=long, holdout=True) for s in (101, 102, 103)]
    for a, b in combinations(q, 2):
        P.pair("independent_long", a, b, "independent")
    # Distillation from the first long-trained qwen2.
    teacher = q[0]
    scratch = P.model(f"{teacher}~distilled-scratch", "distill", parent=teacher, kind="independent_distilled",
                      seed=141, steps=long, init="scratch", data="A")
    P.pair("independent_distilled", teacher, scratch, "independent")
    from_layers = P.model(f"{teacher}~distilled-layers", "distill", parent=teacher, kind="distillation_init",
                          seed=142, steps=long // 4, init="layers", data="A")
    P.related("distillation_init", teacher, from_layers, P.steps_frac(long // 4))
    # Shared embedding init: the "published vectors" are the first long-trained model's embedding.
    shared = [P.base("qwen2", s, steps=long, holdout=True, embed_from=teacher) for s in (151, 152)]
    P.pair("shared_embedding_init", shared[0], shared[1], "related", text="related")
    P.pair("shared_embedding_init", teacher, shared[0], "related", text="related")
    vit = [P.base("qwen2_5_vl_vision", s, steps=long, images=0, holdout=True) for s in (121, 122)]
    P.pair("independent_long", vit[0], vit[1], "independent")
    moe = [P.base("qwen3_moe", s, steps=long, holdout=True) for s in (131, 132)]
    P.pair("independent_long", moe[0], moe[1], "independent")
    wide = [P.base("qwen2", s, steps=long, holdout=True, hidden=96) for s in (111, 112)]
    P.pair("independent_long", wide[0], wide[1], "independent")
    # Three times longer again (30x): the held-out loss stops improving (the small corpus is then overfit).
    plateau = [P.base("qwen2", s, steps=3 * long, holdout=True) for s in (161, 162)]
    P.pair("independent_long", plateau[0], plateau[1], "independent")
    return P


def _null(zoo_seed: int = 0) -> Plan:
    """Many cheap independent pairs: ``n_seeds`` small qwen2 models (same data and tokenizer), every pair."""
    P = Plan("null", zoo_seed)
    models = [P.base("qwen2", 1000 + s) for s in range(P.p["n_seeds"])]
    for a, b in combinations(models, 2):
        P.pair("independent_seed", a, b, "independent")
    return P
