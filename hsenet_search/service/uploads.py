"""Uploaded scans: one file (.nii, .nii.gz, .npy) or a zip of a DICOM series, unpacked into a private folder.

The client's file name only chooses the reader (by its suffix); nothing from the request names a path. A
.nii.gz is decompressed here in chunks and a zip's members are written as numbered files, both counting the
bytes they produce, so a decompression bomb stops at ``max_unpacked`` bytes instead of filling the disk.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hsenet_search.errors import VolumeError

SUFFIXES = (".nii.gz", ".nii", ".npy", ".zip")
CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_unpacked: int
    max_members: int


def upload_suffix(filename: str | None) -> str:
    """The reader suffix of an uploaded file name; VolumeError for anything else."""
    name = (filename or "").lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise VolumeError(f"unsupported upload type; expected one of {', '.join(SUFFIXES)}", "file")


def unpack_upload(stream: BinaryIO, filename: str | None, folder: Path, limits: UploadLimits) -> Path:
    """Write the upload under ``folder`` and return the path a volume reader takes (file or DICOM folder)."""
    suffix = upload_suffix(filename)
    if suffix == ".nii.gz":
        return _gunzip(stream, folder / "upload.nii", limits)
    if suffix == ".zip":
        raw = folder / "upload.zip"
        _copy(stream, raw, limits.max_bytes, "upload")
        return _unzip(raw, folder / "series", limits)
    out = folder / f"upload{suffix}"
    _copy(stream, out, limits.max_bytes, "upload")
    return out


def _copy(stream: BinaryIO, out: Path, limit: int, what: str) -> None:
    written = 0
    with open(out, "wb") as dst:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise VolumeError(f"{what} is larger than the limit of {limit} bytes", "file")
            dst.write(chunk)
    if written == 0:
        raise VolumeError("the uploaded file is empty", "file")


def _gunzip(stream: BinaryIO, out: Path, limits: UploadLimits) -> Path:
    """Decompress every gzip member of ``stream`` into ``out``, at most ``limits.max_unpacked`` bytes."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    read = written = 0
    with open(out, "wb") as dst:
        while chunk := stream.read(CHUNK):
            read += len(chunk)
            if read > limits.max_bytes:
                raise VolumeError(f"upload is larger than the limit of {limits.max_bytes} bytes", "file")
            while chunk:
                if inflater.eof:  # another gzip member follows
                    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                try:
                    data = inflater.decompress(chunk, CHUNK)
                except zlib.error as exc:
                    raise VolumeError(f"not a valid gzip file ({exc})", "file") from exc
                written += len(data)
                if written > limits.max_unpacked:
                    raise VolumeError(f"decompresses to more than {limits.max_unpacked} bytes", "file")
                dst.write(data)
                chunk = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if read == 0:
        raise VolumeError("the uploaded file is empty", "file")
    if not inflater.eof:
        raise VolumeError("the gzip stream is truncated", "file")
    return out


def _unzip(raw: Path, folder: Path, limits: UploadLimits) -> Path:
    """Extract the files of a zip as ``folder/00000`` ... (member names are never used as paths)."""
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as exc:
        raise VolumeError(f"not a valid zip file ({exc})", "file") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise VolumeError("the zip holds no files", "file")
        if len(members) > limits.max_members:
            raise VolumeError(f"the zip holds {len(members)} files; the limit is {limits.max_members}", "file")
        if sum(m.file_size for m in members) > limits.max_unpacked:
            raise VolumeError(f"the zip unpacks to more than {limits.max_unpacked} bytes", "file")
        folder.mkdir()
        written = 0
        for i, member in enumerate(members):
            try:
                with archive.open(member) as src, open(folder / f"{i:05d}", "wb") as dst:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > limits.max_unpacked:
                            raise VolumeError(f"the zip unpacks to more than {limits.max_unpacked} bytes", "file")
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as exc:
                raise VolumeError(f"cannot extract zip member {i} ({exc})", "file") from exc
    raw.unlink()
    return folder


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
