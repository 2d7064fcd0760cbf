"""Byte-level BPE tokenizers trained locally, plus the vocabulary edits used by derivations.

Special tokens come first (ids 0..2) in every tokenizer so that the masked-LM and padding ids
are stable across the zoo.
"""

from __future__ import annotations

import collections
import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<mask>"]
EOS, PAD, MASK = 0, 1, 2


def train_bpe(text: str, vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``text`` (deterministic for a given text)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Feed fixed-size chunks: the trainer counts words per chunk, the result does not depend on it.
    chunks = [text[i : i + 10_000] for i in range(0, len(text), 10_000)]
    tok.train_from_iterator(chunks, trainer=trainer)
    return tok


def copy(tok: Tokenizer) -> Tokenizer:
    return Tokenizer.from_str(tok.to_str())


def extend(tok: Tokenizer, new_tokens: list[str]) -> Tokenizer:
    """Vocabulary extension: the new tokens get the ids right after the existing vocabulary."""
    out = copy(tok)
    out.add_tokens(new_tokens)
    return out


def frequent_merged(tok: Tokenizer, ids: list[int], fraction: float) -> set[int]:
    """The most frequent ``fraction`` of the merged (multi-byte) tokens, by count in ``ids``.

    Byte symbols and special tokens are not candidates: ``prune`` always keeps them, since a
    byte-level tokenizer without them could not encode arbitrary text.
    """
    fixed = {tok.token_to_id(c) for c in pre_tokenizers.ByteLevel.alphabet()} | {
        tok.token_to_id(t) for t in SPECIAL_TOKENS}
    merged = tok.get_vocab_size() - len(fixed)
    counts = collections.Counter(i for i in ids if i not in fixed)
    return {i for i, _ in counts.most_common(int(merged * fraction))}


def prune(tok: Tokenizer, keep: set[int]) -> tuple[Tokenizer, list[int]]:
    """Vocabulary pruning with re-indexing.

    Keeps special tokens, the 256 byte symbols and the merged tokens in ``keep`` whose merge
    parents survive (so every kept token is still reachable by BPE).  Returns the new tokenizer
    and ``old_ids`` with ``old_ids[new_id] = old_id`` so the embedding rows can be gathered.
    """
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    kept_tokens = {t for t, i in vocab.items() if i in keep or t in alphabet or t in SPECIAL_TOKENS}
    # Merges are ordered so that a token's parts are created before it: one pass suffices.
    reachable = {t for t in kept_tokens if t in alphabet or t in SPECIAL_TOKENS}
    merges = []
    for m in spec["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in reachable and b in reachable and a + b in kept_tokens:
            merges.append(m)
            reachable.add(a + b)
    # Compact the ids in their old order: every surviving token moves to a new index.
    old_ids = sorted(vocab[t] for t in reachable)
    token_of = {i: t for t, i in vocab.items()}
    new_vocab = {token_of[old]: new for new, old in enumerate(old_ids)}
    spec["model"]["vocab"] = new_vocab
    spec["model"]["merges"] = merges
    for added in spec.get("added_tokens", []):
        added["id"] = new_vocab[added["content"]]
    return Tokenizer.from_str(json.dumps(spec)), old_ids

