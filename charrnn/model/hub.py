"""Checkpoints on the Hugging Face Hub: ``hf:USER/NAME[@REVISION]`` wherever a checkpoint goes.

A Hub repository is one checkpoint folder (config.json, model.safetensors, tokenizer.json and
the card, README.md: charrnn/model/checkpoint.py). ``download`` fetches those files and nothing
else (``allow_patterns``: never a pickle such as trainer_state.pt, never code) into
huggingface_hub's own cache, and returns the snapshot folder, which is then loaded as any local
folder is (safetensors: no code runs).

huggingface_hub is the hub extra (EXTRA), imported inside ``download``. Offline
(HF_HUB_OFFLINE=1) a cached repository loads and an uncached one fails at once; with the
Hub out of reach the failure is one line within seconds (ETAG_TIMEOUT, no retries).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

from charrnn.errors import CharRNNError, optional_import

PREFIX = "hf:"
EXTRA = "hub"
PATTERNS = ["config.json", "model.safetensors", "tokenizer.json", "README.md"]
ETAG_TIMEOUT = 5.0        # seconds to wait for the Hub's answer about a file
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_hub_id(path: Union[str, Path]) -> bool:
    """Whether ``path`` names a Hub repository: a str starting with ``hf:`` (a Path never does:
    a local folder named so is given as a Path, or as ./hf:...)."""
    return isinstance(path, str) and path.startswith(PREFIX)


def parse_hub_id(spec: str) -> tuple[str, Optional[str]]:
    """'hf:USER/NAME[@REVISION]' -> (repo id 'USER/NAME', revision or None). Raises
    CharRNNError for any other spelling."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    repo, at, revision = body.partition("@")
    if not _REPO.match(repo) or (at and not revision):
        raise CharRNNError(f"bad Hub model id {spec!r}: write hf:USER/NAME or "
                           "hf:USER/NAME@REVISION (a branch, tag or commit)")
    return repo, revision or None


def download(spec: str) -> Path:
    """The local snapshot folder of the Hub model ``spec`` (hf:USER/NAME[@REVISION]), with
    only the checkpoint's files (PATTERNS) fetched into huggingface_hub's cache (HF_HUB_CACHE;
    HF_HUB_OFFLINE=1 reads the cache alone). Raises CharRNNError, in one line, for a bad id, a
    repository or revision that does not exist or is gated, a Hub out of reach while the model
    is not cached, or a missing hub extra."""
    repo, revision = parse_hub_id(spec)
    hub = optional_import("huggingface_hub", EXTRA, "loading a model from the Hub")
    errors = optional_import("huggingface_hub.errors", EXTRA, "loading a model from the Hub")
    try:
        folder = hub.snapshot_download(repo, revision=revision, allow_patterns=PATTERNS,
                                       etag_timeout=ETAG_TIMEOUT, library_name="charrnn")
    except errors.GatedRepoError:
        raise CharRNNError(f"{spec}: the repository is gated: accept its terms on the Hub and "
                           "log in (hf auth login)") from None
    except errors.RepositoryNotFoundError:
        raise CharRNNError(f"{spec}: no such model repository on the Hub (or it is private: "
                           "log in with hf auth login)") from None
    except errors.RevisionNotFoundError:
        raise CharRNNError(f"{spec}: the repository has no revision {revision!r}: give a "
                           "branch, tag or commit it has") from None
    except errors.LocalEntryNotFoundError:
        raise CharRNNError(f"{spec} is not in the Hugging Face cache and the Hub cannot be "
                           "reached (offline, or HF_HUB_OFFLINE=1): connect, or download it "
                           "once while online") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() \
            else type(err).__name__
        raise CharRNNError(f"cannot download {spec} from the Hub: {reason}") from None
    return _checked(Path(folder), spec)


def _checked(folder: Path, spec: str) -> Path:
    """``folder`` if it holds a checkpoint's config.json. Raises CharRNNError otherwise."""
    if not (folder / "config.json").is_file():
        raise CharRNNError(f"{spec} is not a charrnn model (it has no config.json): a charrnn "
                           "Hub repository is one checkpoint folder, uploaded whole")
    return folder
