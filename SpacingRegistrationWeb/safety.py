"""What the web server accepts from the network: which address it listens on, and uploaded files.

The server has no accounts: anyone who reaches its port can upload files, read volumes by path and run studies on
this machine. It therefore listens on the loopback address unless told otherwise with a flag that names the risk,
and every upload is checked before a byte is written: a well-formed request, a size limit, a plain file name
written only inside the server's upload folder, and (for headers with a separate data file) data inside it too.
Standard library only, so the checks are tested without starting a server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from pathlib import Path

#: Total size of one upload request (all its files), unless --max-upload-mb says otherwise.
DEFAULT_MAX_UPLOAD_BYTES = 1024 ** 3
REMOTE_RISK = ("the server has no login: anyone who can reach {host}:{port} can upload files, load volumes by "
               "path and run registrations on this machine")


class UnsafeHostError(ValueError):
    """The server was asked to listen beyond this machine without --allow-remote."""


class UploadError(ValueError):
    """An upload is refused; the message says why in one line (shown in the browser)."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, port: int, allow_remote: bool) -> str | None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; return the warning to print when it is allowed."""
    if is_loopback(host):
        return None
    risk = REMOTE_RISK.format(host=host, port=port)
    if not allow_remote:
        raise UnsafeHostError(f"refusing to listen on {host}: {risk}. Use --host 127.0.0.1 (the default), or "
                              "--allow-remote to accept this risk on a trusted network")
    return f"WARNING: listening on {host} (--allow-remote): {risk}"


_UNSAFE_CHARACTERS = re.compile(r"[^\w.+()\- ]", re.ASCII)


def safe_file_name(name) -> str:
    """A plain file name from a client's: no folder part (either separator), no control or shell characters, no
    leading dot, at most 200 characters with the extension kept. Raises :class:`UploadError` when nothing usable
    remains."""
    if not isinstance(name, str) or not name.strip():
        raise UploadError("an uploaded file has no name")
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name))[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    base = _UNSAFE_CHARACTERS.sub("_", base).strip(" ")
    if base.strip("._ ") == "":
        raise UploadError(f"the uploaded file name {name!r} has no usable characters")
    if base.startswith("."):
        base = "_" + base[1:]
    if len(base) > 200:
        stem, dot, extension = base.partition(".")
        base = stem[:200 - len(dot + extension)] + dot + extension if len(extension) < 50 else base[:200]
    return base


def _content(file) -> bytes:
    content = file.get("content")
    if isinstance(content, list) and all(isinstance(part, (bytes, bytearray)) for part in content):
        return b"".join(content)
    if isinstance(content, (bytes, bytearray)):
        return bytes(content)
    raise UploadError(f"the upload of {file.get('name')!r} carries no file content")


def save_uploads(files, folder, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> list[Path]:
    """Check a browser upload (trame's list of {name, size, content} dicts) and write its files into ``folder``
    (which must exist). All or nothing: any problem raises :class:`UploadError` and leaves no file behind."""
    if isinstance(files, dict):
        files = [files]
    if not isinstance(files, (list, tuple)) or not files or not all(isinstance(f, dict) for f in files):
        raise UploadError("malformed upload request (expected a list of files)")
    declared = sum(f["size"] for f in files if isinstance(f.get("size"), int) and f["size"] > 0)
    if declared > max_bytes:  # before touching the content
        raise UploadError(f"the upload is {declared / 1024 ** 2:.1f} MB, more than the limit of "
                          f"{max_bytes / 1024 ** 2:.1f} MB (--max-upload-mb)")
    contents, total = [], 0
    for file in files:
        data = _content(file)
        total += len(data)
        if total > max_bytes:
            raise UploadError(f"the upload is more than the limit of {max_bytes / 1024 ** 2:.1f} MB (--max-upload-mb)")
        if isinstance(file.get("size"), int) and file["size"] != len(data):
            raise UploadError(f"the upload of {file.get('name')!r} is incomplete ({len(data)} of {file['size']} bytes)")
        contents.append((safe_file_name(file.get("name")), data))
    folder = Path(folder).resolve()
    names = _unique([name for name, _ in contents])
    written = []
    try:
        for name, (_, data) in zip(names, contents):
            target = folder / name
            if target.resolve().parent != folder:
                raise UploadError(f"the uploaded file name {name!r} leads outside the upload folder")
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            written.append(target)
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
        for target in written:
            outside = [p for p in detached_data_files(target) if p.resolve().parent != folder]
            if outside:
                raise UploadError(f"{target.name} points to a data file outside the upload ({outside[0]}); upload the "
                                  "header with its data file, referenced by name only")
    except OSError as error:
        _remove(written)
        raise UploadError(f"the upload could not be saved: {error.strerror or error}") from None
    except UploadError:
        _remove(written)
        raise
    return written


def detached_data_files(header: Path) -> list[Path]:
    """Data files a NRRD (.nhdr/.nrrd) or MetaImage (.mhd/.mha) header names; relative names are beside it."""
    if not header.name.lower().endswith((".nhdr", ".nrrd", ".mhd", ".mha")):
        return []
    keys = ("data file:", "datafile:") if header.name.lower().endswith((".nhdr", ".nrrd")) else ("elementdatafile",)
    found = []
    with header.open("rb") as stream:
        for raw in stream.read(1 << 16).split(b"\n"):
            line = raw.decode("latin-1").strip()
            lowered = line.lower().replace(" ", "")
            if lowered == "":
                break  # the end of an NRRD header
            for key in keys:
                if lowered.startswith(key.replace(" ", "")):
                    value = line.split("=", 1)[1] if key == "elementdatafile" else line.split(":", 1)[1]
                    value = value.strip()
                    if value and value.upper() != "LOCAL" and not value.upper().startswith("LIST"):
                        path = Path(value)
                        found.append(path if path.is_absolute() else header.parent / path)
    return found


def _unique(names: list[str]) -> list[str]:
    seen, result = set(), []
    for name in names:
        candidate, number = name, 1
        while candidate.lower() in seen:
            stem, dot, extension = name.partition(".")
            candidate, number = f"{stem}-{number}{dot}{extension}", number + 1
        seen.add(candidate.lower())
        result.append(candidate)
    return result


def _remove(paths):
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass
