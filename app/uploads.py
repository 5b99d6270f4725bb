"""Uploads: a streaming ``POST /upload`` route with a server-side size limit and server-chosen names.

The browser (``assets/upload.js``) sends the raw file as the request body
with its original name, URL-encoded, in the ``X-File-Name`` header.  The body is streamed
to disk in chunks (server memory stays flat whatever the size); a request
over the limit is refused from its ``Content-Length`` before anything is
read, and a body that grows past it is cut off and removed.  The file is
stored as ``DATA_DIR/uploads/<random>.<ext>``; its original name, kept only
for display, goes into ``<random>.json`` beside it.
"""
from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from urllib.parse import unquote

from flask import jsonify, request

from scmm import runfolder

UPLOAD_SUFFIXES = (".h5mu", ".h5ad", ".h5")
CHUNK = 2 ** 20
#: every request except an upload is refused above this size (Dash callbacks are small)
MAX_CALLBACK_BYTES = 32 * 2 ** 20


def display_name(name: str) -> str:
    """The original file name made safe to show: no paths, no control characters, at most 200 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:200] or "upload"


def save_stream(stream, folder: Path, original: str, limit: int) -> tuple[str, int]:
    """Copy ``stream`` into ``folder`` under a new random name; return (file name, bytes).

    Raises ``ValueError`` for a wrong file type and ``OverflowError`` past ``limit``
    bytes; nothing is left behind on any failure.
    """
    suffix = Path(display_name(original)).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise ValueError(f"{display_name(original)!r}: only {', '.join(UPLOAD_SUFFIXES)} files can be "
                         "uploaded (copy mtx folders into the data folder)")
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(8) + suffix
    meta = folder / (Path(name).stem + ".json")
    sizes = []

    def copy(tmp: Path) -> None:
        size = 0
        with open(tmp, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise OverflowError(f"the file is larger than the server's upload limit of "
                                        f"{limit / 2 ** 20:,.0f} MB")
                out.write(chunk)
        if size == 0:
            raise ValueError("the file is empty")
        runfolder.write_json_atomic(meta, {"original_name": display_name(original), "size": size,
                                           "uploaded": time.time()})
        sizes.append(size)

    try:
        runfolder.replace_atomic(copy, folder / name)
    except BaseException:
        meta.unlink(missing_ok=True)
        raise
    size = sizes[0]
    return name, size


def register(server, uploads_dir: Path, limit: int) -> None:
    """Add ``POST /upload`` and the request-size guard to the Flask ``server``."""

    @server.before_request
    def limit_request_size():
        size = request.content_length
        if request.path != "/upload" and size is not None and size > MAX_CALLBACK_BYTES:
            return jsonify(error=f"request of {size:,} bytes refused (limit {MAX_CALLBACK_BYTES:,})"), 413
        return None

    @server.route("/upload", methods=["POST"])
    def upload():
        if request.headers.get("X-Requested-With") != "scmm-upload":
            return jsonify(error="uploads come from the Data page"), 400
        if request.content_length is None:
            return jsonify(error="the upload must state its size (Content-Length)"), 411
        if request.content_length > limit:
            return jsonify(error=f"the file ({request.content_length / 2 ** 20:,.0f} MB) is larger than "
                                 f"the server's upload limit of {limit / 2 ** 20:,.0f} MB; copy it into "
                                 "the data folder instead"), 413
        original = unquote(request.headers.get("X-File-Name", ""))
        try:
            name, size = save_stream(request.stream, uploads_dir, original, limit)
        except OverflowError as err:
            return jsonify(error=str(err)), 413
        except ValueError as err:
            return jsonify(error=str(err)), 400
        except OSError as err:
            return jsonify(error=f"the server could not store the file: {err.strerror or err}"), 507
        return jsonify(ok=True, id=f"{uploads_dir.name}/{name}", name=display_name(original), size=size)
