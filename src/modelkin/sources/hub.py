"""Models where they live: Hugging Face Hub ids (``org/name``) and plain HTTP(S) URLs.

A Hub model is resolved with huggingface_hub: ``model_info`` lists its files with their sizes and sha256
and pins the revision to a commit SHA; small files (config, tokenizer, shard index) are downloaded into
the huggingface_hub cache; weights files are opened as ``HttpFile`` transports on their resolve URLs, so
only headers and the bytes a comparison asks for are ever fetched. ``HF_TOKEN``, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are read when a model is opened (not at import). Offline, a model opened before is
served from the caches: its file list from a manifest kept beside the range cache, its bytes from that
cache; anything not cached is one clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from ..atomic import write_atomic
from ..errors import RemoteError, SourceNotFoundError
from .formats import FORMATS, Format, alternatives_message, format_of, index_format, shown_names
from .http import FetchStats, HttpFile, cache_root
from .local import SIDE_FILES, check_weight_map, gather_tensors, parse_weight_map
from .locations import SYNTAX, HubLocation, parse_hub
from .model import ModelSource

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True, slots=True)
class HubSettings:
    endpoint: str
    token: str | None
    offline: bool

    @classmethod
    def from_env(cls) -> "HubSettings":
        token = os.environ.get("HF_TOKEN") or None
        if token is None:
            from huggingface_hub import get_token

            token = get_token()
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        return cls(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"), token, offline)

    def headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token or False, library_name="modelkin")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    name: str  # path in the repository
    size: int
    sha256: str | None


@dataclass(frozen=True, slots=True)
class RepoListing:
    """What a comparison needs to know of a Hub repository at one commit (kept for offline use)."""

    commit: str
    files: tuple[RemoteFile, ...]

    def to_json(self) -> str:
        return json.dumps({"commit": self.commit, "files": [[f.name, f.size, f.sha256] for f in self.files]})

    @classmethod
    def from_json(cls, text: str) -> "RepoListing":
        doc = json.loads(text)
        return cls(doc["commit"], tuple(RemoteFile(*f) for f in doc["files"]))


def _manifest_path(settings: HubSettings, repo_id: str, revision: str) -> Path:
    key = hashlib.sha256(f"{settings.endpoint}/{repo_id}@{revision}".encode()).hexdigest()[:32]
    return cache_root() / "manifests" / f"{key}.json"


def _listing(repo_id: str, revision: str | None, settings: HubSettings) -> RepoListing:
    revision = revision or "main"
    manifest = _manifest_path(settings, repo_id, revision)
    if settings.offline:
        try:
            return RepoListing.from_json(manifest.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            raise RemoteError(f"HF_HUB_OFFLINE is set and revision {revision!r} was never read online here", repo_id) from None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    try:
        info = HfApi(endpoint=settings.endpoint, token=settings.token or False).model_info(
            repo_id, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise RemoteError("gated model: accept its conditions on the Hub, then set HF_TOKEN to a token of that account", repo_id) from None
    except RevisionNotFoundError:
        raise SourceNotFoundError(f"the Hub has no revision {revision!r} of this model", repo_id) from None
    except RepositoryNotFoundError:
        raise SourceNotFoundError("no such local file or folder, and no such model on the Hub (a private model needs HF_TOKEN set)", repo_id) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise RemoteError(f"the Hub answered HTTP {status} for the model's file list", repo_id) from None
    except OSError as e:  # connection refused, DNS, timeouts (httpx errors are OSErrors here or below)
        raise RemoteError(f"no local file or folder of this name, and as a Hub id: cannot reach {settings.endpoint} ({type(e).__name__}); set HF_HUB_OFFLINE=1 to use what is cached", repo_id) from None
    except Exception as e:  # httpx transport errors are not OSErrors
        if type(e).__module__.startswith(("httpx", "httpcore")):
            raise RemoteError(f"no local file or folder of this name, and as a Hub id: cannot reach {settings.endpoint} ({type(e).__name__}); set HF_HUB_OFFLINE=1 to use what is cached", repo_id) from None
        raise
    files = tuple(
        RemoteFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None) for s in (info.siblings or [])
    )
    listing = RepoListing(info.sha, files)
    for key in {revision, info.sha}:  # a commit pins the listing; a branch name is refreshed online
        path = _manifest_path(settings, repo_id, key)
        try:
            write_atomic(path, listing.to_json().encode())
        except OSError:
            pass
    return listing


def _weights_files(names: list[str]) -> list[str]:
    """Every weights file (or shard index) of a repository, at any depth."""
    return sorted(n for n in names if index_format(n) is not None
                  or (fmt := format_of(n)) is not None and fmt.weights_in_folder(n.rsplit("/", 1)[-1]))


def _choose_weights(names: list[str], where: str) -> tuple[Format, str | None, list[str]]:
    """(format, shard index file or None, weights files) among a repository's top-level files."""
    top = sorted(n for n in names if "/" not in n)
    for fmt in FORMATS:
        indexes = [n for n in top if fmt.index_suffix and n.endswith(fmt.index_suffix)]
        if indexes:
            preferred = [n for n in indexes if n in {p + ".index.json" for p in fmt.preferred}]
            return fmt, (preferred or indexes)[0], []
        singles = [n for n in fmt.preferred if n in top] or [n for n in top if fmt.weights_in_folder(n)]
        if singles:
            if len(singles) > 1 and fmt.whole_file:
                raise SourceNotFoundError(alternatives_message(fmt, singles, f"pick one as {SYNTAX}"), where)
            return fmt, None, singles[:1] if singles[0] in fmt.preferred else singles
    deeper = _weights_files(names)
    if deeper:
        shown = shown_names(deeper)
        raise SourceNotFoundError(f"holds no weights at its top level; pick a file as {SYNTAX} ({shown})", where)
    raise SourceNotFoundError("holds no weights modelkin can read (looked for " + ", ".join(s for f in FORMATS for s in f.suffixes) + ")", where)


def _pick(where: HubLocation, names: list[str], location: str) -> tuple[Format, str | None, list[str]]:
    """(format, shard index or None, weights files) that a location names in a repository."""
    if where.path is None and where.tag is None:
        return _choose_weights(names, location)
    weights = _weights_files(names)
    shown = shown_names(weights) or "none"
    if where.path is not None:
        if where.path not in names:
            raise SourceNotFoundError(f"the repository holds no file {where.path!r} (its weights files: {shown})", location)
        if (fmt := index_format(where.path)) is not None:
            return fmt, where.path, []
        if (fmt := format_of(where.path)) is None:
            raise SourceNotFoundError(f"{where.path!r} is not a weights file or a shard index ({', '.join(s for f in FORMATS for s in f.suffixes)})", location)
        return fmt, None, [where.path]
    found = [n for n in weights if index_format(n) is None and where.matches(n)]
    if not found:
        raise SourceNotFoundError(f"no weights file of the repository matches the tag {where.tag!r} (its weights files: {shown})", location)
    fmt = format_of(found[0])
    if len(found) > 1:
        raise SourceNotFoundError(alternatives_message(fmt, found, f"the tag {where.tag!r} matches several; give the file as ORG/NAME/PATH/IN/REPO"), location)
    return fmt, None, found


def open_hub(location: str, revision: str | None = None, stats: FetchStats | None = None) -> ModelSource:
    """A Hub model: ``org/name``, ``org/name:TAG`` (the weights file whose path carries the quantisation
    tag) or ``org/name/path/in/repo`` (one file); config and tokenizer files come from the weights' folder."""
    where = parse_hub(location) or HubLocation(location)
    repo_id = where.repo_id
    settings = HubSettings.from_env()
    listing = _listing(repo_id, revision, settings)
    by_name = {f.name: f for f in listing.files}
    fmt, index_name, singles = _pick(where, list(by_name), location)
    folder = (index_name or singles[0]).rpartition("/")[0]
    prefix = folder + "/" if folder else ""
    stats = stats or FetchStats()

    def small(name: str) -> Path:
        return _download(repo_id, name, listing.commit, settings)

    def weights(name: str) -> HttpFile:
        from huggingface_hub import hf_hub_url

        f = by_name.get(name)
        if f is None:
            raise SourceNotFoundError(f"the shard index names {name!r}, which the repository does not hold", f"{repo_id}/{index_name}")
        return HttpFile(
            hf_hub_url(repo_id, name, revision=listing.commit, endpoint=settings.endpoint), size=f.size,
            headers=settings.headers(), identity=f"hub:{settings.endpoint}/{repo_id}@{listing.commit}/{name}",
            relative_name=name, reported_sha256=f.sha256, stats=stats, offline=settings.offline,
        )

    from concurrent.futures import ThreadPoolExecutor

    # Config and tokenizer files are fetched while the weights' headers are read (each a round trip or two).
    side = [n for n in ("config.json", *SIDE_FILES) if prefix + n in by_name]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="modelkin-hub") as pool:
        fetched = {n: pool.submit(small, prefix + n) for n in side}
        if index_name is not None:
            weight_map = parse_weight_map(small(index_name).read_bytes(), f"{repo_id}/{index_name}")
            names = list(dict.fromkeys(weight_map.values()))
            shards = dict(zip(names, pool.map(lambda n: fmt.opener(weights(prefix + n)), names)))
            check_weight_map(weight_map, shards, f"{repo_id}/{index_name}")
            files = tuple(shards.values())
        else:
            files = tuple(pool.map(lambda n: fmt.opener(weights(n)), singles))
        paths = {n: f.result() for n, f in fetched.items()}
    config_path = paths.pop("config.json", None)
    return _source(location, f"{settings.endpoint}/{repo_id}", files, config_path, paths, listing.commit)


def _download(repo_id: str, name: str, commit: str, settings: HubSettings) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, name, revision=commit, endpoint=settings.endpoint,
                                    token=settings.token or False, local_files_only=settings.offline,
                                    cache_dir=os.environ.get("HF_HUB_CACHE") or None))
    except Exception as e:  # huggingface_hub raises its own errors and httpx's; all become one line
        raise RemoteError(f"cannot fetch {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", repo_id) from None


def _source(location: str, root: str, files, config_path: Path | None, extra: dict[str, Path], revision: str | None) -> ModelSource:
    from .local import read_config

    config = read_config(config_path) if config_path is not None else None
    if config is None:
        config = next((c for f in files if (c := f.embedded_config()) is not None), None)
    return ModelSource(location, root, files, gather_tensors(files, location), config, config_path, extra, revision)


def open_url(url: str, stats: FetchStats | None = None) -> ModelSource:
    """A weights file (or a shard index) at a plain URL; config and tokenizer files are looked for beside it."""
    settings = HubSettings.from_env()
    stats = stats or FetchStats()
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    side = _SideFiles(url, settings)

    def weights(u: str) -> HttpFile:
        return HttpFile(u, headers=_url_headers(u, settings), stats=stats, offline=settings.offline)

    if (fmt := index_format(name)) is not None:
        from .local import parse_weight_map as parse

        index = weights(url)
        weight_map = parse(index.get_all(), url)
        shards = {n: fmt.opener(weights(urljoin(url, n))) for n in dict.fromkeys(weight_map.values())}
        check_weight_map(weight_map, shards, url)
        files = tuple(shards.values())
    elif (fmt := format_of(name)) is not None:
        files = (fmt.opener(weights(url)),)
    else:
        raise SourceNotFoundError("a URL must name a weights file or a shard index (" + ", ".join(s for f in FORMATS for s in f.suffixes) + ")", url)
    extra = {n: p for n in SIDE_FILES if (p := side.get(n)) is not None}
    return _source(url, url.rsplit("/", 1)[0], files, side.get("config.json"), extra, None)


def _url_headers(url: str, settings: HubSettings) -> dict[str, str]:
    """The Hub token goes only to the Hub's own endpoint, never to a third-party URL."""
    same = urlsplit(url).netloc == urlsplit(settings.endpoint).netloc
    return settings.headers() if same else {"user-agent": "modelkin"}


class _SideFiles:
    """config.json / tokenizer files next to a URL, fetched once into the cache (absent ones are None)."""

    def __init__(self, url: str, settings: HubSettings):
        self.url, self.settings = url, settings
        self.folder = cache_root() / "side" / hashlib.sha256(url.encode()).hexdigest()[:32]

    def get(self, name: str) -> Path | None:
        path = self.folder / name
        if path.is_file():
            return path
        if self.settings.offline:
            return None
        target = urljoin(self.url, name)
        try:
            data = HttpFile(target, headers=_url_headers(target, self.settings), cache=False).get_all()
        except RemoteError:
            return None  # absent beside this URL: the model simply has no such file
        write_atomic(path, data)
        return path
