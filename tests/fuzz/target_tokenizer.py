"""Fuzz target: tokenizer files (``modelkin.alignment.vocab.parse_vocab``, what ``load_vocab`` reads).

``fuzz_one(data)`` reads ``data`` as a ``tokenizer.json`` when it starts with ``{`` (after whitespace), as a
sentencepiece ``tokenizer.model`` otherwise (random bytes mostly exercise the latter), and builds the
token -> id vocabulary the way vocabulary alignment does. Bad input may raise only ``ModelkinError``.
``SEEDS``: the examples' byte-level BPE tokenizer.json, WordPiece, WordLevel and Unigram ones made with
the ``tokenizers`` library, and a small sentencepiece unigram model trained in memory.
"""

from __future__ import annotations

import io
from pathlib import Path

from modelkin.alignment.vocab import parse_vocab


def fuzz_one(data: bytes) -> None:
    kind = "tokenizer.json" if data.lstrip()[:1] == b"{" else "tokenizer.model"
    vocab = parse_vocab(kind, data, "fuzz/" + kind)
    assert isinstance(vocab, dict)


def _library_seeds() -> list[bytes]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = {"[UNK]": 0, "[CLS]": 1, "the": 2, "cat": 3, "##s": 4, "sat": 5}
    wp = Tokenizer(models.WordPiece(words, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.add_special_tokens(["[SEP]"])
    wl = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    un = Tokenizer(models.Unigram([("<unk>", 0.0), ("▁the", -1.5), ("▁cat", -2.0), ("s", -3.0)], unk_id=0))
    un.pre_tokenizer = pre_tokenizers.Metaspace()
    return [t.to_str().encode() for t in (wp, wl, un)]


def _sentencepiece_seed() -> bytes:
    import sentencepiece

    text = ["the cat sat on the mat", "a dog ate the hat", "cats and dogs sat"] * 20
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=out, vocab_size=20, model_type="unigram",
        character_coverage=1.0, minloglevel=2, num_threads=1, normalization_rule_name="identity",
    )
    return out.getvalue()


SEEDS: list[bytes] = [
    (Path(__file__).resolve().parents[2] / "examples" / "base" / "tokenizer.json").read_bytes(),
    *_library_seeds(),
    _sentencepiece_seed(),
]
