"""Vocabulary alignment: token rows of A and B that stand for the same token string.

A model with an extended vocabulary (new rows appended), a pruned one (rows removed and the rest
re-indexed) or simply another tokenizer stores its embedding and LM-head rows in another order. Rows are
matched by token string, read from ``tokenizer.json`` (the ``tokenizers`` library) or a sentencepiece
``tokenizer.model``; only shared tokens are compared. Without tokenizer files, equal row counts are taken
to mean the same ids, and unequal ones are compared on their common leading ids — stated in the report as
an assumption, because an extension appends rows but a re-indexed pruning does not keep them in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError
from ..sources import ModelSource

TOKEN_ROW_ROLES = frozenset({"embedding", "lm_head"})


@dataclass(frozen=True, eq=False)
class VocabMap:
    source: str  # "tokenizer" (token strings) or "leading-ids" (assumed)
    n_a: int | None
    n_b: int | None
    rows_a: np.ndarray = field(repr=False)  # row of A for each shared token
    rows_b: np.ndarray = field(repr=False)  # row of B for the same token
    identity: bool  # the same ids for the same tokens: no remapping needed

    @property
    def n_shared(self) -> int:
        return int(self.rows_a.size)

    def to_dict(self) -> dict:
        return {"source": self.source, "n_a": self.n_a, "n_b": self.n_b, "n_shared": self.n_shared, "remapped": not self.identity}

    def for_rows(self, n_rows_a: int, n_rows_b: int) -> tuple[np.ndarray, np.ndarray]:
        """Shared rows that exist in tensors of these row counts (padding rows beyond the vocab are dropped)."""
        keep = (self.rows_a < n_rows_a) & (self.rows_b < n_rows_b)
        return self.rows_a[keep], self.rows_b[keep]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # in order of preference


def load_vocab(src: ModelSource) -> dict[str, int] | None:
    for kind in TOKENIZER_FILES:
        path = src.extra_files.get(kind)
        if path is not None:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise FormatError(f"cannot read {kind}: {e.strerror or e}", path) from None
            return parse_vocab(kind, data, path)
    return src.embedded_vocab()


def parse_vocab(kind: str, data: bytes, where) -> dict[str, int]:
    """Token string -> id from the content of a ``tokenizer.json`` (the ``tokenizers`` library) or a
    sentencepiece ``tokenizer.model``; a malformed one is one FormatError naming ``where``."""
    if kind == "tokenizer.json":
        from tokenizers import Tokenizer

        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"tokenizer.json is not valid UTF-8 (byte {e.start})", where) from None
        try:
            vocab = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
        except _LIBRARY_ERRORS as e:
            raise FormatError(f"cannot read tokenizer: {_first_line(e)}", where) from None
    else:
        import sentencepiece

        try:
            # Load explicitly: the constructor's model_proto= skips loading empty bytes, leaving a
            # processor with no pieces (an empty file read as an empty vocabulary; found by fuzzing).
            sp = sentencepiece.SentencePieceProcessor()
            sp.LoadFromSerializedProto(data)
            vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
        except _LIBRARY_ERRORS as e:
            raise FormatError(f"cannot read sentencepiece model: {_first_line(e)}", where) from None
    if not vocab:  # nothing to align rows by: say so rather than report zero shared tokens
        raise FormatError(f"{kind} holds no tokens", where)
    return vocab


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (Exception,)  # the libraries raise plain Exceptions


def map_vocab(src_a: ModelSource, src_b: ModelSource, rows_a: int, rows_b: int) -> VocabMap:
    va, vb = load_vocab(src_a), load_vocab(src_b)
    if va is not None and vb is not None:
        shared = sorted(set(va) & set(vb), key=lambda t: va[t])
        ia = np.array([va[t] for t in shared], dtype=np.int64)
        ib = np.array([vb[t] for t in shared], dtype=np.int64)
        identity = bool(np.array_equal(ia, ib)) and rows_a == rows_b
        return VocabMap("tokenizer", len(va), len(vb), ia, ib, identity)
    n = min(rows_a, rows_b)
    ids = np.arange(n, dtype=np.int64)
    return VocabMap("leading-ids", None, None, ids, ids, rows_a == rows_b)
