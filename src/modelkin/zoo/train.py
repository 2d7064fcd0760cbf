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


def train(model: torch.nn.Module, task, steps: int, seed: int, lr: float = 3e-3,
          params=None, weight_decay: float = 0.01, log=None) -> dict:
    """AdamW with short warm-up and linear decay to 10%; returns loss statistics."""
    if steps <= 0:
        return {"train_steps": 0}
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    warm = max(1, min(20, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 1.0 - 0.9 * s / steps))
    model.train()
    losses = []
    for step in range(steps):
        loss = task.loss(model, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"    step {step:4d}/{steps} loss {loss.item():.4f}")
    model.eval()
    k = max(1, min(10, steps // 5))
    return {"train_steps": steps, "initial_loss": round(sum(losses[:k]) / k, 5),
            "final_loss": round(sum(losses[-k:]) / k, 5),
            "loss_curve": [round(x, 4) for x in losses[:: max(1, steps // 20)]]}
