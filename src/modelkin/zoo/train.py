"""Training loops: one ``Task`` per objective, one AdamW loop for all of them.

Every batch comes from a ``torch.Generator`` seeded by the caller, so training is reproducible.
Initial and final losses (means over the first/last few steps) are returned and end up in the
manifest, which is how the tests check that every model was genuinely trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import ImageSet, TokenStream
from .tokenizer import EOS, MASK, PAD


@dataclass
class LMTask:
    """Next-token prediction on windows of a token stream (decoders)."""

    stream: TokenStream
    batch: int = 16
    length: int = 64

    def loss(self, model, gen):
        x = self.stream.batch(gen, self.batch, self.length + 1)
        logits = model(x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


@dataclass
class MLMTask:
    """BERT masked-LM: 15% of positions, of which 80% -> <mask>, 10% random, 10% unchanged."""

    stream: TokenStream
    vocab_size: int
    batch: int = 16
    length: int = 64

    def loss(self, model, gen):
        x = self.stream.batch(gen, self.batch, self.length)
        u = torch.rand(x.shape, generator=gen)
        picked = u < 0.15
        inp = torch.where(u < 0.12, torch.full_like(x, MASK), x)
        rand_tok = torch.randint(3, self.vocab_size, x.shape, generator=gen)
        inp = torch.where((u >= 0.12) & (u < 0.135), rand_tok, inp)
        logits = model(inp)
        return F.cross_entropy(logits[picked], x[picked])


@dataclass
class ImageTask:
    """Synthetic image classification (ResNet, standalone vision tower)."""

    images: ImageSet
    batch: int = 32

    def loss(self, model, gen):
        x, y, _ = self.images.batch(gen, self.batch)
        return F.cross_entropy(model(x), y)


class CaptionTask:
    """VLM: image tokens (via the merger) prepended to ``<eos> caption <eos>``; loss on the caption,
    plus plain next-token loss on text so the text tower is a real language model too."""

    def __init__(self, images: ImageSet, tokenizer, stream: TokenStream, batch: int = 16, length: int = 32):
        self.images, self.lm = images, LMTask(stream, batch // 2, length)
        self.batch = batch
        enc = [[EOS] + tokenizer.encode(c).ids + [EOS] for c in images.captions]
        width = max(map(len, enc))
        self.captions = torch.full((len(enc), width), PAD, dtype=torch.long)
        for i, e in enumerate(enc):
            self.captions[i, : len(e)] = torch.tensor(e)

    def loss(self, model, gen):
        imgs, _, idx = self.images.batch(gen, self.batch)
        cap = self.captions[idx]
        logits = model(cap[:, :-1], imgs)[:, -(cap.shape[1] - 1):]
        target = cap[:, 1:]
        cap_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD)
        return cap_loss + self.lm.loss(model, gen)


@dataclass
class DistillTask:
    """A student trained on a teacher's next-token distributions (KL divergence, temperature 1) over
    windows of a token stream: the teacher's function is copied, its weights are not."""

    stream: TokenStream
    teacher: torch.nn.Module
    batch: int = 16
    length: int = 64

    def loss(self, model, gen):
        x = self.stream.batch(gen, self.batch, self.length)
        with torch.no_grad():
            target = F.log_softmax(self.teacher(x), dim=-1)
        out = F.log_softmax(model(x), dim=-1)
        return F.kl_div(out.reshape(-1, out.shape[-1]), target.reshape(-1, target.shape[-1]), log_target=True,
                        reduction="batchmean")


class Validation:
    """A fixed set of held-out batches: the mean loss of a task on them, measured without gradients."""

    def __init__(self, task, n_batches: int = 8, seed: int = 12345):
        self.task, self.seed, self.n = task, seed, n_batches  # batch i is drawn from seed + i every time

    @torch.no_grad()
    def __call__(self, model) -> float:
        was = model.training
        model.eval()
        total = 0.0
        for i in range(self.n):
            gen = torch.Generator().manual_seed(self.seed + i)
            total += self.task.loss(model, gen).item()
        model.train(was)
        return total / self.n


PLATEAU_REL = 0.01  # validation loss improved by less than this over the last quarter of training


def train(model: torch.nn.Module, task, steps: int, seed: int, lr: float = 3e-3,
          params=None, weight_decay: float = 0.01, log=None, valid: Validation | None = None,
          valid_points: int = 20) -> dict:
    """AdamW with short warm-up and linear decay to 10%; returns loss statistics.

    With ``valid``, the held-out loss is measured ``valid_points`` times over the run: the curve, the final
    value, and whether it had reached a plateau (less than 1 % better over the last quarter of the run)."""
    if steps <= 0:
        return {"train_steps": 0}
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    warm = max(1, min(20, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 1.0 - 0.9 * s / steps))
    model.train()
    losses, curve = [], []
    every = max(1, steps // valid_points)
    for step in range(steps):
        loss = task.loss(model, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if valid is not None and ((step + 1) % every == 0 or step == steps - 1):
            curve.append([step + 1, round(valid(model), 5)])
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"    step {step:4d}/{steps} loss {loss.item():.4f}" + (f" valid {curve[-1][1]:.4f}" if curve else ""))
    model.eval()
    k = max(1, min(10, steps // 5))
    stats = {"train_steps": steps, "initial_loss": round(sum(losses[:k]) / k, 5),
             "final_loss": round(sum(losses[-k:]) / k, 5),
             "loss_curve": [round(x, 4) for x in losses[:: max(1, steps // 20)]]}
    if curve:
        quarter = [v for s_, v in curve if s_ >= 0.75 * steps]
        before = [v for s_, v in curve if s_ < 0.75 * steps]
        ref = before[-1] if before else quarter[0]
        stats.update(valid_curve=curve, valid_loss=curve[-1][1],
                     valid_plateau=bool((ref - curve[-1][1]) < PLATEAU_REL * abs(ref)))
    return stats
