"""Model resolution: a local directory, an HF-cache entry, or a hub id.

The hub is often unreachable on the machines mm runs on. Resolution therefore
tries, in order: a local directory; the HF cache (no network); and only when
the machine is online, a download. Offline (``HF_HUB_OFFLINE=1`` or no route
to the hub) a missing model fails at once with a message that names the id,
where mm looked, and how to pass a local directory.

>>> resolve_model("/nonexistent/dir")
Traceback (most recent call last):
...
mm.errors.ModelNotFoundError: model '/nonexistent/dir' not found: ...
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path

from mm.errors import InvalidInputError, ModelNotFoundError

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_HOST = "huggingface.co"


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set or the hub cannot be reached within 1.5 s."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return not _hub_reachable()


def _hub_reachable(timeout: float = 1.5) -> bool:
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((_HUB_HOST, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # DNS lookups ignore socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def cache_dir() -> Path:
    """The HF hub cache directory mm reads from."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def resolve_model(model: str | os.PathLike[str], *, required: tuple[str, ...] = ("config.json",)) -> Path:
    """Return a local directory holding ``model``'s files.

    ``required`` names files that must be present (checked for local folders).
    """
    if model is None or (isinstance(model, str) and not model.strip()):
        raise InvalidInputError("no model given: pass a local checkpoint directory or a hub id such as "
                                "'LiquidAI/LFM2-350M'")
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        missing = [name for name in required if not (path / name).exists()]
        if missing:
            raise ModelNotFoundError(
                f"model directory {str(path)!r} is missing {', '.join(missing)}; expected a checkpoint folder "
                f"as saved by save_pretrained (with {', '.join(required)})"
            )
        return path.resolve()
    looked = [f"local path {str(path)!r}"]
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        cached = _from_cache(text)
        looked.append(f"HF cache {str(cache_dir())!r}")
        if cached is not None:
            return cached
        if not is_offline():
            return _download(text)
        looked.append("the hub (offline: HF_HUB_OFFLINE is set or huggingface.co is unreachable)")
    raise ModelNotFoundError(
        f"model {text!r} not found: looked in {'; '.join(looked)}. Pass a local checkpoint directory "
        f"(model='/path/to/checkpoint'), or download it first on a machine with network access "
        f"(huggingface-cli download {text if _HUB_ID.match(text) else 'ORG/NAME'}) and copy the HF cache over."
    )


def _from_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        log.info("downloading %s from the hub", repo_id)
        return Path(snapshot_download(repo_id))
    except Exception as exc:
        raise ModelNotFoundError(f"could not download {repo_id!r} from the hub: {exc}") from exc
