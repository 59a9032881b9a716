"""Models from the Hugging Face Hub, stored where the rest of the ecosystem stores them.

A Hub model is named by its repository id, optionally with a revision:
``SmilingWolf/wd-vit-tagger-v3`` or ``SmilingWolf/wd-vit-tagger-v3@v2.0`` (a branch, tag or
commit).  Its files live in the user's Hub cache, the directory that kohya-ss' scripts, the
WD14 web UI extension, imgutils and the ``hf`` command share::

    HUB_CACHE/models--ORG--NAME/refs/REVISION          the commit a branch or tag points to
    HUB_CACHE/models--ORG--NAME/snapshots/COMMIT/FILE  the file (usually a link into blobs/)

``HUB_CACHE`` is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (read at each call).

:func:`hub_files` first looks in that cache, with no network at all: files already there
(downloaded by any tool) are used as they are, never copied into illust2vec's own store.
Missing files are fetched only when asked (``download=True``: ``models download``, ``--download``),
with ``huggingface_hub`` (``pip install 'illust2vec[hub]'``) into the same cache, honouring ``HF_ENDPOINT`` (a mirror), ``HF_TOKEN`` (gated or private
repositories) and ``HF_HUB_OFFLINE=1`` / ``ILLUST2VEC_OFFLINE=1`` / ``--offline`` (no network:
a clear error naming what is missing).

The WD contract: a repository with ``model.onnx`` and ``selected_tags.csv`` (SmilingWolf's
taggers and their fine-tunes) is a tagger with an embedding (:func:`illust2vec.models.families.wd.load_wd_files`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from illust2vec.errors import DownloadError, Illust2VecError, ModelNotFoundError

__all__ = [
    "WD_CONTRACT",
    "HubRef",
    "cached_file",
    "hub_cache_dir",
    "hub_files",
    "hub_offline",
    "is_repo_id",
]

#: The files of a WD-contract repository, by role.
WD_CONTRACT: dict[str, str] = {"onnx": "model.onnx", "tags": "selected_tags.csv"}

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_TRUE = ("1", "true", "yes", "on")


def is_repo_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repository id (``org/name``, optionally ``@revision``)."""
    return bool(_REPO_RE.match(name.split("@", 1)[0])) and ".." not in name


@dataclass(frozen=True)
class HubRef:
    """A repository and a revision (branch, tag or 40-hex commit)."""

    repo_id: str
    revision: str = "main"

    @classmethod
    def parse(cls, text: str, revision: str | None = None) -> HubRef:
        repo, _, rev = text.partition("@")
        if not is_repo_id(repo):
            raise Illust2VecError(f"{text!r} is not a Hugging Face repository id (ORG/NAME[@REVISION])")
        return cls(repo, revision or rev or "main")

    def __str__(self) -> str:
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"


def hub_cache_dir() -> Path:
    """The Hub cache directory, by the same environment variables as ``huggingface_hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline(offline: bool | None = None) -> bool:
    """No network: ``offline`` when given, else ``HF_HUB_OFFLINE`` or ``ILLUST2VEC_OFFLINE``."""
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "ILLUST2VEC_OFFLINE"))


def _repo_dir(ref: HubRef, cache: Path, repo_type: str = "model") -> Path:
    return cache / (f"{repo_type}s--" + ref.repo_id.replace("/", "--"))


def _commit(ref: HubRef, cache: Path, repo_type: str = "model") -> str | None:
    if _COMMIT_RE.match(ref.revision):
        return ref.revision
    try:
        commit = (_repo_dir(ref, cache, repo_type) / "refs" / ref.revision).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT_RE.match(commit) else None


def cached_file(ref: HubRef, filename: str, cache: Path | None = None, *, repo_type: str = "model") -> Path | None:
    """The file of ``ref`` in the Hub cache, if it is there (no network); ``repo_type`` ``"dataset"`` for a dataset."""
    cache = cache if cache is not None else hub_cache_dir()
    commit = _commit(ref, cache, repo_type)
    if commit is None:
        return None
    path = _repo_dir(ref, cache, repo_type) / "snapshots" / commit / filename
    try:
        return path if path.is_file() and path.stat().st_size > 0 else None
    except OSError:
        return None


def _hf_download_command(ref: HubRef, missing: list[str]) -> str:
    rev = "" if ref.revision == "main" else f" --revision {ref.revision}"
    return f"hf download {ref.repo_id} {' '.join(missing)}{rev}"


def _missing_details(ref: HubRef, missing: list[str], cache: Path) -> str:
    lines = [f"{ref}: not in the Hugging Face cache ({cache}):"]
    lines += [f"  {name} -> {_repo_dir(ref, cache) / 'snapshots' / '<commit>' / name}" for name in missing]
    lines.append(f"on a machine with network: {_hf_download_command(ref, missing)}, then copy the cache here "
                 "(or point HF_HOME / HF_HUB_CACHE at it)")
    return "\n".join(lines)


def _not_found(ref: HubRef, missing: list[str], cache: Path, why: str) -> ModelNotFoundError:
    """The short error of a repository that is not in the cache: one command to run."""
    if why == "offline":
        message = (f"{ref}: not in the Hugging Face cache ({cache}) and downloads are off (offline): run "
                   f"'{_hf_download_command(ref, missing)}' on a machine with network and copy the cache here.")
    elif why == "no-hub":
        message = (f"{ref}: not in the Hugging Face cache; downloading it needs huggingface_hub: "
                   "pip install 'illust2vec[hub]'.")
    else:
        message = (f"{ref}: not downloaded: run 'illust2vec models download {ref}' (or add --download).")
    return ModelNotFoundError(message, _missing_details(ref, missing, cache))


def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def hub_files(
    ref: HubRef | str,
    files: dict[str, str] = WD_CONTRACT,
    *,
    download: bool = False,
    offline: bool | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Local paths of a repository's files by role, from the Hub cache or (``download=True``) fetched into it.

    ``files`` maps roles to file names in the repository (default: the WD contract).
    Raises :class:`~illust2vec.errors.ModelNotFoundError` when files are missing and the
    network may not be used, and :class:`~illust2vec.errors.DownloadError` when the Hub
    refuses or lacks them (the repository, the file and the HTTP reason named).
    """
    ref = HubRef.parse(ref) if isinstance(ref, str) else ref
    cache = hub_cache_dir()
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for role, name in files.items():
        path = cached_file(ref, name, cache)
        if path is None:
            missing[role] = name
        else:
            found[role] = path
    if not missing:
        return found
    if not download:
        raise _not_found(ref, list(missing.values()), cache, "offline" if hub_offline(offline) else "not-asked")
    if hub_offline(offline):
        raise _not_found(ref, list(missing.values()), cache, "offline")
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise _not_found(ref, list(missing.values()), cache, "no-hub") from None
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at import
    token = os.environ.get("HF_TOKEN") or None  # None: huggingface_hub's own lookup (stored login)
    bar = None if progress else _silent_tqdm()
    for role, name in missing.items():
        try:
            path = huggingface_hub.hf_hub_download(
                ref.repo_id, name, revision=ref.revision, cache_dir=cache, endpoint=endpoint, token=token,
                library_name="illust2vec", tqdm_class=bar,
            )
        except hf_errors.GatedRepoError:
            raise DownloadError(f"{ref}: {name}: access denied, the repository is gated; accept its terms on the "
                                "Hub and set HF_TOKEN") from None
        except hf_errors.RepositoryNotFoundError:
            raise DownloadError(f"{ref}: repository not found on {endpoint or 'huggingface.co'} (or private: "
                                "set HF_TOKEN)") from None
        except hf_errors.RevisionNotFoundError:
            raise DownloadError(f"{ref}: revision {ref.revision!r} not found") from None
        except hf_errors.RemoteEntryNotFoundError:
            raise DownloadError(f"{ref}: the repository has no {name}; a WD-contract model needs "
                                f"{' and '.join(WD_CONTRACT.values())}") from None
        except (hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DownloadError(f"{ref}: cannot download {name} ({reason}); or run "
                                f"'{_hf_download_command(ref, [name])}' elsewhere and copy the cache here") from None
        found[role] = Path(path)
    return found
