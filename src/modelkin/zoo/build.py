"""Execute a zoo plan: train/derive every model, save it, and write ``manifest.json``.

Resumable: a model folder that is complete (it was written to a temp folder and renamed) is
loaded instead of rebuilt, and the manifest is regenerated from the model folders at the end.
"""

from __future__ import annotations

import collections
import json
import re
import time
from pathlib import Path
from typing import Callable

import torch

from . import data as D
from . import derive as X
from . import reshape as R
from . import tokenizer as T
from .io import META_FILE, is_complete, load_model, save_model
from .models import (BertConfig, BertMLM, CausalLM, DecoderConfig, ResNet, ResNetConfig, VLM,
                     VisionClassifier, VisionConfig)
from .recipes import COMPONENTS, PRESETS, family_of, plan
from .train import CaptionTask, DistillTask, ImageTask, LMTask, MLMTask, Validation, train

PRESERVE_TOL = 1e-3  # relative max-logit error allowed for function-preserving transforms
Progress = Callable[[str], None] | None


HOLDOUT_FRACTION = 0.1  # the tail of a corpus held out for validation curves (long-trained models)
VALID_IMAGES = 10_000  # image-set seed offset of the held-out images


class Builder:
    def __init__(self, out_dir: str | Path, size: str, progress: Progress = None, zoo_seed: int = 0):
        self.out = Path(out_dir)
        self.size = size
        self.p = PRESETS[size]
        self.plan = plan(size, zoo_seed)
        self.log = progress or (lambda msg: None)
        self._models: dict[str, tuple] = {}
        self._cache: dict[tuple, object] = {}

    # ----------------------------------------------------------------- data (cached per build)

    def tokenizer(self, key: str) -> T.Tokenizer:
        """``"A:1024"`` -> BPE with 1024 tokens trained on corpus A."""
        if ("tok", key) not in self._cache:
            corpus, vocab = key.split(":")
            self._cache[("tok", key)] = T.train_bpe(D.stdlib_text(corpus), int(vocab))
        return self._cache[("tok", key)]

    def stream(self, corpus: str, tok: T.Tokenizer) -> D.TokenStream:
        key = ("stream", corpus, tok.to_str())
        if key not in self._cache:
            self._cache[key] = D.TokenStream(tok.encode(D.stdlib_text(corpus)).ids)
        return self._cache[key]

    def images(self, seed: int) -> D.ImageSet:
        if ("img", seed) not in self._cache:
            self._cache[("img", seed)] = D.make_images(self.p["images"], seed=seed)
        return self._cache[("img", seed)]

    def task(self, model, tok, data: str, images: int, part: str = "all"):
        """The training task; ``part`` "train" / "valid" splits the data (corpus tail, other images)."""
        if isinstance(model, (ResNet, VisionClassifier)):
            return ImageTask(self.images(images + (VALID_IMAGES if part == "valid" else 0)))
        stream = self.stream(data, tok)
        if part != "all":
            cut = int(len(stream.ids) * (1 - HOLDOUT_FRACTION))
            stream = D.TokenStream(stream.ids[:cut].tolist() if part == "train" else stream.ids[cut:].tolist())
        if isinstance(model, VLM):
            return CaptionTask(self.images(images), tok, stream)
        if isinstance(model, BertMLM):
            return MLMTask(stream, model.config.vocab_size)
        return LMTask(stream)

    def probe(self, model) -> dict:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, 256, (2, 32), generator=g)
        if isinstance(model, VLM):
            return {"ids": ids, "images": self.images(0).images[:2]}
        if isinstance(model, (ResNet, VisionClassifier)):
            return {"x" if isinstance(model, ResNet) else "images": self.images(0).images[:4]}
        return {"ids": ids}

    def check_preserving(self, op: str, parent, model) -> float:
        """Relative max-logit error of a transform that claims to keep the function; raises above tolerance."""
        probe = self.probe(parent)
        err = X.max_logit_diff(parent, model, probe) / parent(**probe).abs().max().item()
        if err > PRESERVE_TOL:
            raise AssertionError(f"{op} is not function-preserving: relative error {err:.2e}")
        return err

    # ----------------------------------------------------------------- models

    def get(self, model_id: str):
        """(model, tokenizer, meta) for a recipe id: from memory, from disk, or built now."""
        if model_id not in self._models:
            path = self.out / "models" / model_id
            if is_complete(path):
                self._models[model_id] = load_model(path)
            else:
                recipe = self.plan.models[model_id]
                t0 = time.time()
                self.log(f"[zoo] building {model_id} ({recipe['op']})")
                model, tok, meta = self._build(recipe)
                meta.update(self._base_meta(recipe), build_seconds=round(time.time() - t0, 2))
                save_model(path, model, tok, meta, dtype=meta.get("dtype", "float32"))
                self._models[model_id] = (model, tok, meta)
        return self._models[model_id]

    def _base_meta(self, r: dict) -> dict:
        fam = family_of(self.plan.models, r["id"])
        parent = self.plan.models.get(r.get("parent"), {})
        return {"path": f"models/{r['id']}", "family": fam, "seed": r.get("seed"),
                "parent": r.get("parent"), "derivation": r.get("kind"),
                "recipe": {k: v for k, v in r.items() if k not in ("id",)},
                "parent_steps": parent.get("steps")}

    def _fresh(self, family: str, seed: int, vocab: int, hidden: int | None = None, layers: int | None = None,
               arch: dict | None = None):
        """A newly initialised model of a family at this build's size (or ``hidden`` / ``layers``, or ``arch``'s
        overrides of the preset: ``H``, ``layers``, ``ffn``, ``heads``, ``kv``), from ``seed``."""
        p = {**self.p, **(arch or {})}
        torch.manual_seed(seed)
        h = hidden or p["H"]
        text = DecoderConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers or p["layers"],
                             intermediate_size=p.get("ffn", 2 * h), num_attention_heads=p.get("heads", 4),
                             num_key_value_heads=p.get("kv", 2))
        vision = VisionConfig(out_hidden_size=p["H"], **p["vision"])
        if family == "qwen2":
            return CausalLM(text)
        if family == "qwen3":
            return CausalLM(DecoderConfig(**{**text.__dict__, "qk_norm": True, "qkv_bias": False}))
        if family == "qwen3_moe":
            return CausalLM(DecoderConfig(**{**text.__dict__, "qk_norm": True, "qkv_bias": False,
                                             "num_experts": 4, "num_experts_per_tok": 2,
                                             "moe_intermediate_size": h}))
        if family == "bert":
            return BertMLM(BertConfig(vocab_size=vocab, hidden_size=p["H"], num_hidden_layers=p["layers"],
                                      intermediate_size=4 * p["H"], num_attention_heads=4))
        if family == "qwen2_5_vl":
            return VLM(text, vision)
        if family == "qwen2_5_vl_vision":
            return VisionClassifier(vision, D.NUM_CLASSES)
        if family == "resnet":
            return ResNet(ResNetConfig(num_classes=D.NUM_CLASSES, **p["resnet"]))
        raise ValueError(family)

    def _train(self, model, tok, r: dict, steps: int, lr: float, params=None, task=None) -> dict:
        data, images = r.get("data", "A"), r.get("images", 0)
        valid = None
        if r.get("holdout"):  # train on the corpus head, validate on its held-out tail
            task = task or self.task(model, tok, data, images, part="train")
            valid = Validation(self.task(model, tok, data, images, part="valid"))
        task = task or self.task(model, tok, data, images)
        return train(model, task, steps, seed=r.get("batch_seed") or r.get("seed") or 0, lr=lr,
                     params=params, log=self.log, valid=valid)

    def _data_tag(self, model, r: dict) -> str:
        if isinstance(model, (ResNet, VisionClassifier)):
            return f"synthetic-shapes:seed{r.get('images', 0)}"
        text = D.corpus_name(r.get("data", "A"))
        return text + (f"+synthetic-shapes:seed{r.get('images', 0)}" if isinstance(model, VLM) else "")

    def _build(self, r: dict):  # noqa: C901  (one branch per op, each short)
        op = r["op"]
        if op == "base":
            vocab = int(r["tok"].split(":")[1])
            text_family = r["family"] not in ("resnet", "qwen2_5_vl_vision")
            tok = self.tokenizer(r["tok"]) if text_family else None
            model = self._fresh(r["family"], r["seed"], vocab, hidden=r.get("hidden"), arch=r.get("arch"))
            if r.get("embed_from"):  # the token embedding starts from published vectors; nothing else does
                donor, _, _ = self.get(r["embed_from"])
                with torch.no_grad():
                    model.model.embed_tokens.weight.copy_(donor.model.embed_tokens.weight)
            stats = self._train(model, tok, r, r["steps"], lr=3e-3)
            return model, tok, {**stats, "data": self._data_tag(model, r),
                                "tokenizer": f"bpe:{D.corpus_name(r['tok'].split(':')[0])}:{vocab}" if tok else None}
        if op == "graft":
            donor, tok, _ = self.get(r["parent"])
            fresh = self._fresh("qwen2_5_vl", r["seed"], donor.config.vocab_size)
            model = X.graft_vision(donor, fresh, r["with_projector"])
            stats = self._train(model, tok, r, r["steps"], lr=3e-3)
            return model, tok, {**stats, "data": self._data_tag(model, r), "graft_with_projector": r["with_projector"]}

        parent, ptok, pmeta = self.get(r["parent"])
        if op == "distill":
            return self._distill(parent, ptok, r)
        meta: dict = {"data": pmeta.get("data"), "train_steps": 0}
        model, tok = X.clone(parent), ptok
        lr = 1e-3
        if op == "finetune":
            pass
        elif op == "lora":
            params = X.lora_wrap(model, r["rank"], r["seed"])
            stats = self._train(model, tok, r, r["steps"], lr=3e-3, params=params)
            X.lora_merge(model)
            return model, tok, {**stats, "data": self._data_tag(model, r)}
        elif op == "quant":
            model = X.quantise(parent, r["bits"], r["group"])
        elif op == "cast":
            meta["dtype"] = r["dtype"]
        elif op in ("permute", "rotate", "rescale"):
            record: dict = {}
            fn = {"permute": lambda m: X.permute(m, r["seed"], record), "rotate": lambda m: X.rotate(m, r["seed"]),
                  "rescale": lambda m: X.rescale(m, r["seed"], r["strength"])}[op]
            model = fn(parent)
            meta["preservation_error"] = self.check_preserving(op, parent, model)
            meta.update(record)  # the permutation's expert order: ground truth for expert maps
        elif op == "widen":
            args = {k: r[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "insert_layer")}
            model = R.widen_decoder(parent, **args, seed=r["seed"])
            meta["preservation_error"] = self.check_preserving(op, parent, model)
        elif op == "permute_prune":
            record = {}
            model = R.permute_resnet(parent, r["seed"], record)
            meta["preservation_error"] = self.check_preserving(op, parent, model)
            model = R.prune_resnet(model, r["fraction"], record)
            meta.update(record)  # the channel permutation and the kept channels: ground truth for channel maps
        elif op == "merge":
            other, _, _ = self.get(r["other"])
            model = X.merge(parent, other, r["weight"])
            meta["data"] = f"merge of {r['parent']} and {r['other']}"
        elif op == "drop_layers":
            model = X.drop_layers(parent, r["n_drop"])
        elif op == "upscale_depth":
            model = X.upscale_depth(parent, r["overlap"])
        elif op == "prune_ffn":
            model = X.prune_ffn(parent, r["fraction"])
        elif op == "upcycle":
            model = X.upcycle(parent, r["experts"], r["top_k"], r["seed"])
        elif op == "vocab_extend":
            words = _new_words(D.stdlib_text(r["data"]), ptok, r["n_new"])
            tok = T.extend(ptok, words)
            model = X.resize_vocab(parent, None, tok.get_vocab_size() - ptok.get_vocab_size(), r["seed"])
            meta["added_tokens"] = len(words)
        elif op == "vocab_prune":
            keep = T.frequent_merged(ptok, self.stream(r["data"], ptok).ids.tolist(), r["keep"])
            tok, old_ids = T.prune(ptok, keep)
            model = X.resize_vocab(parent, old_ids, 0, r["seed"])
            meta["kept_old_ids"] = len(old_ids)
        else:
            raise ValueError(op)
        if r.get("steps"):
            meta.update(self._train(model, tok, r, r["steps"], lr=lr))
            meta["data"] = self._data_tag(model, r)
        return model, tok, meta


    def _distill(self, teacher, tok, r: dict):
        """A student trained on the teacher's next-token distributions: from scratch (independent weights) or
        initialised from the teacher's embedding, head and every other layer (DistilBERT-style: related)."""
        cfg = teacher.config
        layers = cfg.num_hidden_layers if r["init"] == "scratch" else max(1, cfg.num_hidden_layers // 2 + 1)
        student = self._fresh("qwen2", r["seed"], cfg.vocab_size, hidden=cfg.hidden_size, layers=layers)
        if r["init"] == "layers":
            keep = list(range(0, cfg.num_hidden_layers, 2))[:layers]
            student.load_state_dict(X.select_layers(teacher, keep).state_dict())
        teacher.eval()
        task = DistillTask(self.task(student, tok, r.get("data", "A"), 0, part="train").stream, teacher)
        stats = self._train(student, tok, {**r, "holdout": True}, r["steps"], lr=3e-3, task=task)
        return student, tok, {**stats, "data": f"distilled from {r['parent']} on {self._data_tag(student, r)}",
                              "distill_init": r["init"]}


def _new_words(text: str, tok: T.Tokenizer, n: int) -> list[str]:
    """The ``n`` most frequent words of ``text`` that the tokenizer splits into several pieces."""
    counts = collections.Counter(re.findall(r"[A-Za-z_]{5,}", text))
    out = []
    for word, _ in counts.most_common():
        if len(tok.encode(word).ids) > 1:
            out.append(word)
        if len(out) == n:
            break
    return out


# ------------------------------------------------------------------------------------ manifest


def write_manifest(out_dir: str | Path, size: str, zoo_seed: int | None = None) -> dict:
    """(Re)build ``manifest.json`` from the model folders that exist and the plan's pairs.

    ``zoo_seed`` None keeps the seed the existing manifest records (0 when there is none)."""
    out = Path(out_dir)
    if zoo_seed is None:
        old = out / "manifest.json"
        zoo_seed = json.loads(old.read_text()).get("zoo_seed", 0) if old.is_file() else 0
    P = plan(size, zoo_seed)
    models = {}
    for model_id in P.models:
        path = out / "models" / model_id
        if is_complete(path):
            models[model_id] = json.loads((path / META_FILE).read_text())
    pairs = []
    for pr in P.pairs:
        if pr["a"] not in models or pr["b"] not in models:
            continue
        fa, fb = family_of(P.models, pr["a"]), family_of(P.models, pr["b"])
        shared = [c for c in COMPONENTS[fa] if c in COMPONENTS[fb]]
        pairs.append({
            "id": f"{pr['kind']}--{pr['a']}--{pr['b']}", "a": f"models/{pr['a']}", "b": f"models/{pr['b']}",
            "kind": pr["kind"], "label": pr["label"], "strength": pr["strength"],
            "components": {c: pr["components"].get(c, pr["label"]) for c in shared},
            "family": fa if fa == fb else f"{fa}+{fb}",
        })
    manifest = {"modelkin_zoo": 1, "size": size, "zoo_seed": zoo_seed, "models": models, "pairs": pairs}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(out / "manifest.json")
    return manifest


BUILD_SIZES = ("smoke", "full", "hard", "null")


def build_zoo(out_dir: str | Path, size: str = "smoke", progress: Progress = None, zoo_seed: int = 0,
              jobs: int = 1) -> dict:
    """Build (or finish building) the zoo in ``out_dir``; returns the manifest.

    ``zoo_seed`` S > 0 builds a fresh instance of the same zoo (every seed shifted): a folder holds one
    instance, so building another seed into a folder that has one is an error.  ``jobs`` > 1 builds
    models in that many processes, each model once its parents are on disk (the result is the same: every
    model is a function of its recipe and its parents)."""
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)}")
    out = Path(out_dir)
    old = out / "manifest.json"
    if old.is_file() and json.loads(old.read_text()).get("zoo_seed", 0) != zoo_seed:
        raise ValueError(f"{out} holds a zoo built with another --seed; use an empty folder")
    (out / "models").mkdir(parents=True, exist_ok=True)
    if jobs > 1:
        _build_parallel(out, size, zoo_seed, jobs, progress)
        return write_manifest(out, size, zoo_seed)
    # One intra-op thread: the zoo's models are tiny, and on a shared machine a second OpenMP thread makes
    # each step spin-wait (measured: 40 steps of a smoke qwen2 took 3.2 s with 1 thread and 256 s with 2
    # while other jobs held the cores).
    torch.set_num_threads(1)
    b = Builder(out, size, progress, zoo_seed)
    for model_id in b.plan.models:
        b.get(model_id)
        write_manifest(out, size, zoo_seed)  # keep the manifest current, so an interrupted build is usable
    return write_manifest(out, size, zoo_seed)


def dependencies(recipes: dict[str, dict]) -> dict[str, set[str]]:
    """Per recipe id, the ids of the models it is made from (parent, merge partner, teacher, embedding source)."""
    return {mid: {v for k, v in r.items() if k != "id" and isinstance(v, str) and v in recipes and v != mid}
            for mid, r in recipes.items()}


_WORKER: dict[tuple, Builder] = {}  # one Builder per worker process: tokenizers and data are made once


def _build_one(out_dir: str, size: str, zoo_seed: int, model_id: str) -> str:
    key = (out_dir, size, zoo_seed)
    if key not in _WORKER:
        torch.set_num_threads(1)
        _WORKER[key] = Builder(out_dir, size, lambda msg: print(msg, flush=True), zoo_seed)
    b = _WORKER[key]
    b.get(model_id)
    b._models.pop(model_id, None)  # children built elsewhere load it from disk; keep the worker's memory flat
    return model_id


def _build_parallel(out: Path, size: str, zoo_seed: int, jobs: int, progress: Progress) -> None:
    from concurrent.futures import FIRST_COMPLETED, wait

    from ..pool import process_pool

    recipes = plan(size, zoo_seed).models
    deps = dependencies(recipes)
    done = {m for m in recipes if is_complete(out / "models" / m)}
    pending = [m for m in recipes if m not in done]  # plan order: most informative first
    running: dict = {}
    with process_pool(jobs) as pool:
        while pending or running:
            for m in [m for m in pending if deps[m] <= done][: max(0, jobs - len(running))]:
                pending.remove(m)
                running[pool.submit(_build_one, str(out), size, zoo_seed, m)] = m
            if not running:
                raise ValueError(f"zoo plan {size!r}: recipes with unmet dependencies: {sorted(pending)[:5]}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                done.add(fut.result())
                del running[fut]
            write_manifest(out, size, zoo_seed)
            if progress:
                progress(f"[zoo] {len(done)}/{len(recipes)} models built")


def zoo_build_command(out_dir: str, size: str = "smoke", zoo_seed: int = 0, jobs: int = 1) -> int:
    """Entry point for ``modelkin zoo build DIR [--size smoke|full|hard|null] [--seed S] [--jobs N]``; returns an
    exit code."""
    if size not in BUILD_SIZES:
        print(f"[zoo] unknown size {size!r}: use one of {', '.join(BUILD_SIZES)}", flush=True)
        return 2
    t0 = time.time()
    try:
        manifest = build_zoo(out_dir, size, progress=lambda msg: print(msg, flush=True), zoo_seed=zoo_seed, jobs=jobs)
    except ValueError as e:
        print(f"[zoo] {e}", flush=True)
        return 2
    print(f"[zoo] {len(manifest['models'])} models, {len(manifest['pairs'])} pairs in {out_dir} "
          f"({time.time() - t0:.0f}s)", flush=True)
    return 0
