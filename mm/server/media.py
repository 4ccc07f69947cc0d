"""Turn a client's ``image_url`` into image bytes or a path, reading nothing the server was not allowed to.

``data:`` URLs are decoded (size-checked); ``http(s)`` URLs are refused (the server fetches nothing
and may be offline); local paths and ``file://`` URLs only with ``allow_local_files``.

>>> import base64
>>> image_source("data:image/png;base64," + base64.b64encode(b"PNG...").decode(), max_bytes=100)
b'PNG...'
>>> image_source("https://example.com/cat.png", max_bytes=100)
Traceback (most recent call last):
...
mm.server.errors.APIError: remote image URLs are not fetched by this server ('https://example.com/cat.png'); send the image inline as a data: URL (data:image/png;base64,...)
>>> image_source("/etc/passwd", max_bytes=100)
Traceback (most recent call last):
...
mm.server.errors.APIError: local file paths are refused ('/etc/passwd'); send the image as a data: URL, or start the server with --allow-local-files
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlparse

from mm.server.errors import APIError, bad_request


def too_large(what: str, size: int, max_bytes: int) -> APIError:
    return APIError(413, f"{what} is {size} bytes; the limit is {max_bytes} bytes (--max-file-size)",
                    code="file_too_large")


def image_source(url: str, *, max_bytes: int, allow_local_files: bool = False) -> bytes | Path:
    """The bytes of a ``data:`` URL, or a checked local path when allowed; an :class:`APIError` otherwise."""
    url = url.strip()
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep or not header.endswith(";base64"):
            raise bad_request("an image data: URL must be base64-encoded: data:image/png;base64,...",
                              param="image_url")
        mime = header[: -len(";base64")]
        if mime and not mime.startswith("image/"):
            raise bad_request(f"the data: URL has media type {mime!r}; an image (image/png, image/jpeg ...) "
                              "is expected", param="image_url")
        if len(payload) * 3 // 4 > max_bytes:
            raise too_large("the image", len(payload) * 3 // 4, max_bytes)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"the image data: URL is not valid base64 ({exc})", param="image_url") from exc
        if not data:
            raise bad_request("the image data: URL is empty", param="image_url")
        return data
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        raise bad_request(f"remote image URLs are not fetched by this server ({url!r}); send the image inline as a "
                          "data: URL (data:image/png;base64,...)", param="image_url", code="remote_url_refused")
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive
        raise bad_request(f"image URL scheme {scheme!r} is not supported; send a data: URL", param="image_url")
    if not allow_local_files:
        raise bad_request(f"local file paths are refused ({url!r}); send the image as a data: URL, or start the "
                          "server with --allow-local-files", param="image_url", code="local_file_refused")
    path = Path(unquote(urlparse(url).path) if scheme == "file" else url).expanduser()
    if not path.is_file():
        raise bad_request(f"image file {str(path)!r} does not exist or is not a file", param="image_url")
    size = path.stat().st_size
    if size > max_bytes:
        raise too_large(f"image file {str(path)!r}", size, max_bytes)
    return path
