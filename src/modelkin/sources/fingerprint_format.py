"""Reading modelkin fingerprints (``.mkfp``): a model's sampled rows, read back as that model.

A fingerprint holds, per tensor, the rows a sampled compare with its (budgeted) sample policy reads from the
model (``index.fingerprint.plan_fingerprint``; none for tensors of layers the budget does not read), in the
stored dtype (block-quantised and packed types decoded to F16), with the tensor's original shape and byte size,
plus the model's config, vocabulary, revision and file digests. Opened, it presents every tensor with its
*original* shape and size, so a compare plans the same samples and layers from it as from the model; a read of
a row the fingerprint does not hold fails with ``MissingRowsError`` (the comparison then leaves that pair out
and says so).

Layout: a valid safetensors file. Payload tensors ``p0``, ``p1``… hold the kept rows; ``__metadata__``
has one key, ``modelkin.fingerprint``, a JSON document (``version``, ``policy``, ``source``, ``config``,
``vocab``, ``tensors``: name -> ``{dtype, source_dtype, shape, n_bytes, payload, rows}`` where ``n_bytes`` is
the source tensor's size and ``rows`` a list of ``[first_row, n_rows]`` runs or null for a whole tensor).
Version 3 adds ``products``: tensor name -> ``{payload, basis}``, the kept rows of a matrix that reads the
residual stream times the embedding rows of the shared-basis test (``sampling.token_blocks`` of the embedding
``basis``), float32 [kept rows, token blocks]: its units' responses to the basis inputs, computed once when the
fingerprint is made instead of in every compare. Version 2 files (without them) are read as they are; version 1
files (which held the rows of an unbudgeted sample) are refused with one line: make them again. Everything is
validated like any untrusted file: no pickle, no code, bounded sizes, every row run inside the shape and
matching the payload.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import FormatError
from ..sampling import SamplePolicy, token_blocks
from .digests import FileDigest
from .dtypes import decode
from .safetensors_format import SafetensorsFile
from .tensors import TensorInfo
from .transport import Transport
from .weightfile import WeightFile

MAGIC_KEY = "modelkin.fingerprint"
FORMAT_NAME = "modelkin-fingerprint"
VERSION = 3
READABLE_VERSIONS = (2, 3)  # version 2: no ``products``
SUFFIX = ".mkfp"
MAX_DIMS = 8
MAX_DIM = 1 << 40  # a dimension beyond this is not a real tensor
MAX_RUNS = 1 << 20  # row runs per tensor
MAX_HELD_BYTES = 64 << 20  # payload bytes kept in memory for gathered reads (a budgeted fingerprint is ~15 MB)
HEADER_KEYS = {"format", "version", "policy", "source", "config", "vocab", "vocab_sha256", "tensors",
               "modelkin_version", "created", "parameters", "claims", "products"}
TENSOR_KEYS = {"dtype", "source_dtype", "shape", "n_bytes", "payload", "rows"}
PRODUCT_KEYS = {"payload", "basis"}
POLICY_KEYS = {"fraction", "min_rows", "block_rows", "small_bytes", "budget_bytes", "max_layers", "whole_bytes"}


class MissingRowsError(FormatError):
    """A fingerprint was asked for rows of a tensor it does not hold."""


def policy_to_dict(p: SamplePolicy) -> dict:
    return {"fraction": p.fraction, "min_rows": p.min_rows, "block_rows": p.block_rows, "small_bytes": p.small_bytes,
            "budget_bytes": p.budget_bytes, "max_layers": p.max_layers, "whole_bytes": p.whole_bytes}


class FingerprintFile(WeightFile):
    format_name = "fingerprint"

    def __init__(self, transport: Transport):
        super().__init__(transport)
        self._payload = SafetensorsFile(transport)
        meta = self._payload.metadata.get(MAGIC_KEY) if isinstance(self._payload.metadata, dict) else None
        if meta is None:
            raise self._fail(f"not a modelkin fingerprint (a safetensors file without the {MAGIC_KEY!r} metadata)")
        try:
            header = json.loads(meta)
        except (json.JSONDecodeError, RecursionError) as e:
            raise self._fail(f"fingerprint header is not valid JSON: {e}") from None
        self._header = self._check_header(header)
        self.policy = self._check_policy(header["policy"])
        self._rows: dict[str, np.ndarray | None] = {}  # name -> sorted stored rows (None: whole)
        self._held_rows: dict[str, np.ndarray] = {}  # name -> its payload in memory, once gathered from
        self._held_bytes = 0
        self._payload_of: dict[str, TensorInfo] = {}
        for name, entry in header["tensors"].items():
            self.tensors[name] = self._check_tensor(name, entry)
        self._products: dict[str, tuple[str, TensorInfo]] = {}  # name -> (basis tensor, payload)
        products = header.get("products") or {}
        if not isinstance(products, dict):
            raise self._fail("fingerprint 'products' must be a JSON object")
        for name, entry in products.items():
            self._products[name] = self._check_products(name, entry)
        self.metadata = {"fingerprint_version": str(header["version"]), "source": str(header["source"].get("location"))}

    # -- validation -------------------------------------------------------------------------------
    def _check_header(self, h) -> dict:
        if not isinstance(h, dict):
            raise self._fail("fingerprint header is not a JSON object")
        if h.get("format") != FORMAT_NAME:
            raise self._fail(f"fingerprint header names format {h.get('format')!r}, expected {FORMAT_NAME!r}")
        if h.get("version") not in READABLE_VERSIONS:
            raise self._fail(f"fingerprint version {h.get('version')!r} is not supported (this modelkin reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}); make the fingerprint again with this modelkin")
        unknown = set(h) - HEADER_KEYS
        if unknown:
            raise self._fail(f"fingerprint header has unknown keys {sorted(unknown)}")
        missing = {"policy", "source", "tensors"} - set(h)
        if missing:
            raise self._fail(f"fingerprint header lacks {sorted(missing)}")
        if not isinstance(h["tensors"], dict) or not isinstance(h["source"], dict):
            raise self._fail("fingerprint 'tensors' and 'source' must be JSON objects")
        if h.get("config") is not None and not isinstance(h["config"], dict):
            raise self._fail("fingerprint 'config' must be a JSON object or null")
        vocab = h.get("vocab")
        if vocab is not None and not (isinstance(vocab, dict) and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DIM for k, v in vocab.items())):
            raise self._fail("fingerprint 'vocab' must map token strings to non-negative ids")
        files = h["source"].get("files")
        if files is not None and not (isinstance(files, dict) and all(isinstance(v, dict) for v in files.values())):
            raise self._fail("fingerprint 'source.files' must map file names to records")
        return h

    def _check_policy(self, p) -> SamplePolicy:
        if not isinstance(p, dict) or set(p) != POLICY_KEYS:
            raise self._fail(f"fingerprint 'policy' must have exactly the keys {sorted(POLICY_KEYS)}")
        count = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_DIM  # noqa: E731
        ok = (isinstance(p["fraction"], (int, float)) and not isinstance(p["fraction"], bool) and 0 <= p["fraction"] <= 1
              and all(count(p[k]) for k in ("min_rows", "block_rows", "small_bytes", "whole_bytes")) and p["block_rows"] >= 1
              and all(p[k] is None or (count(p[k]) and p[k] >= 1) for k in ("budget_bytes", "max_layers")))
        if not ok:
            raise self._fail(f"fingerprint 'policy' has values out of range: {str(p)[:300]}")
        return SamplePolicy(float(p["fraction"]), p["min_rows"], p["block_rows"], p["small_bytes"],
                            p["budget_bytes"], p["max_layers"], p["whole_bytes"])

    def _check_tensor(self, name: str, e) -> TensorInfo:
        where = f"fingerprint tensor {name[:200]!r}"
        if not isinstance(e, dict) or set(e) != TENSOR_KEYS:
            raise self._fail(f"{where}: entry must have exactly the keys {sorted(TENSOR_KEYS)}")
        shape = e["shape"]
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape)):
            raise self._fail(f"{where}: shape must be at most {MAX_DIMS} non-negative integers, got {str(shape)[:200]}")
        payload = self._payload.tensors.get(e["payload"]) if isinstance(e["payload"], str) else None
        if payload is None:
            raise self._fail(f"{where}: payload {str(e['payload'])[:100]!r} is not in the file")
        if payload.dtype.code != e["dtype"]:
            raise self._fail(f"{where}: payload is {payload.dtype.code}, header says {str(e['dtype'])[:20]}")
        if not isinstance(e["source_dtype"], str) or len(e["source_dtype"]) > 32:
            raise self._fail(f"{where}: source_dtype must be a short string")
        n_bytes = e["n_bytes"]
        if not isinstance(n_bytes, int) or isinstance(n_bytes, bool) or not 0 <= n_bytes <= MAX_DIM:
            raise self._fail(f"{where}: n_bytes must be a non-negative integer")
        runs = e["rows"]
        if runs is None:
            if list(payload.shape) != shape:
                raise self._fail(f"{where}: payload shape {list(payload.shape)} differs from the tensor's {shape}")
            rows = None
        else:
            if not shape or not isinstance(runs, list) or len(runs) > MAX_RUNS:
                raise self._fail(f"{where}: rows must be a list of at most {MAX_RUNS} [first, count] runs of a tensor with rows")
            rows = self._check_runs(where, runs, shape[0])
            if list(payload.shape) != [len(rows)] + shape[1:]:
                raise self._fail(f"{where}: payload shape {list(payload.shape)} does not hold {len(rows)} rows of shape {shape}")
        self._rows[name] = rows
        self._payload_of[name] = payload
        shape_t = tuple(shape)
        # The source tensor's size, not the payload's: the compare plans samples and layers from sizes, and must
        # plan the same from the fingerprint as from the model.
        return TensorInfo(name, payload.dtype, shape_t, self.name, 0, n_bytes)

    def _check_products(self, name: str, e) -> tuple[str, TensorInfo]:
        where = f"fingerprint products of {name[:200]!r}"
        if not isinstance(e, dict) or set(e) != PRODUCT_KEYS:
            raise self._fail(f"{where}: entry must have exactly the keys {sorted(PRODUCT_KEYS)}")
        info, basis = self.tensors.get(name), self.tensors.get(e["basis"]) if isinstance(e["basis"], str) else None
        if info is None or basis is None or len(info.shape) != 2 or len(basis.shape) != 2:
            raise self._fail(f"{where}: the tensor and its basis must be matrices of the fingerprint")
        payload = self._payload.tensors.get(e["payload"]) if isinstance(e["payload"], str) else None
        if payload is None or payload.dtype.code != "F32":
            raise self._fail(f"{where}: payload {str(e['payload'])[:100]!r} is not an F32 tensor of the file")
        held = self._rows[name]
        want = [info.shape[0] if held is None else len(held), len(token_blocks(basis.shape[0]))]
        if list(payload.shape) != want:
            raise self._fail(f"{where}: payload shape {list(payload.shape)}, expected {want}")
        return e["basis"], payload

    def _check_runs(self, where: str, runs: list, n_rows: int) -> np.ndarray:
        end, parts, total = 0, [], 0
        for r in runs:
            if (not isinstance(r, list) or len(r) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in r) or r[1] < 1 or r[0] < end):
                raise self._fail(f"{where}: row runs must be sorted, non-overlapping [first, count] pairs")
            end = r[0] + r[1]
            total += r[1]
            if end > n_rows:
                raise self._fail(f"{where}: row run {r} lies outside the tensor's {n_rows} rows")
            parts.append((r[0], r[1]))
        rows = np.empty(total, np.int64)
        pos = 0
        for first, count in parts:
            rows[pos: pos + count] = np.arange(first, first + count)
            pos += count
        return rows

    # -- what the fingerprint says about its model ----------------------------------------------
    def embedded_config(self) -> dict | None:
        return self._header.get("config")

    def embedded_vocab(self) -> dict[str, int] | None:
        return self._header.get("vocab")

    def metadata_used(self) -> dict[str, object]:
        return {"fingerprint_of": self._header["source"].get("location"), "revision": self._header["source"].get("revision")}

    def claims(self) -> dict:
        """What the model says about its parents (``base_model``, ``license``), as recorded; not evidence."""
        c = self._header.get("claims")
        if not isinstance(c, dict):
            return {"base_model": [], "license": None}
        bases = c.get("base_model")
        bases = [b for b in bases if isinstance(b, str)][:64] if isinstance(bases, list) else []
        lic = c.get("license")
        return {"base_model": bases, "license": lic if isinstance(lic, str) else None}

    @property
    def header(self) -> dict:
        return self._header

    @property
    def source_revision(self) -> str | None:
        r = self._header["source"].get("revision")
        return r if isinstance(r, str) else None

    def source_digests(self) -> dict[str, FileDigest] | None:
        files = self._header["source"].get("files")
        if not files:
            return None
        out = {}
        for name, rec in files.items():
            size, sha, src, etag = rec.get("size"), rec.get("sha256"), rec.get("sha256_source", "none"), rec.get("etag")
            if not isinstance(size, int) or not (sha is None or isinstance(sha, str)):
                raise self._fail(f"fingerprint file record {name[:100]!r} is malformed")
            out[str(name)] = FileDigest(size, sha, str(src), etag if isinstance(etag, str) else None)
        return out

    def stored_rows(self, name: str) -> np.ndarray | None:
        """The rows held of tensor ``name`` (None: all of them)."""
        return self._rows[name]

    def covers(self, info: TensorInfo, rows: np.ndarray) -> bool:
        held = self._rows[info.name]
        if held is None or len(rows) == 0:
            return True
        if len(rows) > len(held):  # distinct rows, more than are held
            return False
        pos = np.searchsorted(held, rows)
        return bool(np.all(pos < len(held)) and np.all(held[np.minimum(pos, len(held) - 1)] == rows))

    # -- reads: element ranges of the original tensor, served from the kept rows -----------------
    def _payload_span(self, info: TensorInfo, start: int, count: int) -> tuple[TensorInfo, int, int]:
        """(payload tensor, start element there, count) for elements [start, start+count) of ``info``."""
        payload = self._payload_of[info.name]
        held = self._rows[info.name]
        if held is None or count == 0:
            return payload, start, count
        row_len = info.numel // info.shape[0] if info.shape[0] else 0
        if row_len == 0:
            return payload, 0, 0
        r0, r1 = start // row_len, (start + count - 1) // row_len + 1
        p0 = int(np.searchsorted(held, r0))
        if p0 + (r1 - r0) > len(held) or held[p0] != r0 or held[p0 + (r1 - r0) - 1] != r1 - 1:
            raise MissingRowsError(
                f"the fingerprint does not hold rows {r0}..{r1 - 1} of {info.name!r} (it holds the rows the sampled read "
                "mode reads with its sample policy)", self.name)
        return payload, p0 * row_len + (start - r0 * row_len), count

    def gather_rows(self, info: TensorInfo, rows: np.ndarray) -> np.ndarray | None:
        """Rows ``rows`` of stored tensor ``info``, decoded, in one gather from the payload held in memory (a
        fingerprint is small: every compare of a search reads it again and again), or None where the
        row-by-row reads must serve (packed payloads)."""
        payload = self._payload_of[info.name]
        if payload.dtype.is_block or payload.dtype.packed or not info.shape:
            return None
        held = self._rows[info.name]
        pos = rows
        if held is not None and len(rows):
            pos = np.minimum(np.searchsorted(held, rows), len(held) - 1)
            if not np.array_equal(held[pos], rows):
                missing = rows[held[pos] != rows]
                raise MissingRowsError(
                    f"the fingerprint does not hold row {int(missing[0])} of {info.name!r} (it holds the rows the sampled "
                    "read mode reads with its sample policy)", self.name)
        if info.name not in self._held_rows:
            if self._held_bytes + payload.n_bytes > MAX_HELD_BYTES:  # a fingerprint beyond any budget: read by rows
                return None
            n_rows = payload.shape[0] if payload.shape else 1
            raw = self._payload.read_raw(payload, 0, payload.numel)
            self._held_rows[info.name] = raw.reshape(n_rows, -1)
            self._held_bytes += payload.n_bytes
        return decode(self._held_rows[info.name][pos].reshape(-1), info.dtype).reshape(len(rows), -1)

    def read_raw(self, info: TensorInfo, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        payload, s, c = self._payload_span(info, start, count)
        return self._payload.read_raw(payload, s, c, out)

    def read_elements(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        return decode(self.read_raw(info, start, count), info.dtype)

    def stream_elements(self, info: TensorInfo, start: int, count: int, scratch=None):
        payload, s, c = self._payload_span(info, start, count)
        return self._payload.stream_elements(payload, s, c, scratch)

    def stream_raw(self, info: TensorInfo, piece_elems: int = 1 << 18):
        yield from self._payload.stream_raw(self._payload_of[info.name], piece_elems)

    def prefetch(self, spans) -> None:
        return None

    def row_products(self, info: TensorInfo, rows: np.ndarray, basis: TensorInfo, basis_rows: np.ndarray) -> np.ndarray | None:
        """Rows ``rows`` of matrix ``info`` times rows ``basis_rows`` of ``basis``, transposed (float32), where the
        fingerprint holds them (``products``: rows it keeps, basis rows among the token blocks); else None."""
        got = self._products.get(info.name)
        if got is None or got[0] != basis.name:
            return None
        held, cols = self._rows[info.name], token_blocks(basis.shape[0])
        pos_r = rows if held is None else np.minimum(np.searchsorted(held, rows), len(held) - 1)
        pos_c = np.minimum(np.searchsorted(cols, basis_rows), len(cols) - 1)
        if (held is not None and not np.array_equal(held[pos_r], rows)) or not np.array_equal(cols[pos_c], basis_rows):
            return None
        key = "products:" + info.name
        if key not in self._held_rows:
            payload = got[1]
            if self._held_bytes + payload.n_bytes > MAX_HELD_BYTES:
                return None
            self._held_rows[key] = decode(self._payload.read_raw(payload, 0, payload.numel), payload.dtype).reshape(payload.shape)
            self._held_bytes += payload.n_bytes
        return self._held_rows[key][np.ix_(pos_r, pos_c)]

