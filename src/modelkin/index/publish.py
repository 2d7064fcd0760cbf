"""A published index: a Hub dataset repo holding fingerprints and a manifest with the sha256 of each file.

Layout (the same in a local folder and in the repo)::

    manifest.json                         {"modelkin_index": 1, "models": [{"name", "file", "sha256", "n_bytes",
                                           "location", "revision"}]}
    fingerprints/<sha256>.mkfp

Pull trusts nothing in the repo: the manifest is size-capped and strictly validated (a file is exactly
``fingerprints/<its sha256>.mkfp``, so no path can leave the download folder), each file's size is checked
against the manifest and the cap before its bytes are fetched, its sha256 is verified after, and it is then
opened as a fingerprint (validated) before its record enters the index. Files are written only to paths
modelkin computes (content-addressed), never to paths taken from the repo.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelkinError, UsageError
from .store import Index, sha256_file

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20
MAX_FINGERPRINT_BYTES = 256 << 20
MAX_MODELS = 100_000
_FILE_RE = re.compile(r"fingerprints/([0-9a-f]{64})\.mkfp")
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,512}")


class PublishedIndexError(ModelkinError, ValueError):
    """A published index is malformed, too large, or its files do not match their digests."""


def export_index(index: Index, folder: Path) -> dict:
    """Write ``index`` in the published layout into ``folder`` (created; must be empty if it exists)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder}: folder is not empty")
    (folder / "fingerprints").mkdir(parents=True, exist_ok=True)
    models = []
    for m in index.models():
        src = index.fingerprint_path(m.sha256)
        if not src.is_file():
            raise UsageError(f"{m.name!r} has no fingerprint file in the index (a sketch-only record cannot be published)")
        rel = f"fingerprints/{m.sha256}.mkfp"
        shutil.copyfile(src, folder / rel)
        models.append({"name": m.name, "file": rel, "sha256": m.sha256, "n_bytes": src.stat().st_size,
                       "location": m.location, "revision": m.revision})
    doc = {"modelkin_index": MANIFEST_VERSION, "models": models}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def parse_manifest(raw: bytes, where: str) -> list[dict]:
    """The manifest's entries, strictly validated."""
    def bad(msg: str) -> PublishedIndexError:
        return PublishedIndexError(f"{MANIFEST}: {msg}", where)

    if len(raw) > MAX_MANIFEST_BYTES:
        raise bad(f"{len(raw):,} bytes is over the {MAX_MANIFEST_BYTES:,}-byte limit")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise bad(f"not JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("modelkin_index") != MANIFEST_VERSION or not isinstance(doc.get("models"), list):
        raise bad(f"not a modelkin index manifest of version {MANIFEST_VERSION}")
    if len(doc["models"]) > MAX_MODELS:
        raise bad(f"{len(doc['models']):,} models is over the limit of {MAX_MODELS:,}")
    keys = {"name", "file", "sha256", "n_bytes", "location", "revision"}
    seen = set()
    for i, e in enumerate(doc["models"]):
        if not isinstance(e, dict) or set(e) != keys:
            raise bad(f"model {i}: expected exactly the keys {sorted(keys)}")
        m = _FILE_RE.fullmatch(e["file"]) if isinstance(e["file"], str) else None
        if m is None or m.group(1) != e["sha256"]:
            raise bad(f"model {i}: file must be 'fingerprints/<its sha256>.mkfp', not {str(e['file'])[:100]!r}")
        if not isinstance(e["name"], str) or not _NAME_RE.fullmatch(e["name"]) or e["name"] in seen:
            raise bad(f"model {i}: name missing, duplicated, too long or with control characters")
        if not isinstance(e["n_bytes"], int) or not 0 < e["n_bytes"] <= MAX_FINGERPRINT_BYTES:
            raise bad(f"model {i}: n_bytes must be 1 to {MAX_FINGERPRINT_BYTES:,}")
        for k in ("location", "revision"):
            if e[k] is not None and not isinstance(e[k], str):
                raise bad(f"model {i}: {k} must be a string or null")
        seen.add(e["name"])
    return doc["models"]


def _api():
    from huggingface_hub import HfApi

    from ..sources.hub import HubSettings

    s = HubSettings.from_env()
    return HfApi(endpoint=s.endpoint, token=s.token or None), s


def pull(index: Index, repo_id: str, revision: str | None = None, replace: bool = False) -> list:
    """Add the models of the published index ``repo_id`` (a Hub dataset repo) to ``index``; returns the records."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    api, s = _api()
    where = f"{s.endpoint}/datasets/{repo_id}"
    try:
        commit = api.dataset_info(repo_id, revision=revision).sha  # every file read at this one commit
        with tempfile.TemporaryDirectory(prefix="modelkin-pull-", dir=index.path.parent) as work:
            def fetch(rel: str, limit: int) -> Path:
                url = hf_hub_url(repo_id, rel, repo_type="dataset", revision=commit, endpoint=s.endpoint)
                size = get_hf_file_metadata(url, token=s.token or None).size
                if size is None or size > limit:
                    raise PublishedIndexError(f"{rel}: {size} bytes is over the limit of {limit:,}", where)
                return Path(hf_hub_download(repo_id, rel, repo_type="dataset", revision=commit, endpoint=s.endpoint,
                                            token=s.token or None, cache_dir=work))

            entries = parse_manifest(fetch(MANIFEST, MAX_MANIFEST_BYTES).read_bytes(), where)
            names = {m.name for m in index.models()}
            clash = [e["name"] for e in entries if e["name"] in names]
            if clash and not replace:
                raise UsageError(f"already in the index {index.path}: {', '.join(clash[:5])} (remove them first, or --replace)")
            verified = []
            for e in entries:
                p = fetch(e["file"], e["n_bytes"])
                if p.stat().st_size != e["n_bytes"] or sha256_file(p) != e["sha256"]:
                    raise PublishedIndexError(f"{e['file']}: its bytes do not match the manifest's size and sha256", where)
                verified.append((e, p))
            return [index.add(p, name=e["name"], replace=replace) for e, p in verified]  # all verified first
    except HfHubHTTPError as e:
        raise PublishedIndexError(f"cannot read the dataset repo: {type(e).__name__}: {str(e).splitlines()[0]}", where) from None
    except OSError as e:
        raise PublishedIndexError(f"cannot read the dataset repo: {type(e).__name__}: {e}", where) from None


def push(index: Index, repo_id: str, private: bool = False, to_folder: Path | None = None) -> str:
    """Publish ``index`` as the dataset repo ``repo_id`` (or, with ``to_folder``, write the layout there)."""
    if to_folder is not None:
        export_index(index, to_folder)
        return str(to_folder)
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    api, s = _api()
    where = f"{s.endpoint}/datasets/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="modelkin-push-") as work:
        export_index(index, Path(work) / "index")
        root = Path(work) / "index"
        files = sorted(p for p in root.rglob("*") if p.is_file())  # one commit: readers see all of them or none
        ops = [CommitOperationAdd(path_in_repo=p.relative_to(root).as_posix(), path_or_fileobj=str(p)) for p in files]
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops,
                                     commit_message=f"modelkin index: {len(index.models())} fingerprints")
        except HfHubHTTPError as e:
            hint = " (set HF_TOKEN to a token that can write there)" if e.response is not None and \
                e.response.status_code in (401, 403) else ""
            raise PublishedIndexError(f"cannot publish: {type(e).__name__}: {str(e).splitlines()[0]}{hint}", where) from None
    return str(getattr(info, "commit_url", None) or f"{s.endpoint}/datasets/{repo_id}")
