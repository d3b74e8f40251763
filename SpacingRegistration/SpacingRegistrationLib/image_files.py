"""Image files: is every voxel the header promises really in the file?

ITK reads a NIfTI file cut short without an error (the missing voxels become zeros) and refuses a MetaImage cut
short with a misleading "No such file or directory". :func:`verify_image_file` parses just enough of the
header of each format the project is used with — NIfTI-1/2 (``.nii``, ``.nii.gz``, ``.hdr``/``.img``), NRRD
(attached or detached data, raw/gzip/bzip2/ascii/hex encodings), MetaImage (``.mha``, ``.mhd`` with a local or
separate data file, compressed or not) — and checks the data size against the file (or the decompressed
stream, which must also end properly). Any other gzip file is checked for a complete stream; any other format
is left to ITK. Only the standard library is used.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

CHUNK = 1 << 20


class ImageFileError(ValueError):
    """The file cannot hold the image its header describes; the message says what is wrong (no file name)."""


def verify_image_file(path) -> None:
    """Raise :class:`ImageFileError` when ``path`` is a folder, empty, unreadable, or holds fewer voxel bytes than
    its header promises. Formats this module does not parse pass (ITK reads them as it can)."""
    path = Path(path)
    if path.is_dir():
        raise ImageFileError("is a folder, not an image file (for a DICOM series, convert it to one NRRD or NIfTI "
                             "file first, e.g. with Slicer)")
    size = path.stat().st_size
    if size == 0:
        raise ImageFileError("is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except PermissionError:
        raise ImageFileError("cannot be read: permission denied") from None
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz")):
        _verify_nifti(path)
    elif name.endswith((".nrrd", ".nhdr")):
        _verify_nrrd(path)
    elif name.endswith((".mha", ".mhd")):
        _verify_metaimage(path)
    elif name.endswith((".img", ".img.gz")):  # the data half of a .hdr/.img pair: check the pair from its header
        stem = path.name[:-len(".img.gz")] if name.endswith(".gz") else path.stem
        header = next((h for h in (path.with_name(stem + ".hdr"), path.with_name(stem + ".hdr.gz")) if h.is_file()), None)
        if header is not None:
            _verify_nifti(header)
    elif name.endswith(".gz"):
        _stream_length(path, "gzip")


# -- compressed streams -------------------------------------------------------------------------------------------

def _stream_length(source, encoding: str, offset: int = 0, limit: int | None = None, needed: int | None = None) -> int:
    """Decompressed length of the ``encoding`` (gzip, zlib or bzip2) stream in ``source`` from ``offset`` (at most
    ``limit`` compressed bytes); raise when the stream is cut short or damaged. Nothing is kept in memory."""
    def fresh():
        return bz2.BZ2Decompressor() if encoding == "bzip2" else zlib.decompressobj(31 if encoding == "gzip" else 15)

    decompressor, total, remaining, pending = fresh(), 0, limit, b""
    with open(source, "rb") as stream:
        stream.seek(offset)

        def read() -> bytes:
            nonlocal remaining
            chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if remaining is not None:
                remaining -= len(chunk)
            return chunk

        try:
            while chunk := pending or read():
                pending = b""
                total += len(decompressor.decompress(chunk))
                if decompressor.eof:
                    rest = decompressor.unused_data or (read() if encoding == "gzip" else b"")
                    if encoding == "gzip" and rest[:2] == b"\x1f\x8b":  # the next member of a multi-member file
                        decompressor, pending = fresh(), rest
                        continue
                    break  # the stream is complete; trailing bytes (padding) are ignored, as ITK does
        except (OSError, zlib.error, ValueError, EOFError) as error:
            raise ImageFileError(f"is damaged: its {encoding} data cannot be decompressed ({error})") from None
    if not decompressor.eof:
        if needed is not None and total >= needed:
            raise ImageFileError(f"is truncated: its {encoding} stream lacks its end and checksum (the file was cut "
                                 "after the last voxel)")
        of = f" of {needed}" if needed is not None else ""
        raise ImageFileError(f"is truncated: its {encoding} stream ends early ({total}{of} bytes of voxel data)")
    return total


def _require(available: int, needed: int, what: str = "voxel data"):
    if available < needed:
        raise ImageFileError(f"is truncated ({available} of {needed} bytes of {what})")


def _voxel_bytes(sizes, bytes_per_value: int) -> int:
    return math.prod(int(n) for n in sizes) * bytes_per_value


def _check_spacings(values, where: str):
    """NaN, infinite or zero spacings: ITK replaces some with 1 mm without a word (NIfTI pixdim, NRRD spacings),
    which would register the image at a spacing nobody chose."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ImageFileError(f"has an unreadable spacing {list(values)} in its header ({where})") from None
    if not all(math.isfinite(v) and v != 0 for v in numbers):
        raise ImageFileError(f"has a NaN, infinite or zero spacing {numbers} in its header ({where}); ITK reads "
                             "some of these as 1 mm without a warning")


# -- NIfTI ----------------------------------------------------------------------------------------------------------

def _read_head(path: Path, count: int) -> bytes:
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                return stream.read(count)
        except (OSError, EOFError, zlib.error):
            _stream_length(path, "gzip")  # names the damage
            return b""
    with path.open("rb") as stream:
        return stream.read(count)


def _verify_nifti(path: Path):
    head = _read_head(path, 540)
    header = None
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] in (348, 540):
            header = order, struct.unpack(order + "i", head[:4])[0]
            break
    if header is None:
        raise ImageFileError("is not a NIfTI/Analyze image (no 348- or 540-byte header)")
    order, header_size = header
    _require(len(head), header_size, "header")
    if header_size == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        bitpix = struct.unpack(order + "h", head[72:74])[0]
        pixdim = struct.unpack(order + "8f", head[76:108])
        vox_offset = int(struct.unpack(order + "f", head[108:112])[0])
        magic = head[344:348]
    else:
        bitpix = struct.unpack(order + "h", head[14:16])[0]
        dims = struct.unpack(order + "8q", head[16:80])
        pixdim = struct.unpack(order + "8d", head[104:168])
        vox_offset = struct.unpack(order + "q", head[168:176])[0]
        magic = head[4:8]
    rank = dims[0]
    if not 1 <= rank <= 7 or any(n < 1 for n in dims[1:rank + 1]) or bitpix <= 0 or bitpix % 8:
        raise ImageFileError(f"has an invalid NIfTI header (dimensions {list(dims[:rank + 1])}, {bitpix} bits a value)")
    _check_spacings(pixdim[1:min(rank, 3) + 1], "NIfTI pixdim")
    needed = _voxel_bytes(dims[1:rank + 1], bitpix // 8)
    single_file = magic[:3] in (b"n+1", b"n+2")
    if single_file:
        data, start = path, max(vox_offset, header_size)
    else:  # a .hdr/.img pair (NIfTI or Analyze 7.5): the voxels are in the .img beside it
        stem = path.name[:-len(".hdr.gz")] if path.name.lower().endswith(".gz") else path.stem
        candidates = [path.with_name(stem + ext) for ext in (".img", ".img.gz", ".IMG")]
        data = next((c for c in candidates if c.is_file()), None)
        if data is None:
            raise ImageFileError(f"is a NIfTI/Analyze header whose data file {candidates[0].name} is missing")
        start = max(vox_offset, 0)
    compressed = data.name.lower().endswith(".gz")
    available = _stream_length(data, "gzip", needed=start + needed) if compressed else data.stat().st_size
    _require(available - start, needed)


# -- NRRD -----------------------------------------------------------------------------------------------------------

_NRRD_TYPE_BYTES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_BYTES = {name: size for size, names in _NRRD_TYPE_BYTES.items() for name in names}


def _text_header(path: Path, stop) -> tuple[list[str], int]:
    """Header lines up to the one for which ``stop(line)`` is true (included), and the byte offset after it."""
    lines, offset = [], 0
    with path.open("rb") as stream:
        for raw in stream:
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            lines.append(line)
            if stop(line) or offset > 1 << 20:
                break
    return lines, offset


def _verify_nrrd(path: Path):
    with path.open("rb") as stream:
        if not stream.read(8).startswith(b"NRRD000"):
            raise ImageFileError("is not an NRRD file (it does not start with NRRD000x)")
    lines, data_offset = _text_header(path, lambda line: line == "")
    fields = {}
    for line in lines[1:]:
        if ":" in line and not line.startswith("#") and ":=" not in line:
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    try:
        sizes = [int(n) for n in fields["sizes"].split()]
        kind = fields["type"].lower()
    except (KeyError, ValueError):
        raise ImageFileError("has an NRRD header without valid 'sizes' and 'type' fields") from None
    if kind not in _NRRD_BYTES:
        raise ImageFileError(f"has an unsupported NRRD pixel type {kind!r}")
    if "spacings" in fields:  # "nan" marks a non-spatial axis (e.g. vector components): check the others
        spatial = [v for v in fields["spacings"].split() if v.lower() != "nan"]
        if len(spatial) < min(len(sizes), 3):
            raise ImageFileError(f"has a NaN spacing in its header (NRRD spacings: {fields['spacings']}); ITK would "
                                 "read it as 1 mm")
        _check_spacings(spatial, "NRRD spacings")
    encoding = fields.get("encoding", "raw").lower()
    encoding = {"gz": "gzip", "bz2": "bzip2", "txt": "ascii", "text": "ascii"}.get(encoding, encoding)
    needed = _voxel_bytes(sizes, _NRRD_BYTES[kind])
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if data_file.split()[0].upper() == "LIST" or len(data_file.split()) > 1:
            return  # one file per slice: left to ITK
        data = (path.parent / data_file) if not os.path.isabs(data_file) else Path(data_file)
        if not data.is_file():
            raise ImageFileError(f"is an NRRD header whose data file {data} is missing")
        start = 0
    else:
        data, start = path, data_offset
    start += _skip_lines(data, start, int(fields.get("line skip", fields.get("lineskip", 0)) or 0))
    byte_skip = int(fields.get("byte skip", fields.get("byteskip", 0)) or 0)
    if encoding == "raw":
        if byte_skip == -1:  # the data is the last bytes of the file: only the file size can be checked
            _require(data.stat().st_size - start, needed)
            return
        _require(data.stat().st_size - start - byte_skip, needed)
    elif encoding in ("gzip", "bzip2"):
        _require(_stream_length(data, encoding, start, needed=needed), needed)
    elif encoding in ("ascii", "hex"):
        with data.open("rb") as stream:
            stream.seek(start)
            text = stream.read()
        values = math.prod(sizes)
        found = len(text.split()) if encoding == "ascii" else len(re.sub(rb"\s", b"", text)) // (2 * _NRRD_BYTES[kind])
        _require(found, values, f"{encoding} values")
    else:
        raise ImageFileError(f"has an unsupported NRRD encoding {encoding!r}")


def _skip_lines(path: Path, start: int, count: int) -> int:
    if count <= 0:
        return 0
    with path.open("rb") as stream:
        stream.seek(start)
        return sum(len(stream.readline()) for _ in range(count))


# -- MetaImage ------------------------------------------------------------------------------------------------------

_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _verify_metaimage(path: Path):
    lines, data_offset = _text_header(path, lambda line: line.replace(" ", "").lower().startswith("elementdatafile="))
    fields = {}
    for line in lines:
        key, equals, value = line.partition("=")
        if equals:
            fields[key.strip().lower()] = value.strip()
    if "elementdatafile" not in fields:
        if "ndims" in fields or "dimsize" in fields:
            raise ImageFileError("is truncated (its MetaImage header ends before the ElementDataFile line)")
        raise ImageFileError("is not a MetaImage file (no ElementDataFile line in its header)")
    try:
        sizes = [int(n) for n in fields["dimsize"].split()]
        element = fields["elementtype"].upper()
        channels = int(fields.get("elementnumberofchannels", 1))
    except (KeyError, ValueError):
        raise ImageFileError("has a MetaImage header without valid DimSize and ElementType") from None
    if element not in _MET_BYTES:
        raise ImageFileError(f"has an unsupported MetaImage pixel type {element}")
    if "elementspacing" in fields:
        _check_spacings(fields["elementspacing"].split(), "MetaImage ElementSpacing")
    needed = _voxel_bytes(sizes, _MET_BYTES[element] * channels)
    data_file = fields["elementdatafile"]
    if data_file.upper() == "LOCAL":
        data, start = path, data_offset
    elif data_file.upper().startswith("LIST") or len(data_file.split()) > 1 or "%" in data_file:
        return  # one file per slice: left to ITK
    else:
        data = (path.parent / data_file) if not os.path.isabs(data_file) else Path(data_file)
        if not data.is_file():
            raise ImageFileError(f"is a MetaImage header whose data file {data} is missing")
        start = 0
    header_size = int(fields.get("headersize", 0) or 0)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if compressed:
        available = data.stat().st_size - start
        limit = int(fields.get("compresseddatasize", 0) or 0)
        if limit:
            _require(available, limit, "compressed data")
        _require(_stream_length(data, "zlib", start, limit or None, needed), needed)
    elif header_size != -1:
        _require(data.stat().st_size - start - header_size, needed)
