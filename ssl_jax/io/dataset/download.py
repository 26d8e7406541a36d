"""Download the WikiChurches dataset (Zenodo record 5166987): resumable, verified, safe to unpack.

- Resumable: bytes go to ``<name>.part``; a later run (or a retry after a dropped connection)
  asks for the rest with an HTTP ``Range`` request. A server that ignores the range (200) makes
  the download start over; one that answers 416 for a complete ``.part`` is fine.
- Verified: the size must match exactly, and the md5 must match where one is known. Zenodo
  publishes an md5 per file in its record API (``checksums="auto"`` fetches it once); a
  manifest entry may also pin one. A corrupt download is deleted and reported, never renamed
  into place; with no checksum obtainable the file is checked by size only, and said so.
- Safe to unpack: `safe_extract` refuses (before writing anything) archives with members that
  would land outside the target folder — absolute paths, ``..`` components, drive letters —
  and links (tar symlinks/hardlinks, zip symlinks) and device/fifo members.

The original downloader's file list and sizes (SPEC R3.1) are kept; its 5 % size tolerance is
not (sizes come from the Zenodo API and are exact).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ssl_jax.core.errors import UserError
from ssl_jax.core.progress import BYTES, Progress
from ssl_jax.core.validate import OptionError

ZENODO_RECORD = "5166987"
BASE_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files"
RECORD_API_URL = f"https://zenodo.org/api/records/{ZENODO_RECORD}"
CHUNK = 1 << 20
USER_AGENT = "ssl-jax-downloader/0.1"


@dataclass(frozen=True)
class RemoteFile:
    """One file of the record: name, exact size, md5 if pinned, whether the study needs it."""

    name: str
    size: int
    md5: str | None = None
    needed: bool = False
    description: str = ""


WIKICHURCHES_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("images.zip", 12_389_751_014, None, True, "all photos (unzip into images/)"),
    RemoteFile("models.zip", 262_910_967, None, False, "the dataset authors' trained models"),
    RemoteFile("image_meta.json", 37_671_550, None, False, "per-image Wikimedia metadata"),
    RemoteFile("churches.json", 3_377_060, None, True, "per-church name, styles, location"),
    RemoteFile("building_parts.json", 303_897, None, True, "expert boxes (139 images)"),
    RemoteFile("labels.zip", 252_533, None, False, "style label lists of the authors' splits"),
    RemoteFile("datasheet.pdf", 85_108, None, False, "datasheet for the dataset"),
    RemoteFile("LICENSE", 14_759, None, True, "licence"),
    RemoteFile("README.md", 13_391, None, True, "the dataset's README"),
    RemoteFile("style_names.txt", 3_460, None, True, "style QID -> name (121 lines)"),
    RemoteFile("parent_child_rel.txt", 925, None, False, "style hierarchy"),
)


class DownloadError(UserError, OSError):
    """A file could not be fetched (HTTP error, too many dropped connections, wrong size)."""


class ChecksumError(DownloadError):
    """A fetched file's checksum does not match the published one."""


class UnsafeArchiveError(UserError):
    """An archive has members that would land outside the target folder, or links."""


# --------------------------------------------------------------------------------------------
# helpers


def file_url(name: str, base_url: str = BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(name)}?download=1"


def file_digest(path: str | Path, algorithm: str = "md5", chunk: int = CHUNK) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def select_files(names: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 manifest: Sequence[RemoteFile] = WIKICHURCHES_FILES) -> list[RemoteFile]:
    """Manifest entries by name (None: the ones the study needs; "all": every file)."""
    by_name = {f.name: f for f in manifest}
    names = list(names) if names is not None else None
    if names is None:
        chosen = [f for f in manifest if f.needed]
    elif names == ["all"]:
        chosen = list(manifest)
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise OptionError(f"unknown file(s) {', '.join(unknown)}; the record has "
                              f"{', '.join(by_name)}")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    excl = set(exclude)
    unknown = excl - set(by_name)
    if unknown:
        raise OptionError(f"unknown file(s) to exclude: {', '.join(sorted(unknown))}")
    return [f for f in chosen if f.name not in excl]


def _open(url: str, headers: dict[str, str], timeout: float):
    if not url.startswith(("http://", "https://")):
        raise OptionError(f"only http(s) URLs are fetched, got {url!r}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    return urllib.request.urlopen(req, timeout=timeout)


def fetch_checksums(api_url: str = RECORD_API_URL, timeout: float = 30.0) -> dict[str, tuple[str, int]]:
    """name → (md5 hex, size) from a Zenodo record API response (``files[].key/checksum/size``)."""
    with _open(api_url, {"Accept": "application/json"}, timeout) as r:
        record = json.loads(r.read().decode("utf-8"))
    files = record.get("files", [])
    if isinstance(files, dict):  # InvenioRDM: {"entries": {name: {...}}}
        files = list(files.get("entries", {}).values())
    out = {}
    for f in files:
        algo, _, digest = str(f.get("checksum", "")).partition(":")
        name = f.get("key") or f.get("filename")
        if algo == "md5" and name and re.fullmatch(r"[0-9a-f]{32}", digest):
            out[name] = (digest, int(f.get("size", -1)))
    return out


def with_checksums(files: Sequence[RemoteFile], checksums: dict[str, tuple[str, int]],
                   log: Callable[[str], None] | None = None) -> list[RemoteFile]:
    """Fill in md5s from `checksums` (pinned md5s win; a size disagreement is reported)."""
    out = []
    for f in files:
        got = checksums.get(f.name)
        if got is not None:
            md5, size = got
            if size >= 0 and size != f.size and log:
                log(f"warning: {f.name}: the record lists {size} bytes, the manifest {f.size}; "
                    "using the record's")
                f = replace(f, size=size)
            if f.md5 is None:
                f = replace(f, md5=md5)
        out.append(f)
    return out


# --------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class Verification:
    name: str
    ok: bool
    detail: str  # "size + md5", "size only (no checksum known)", or what is wrong


def verify_file(path: str | Path, spec: RemoteFile) -> Verification:
    path = Path(path)
    if not path.is_file():
        return Verification(spec.name, False, "missing")
    size = path.stat().st_size
    if size != spec.size:
        return Verification(spec.name, False, f"size {size} bytes, expected {spec.size}")
    if spec.md5 is None:
        return Verification(spec.name, True, "size only (no checksum known)")
    got = file_digest(path)
    if got != spec.md5.lower():
        return Verification(spec.name, False, f"md5 {got}, expected {spec.md5}")
    return Verification(spec.name, True, "size + md5")


# --------------------------------------------------------------------------------------------
# downloading


_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
              socket.timeout)


def download_file(
    spec: RemoteFile, dest: str | Path, *, url: str | None = None, base_url: str = BASE_URL,
    timeout: float = 30.0, retries: int = 5, backoff: float = 1.0, chunk_size: int = CHUNK,
    progress: bool = False, log: Callable[[str], None] | None = None,
) -> Path:
    """Fetch one file into `dest`, resuming ``<name>.part``; verify size (+ md5); return its path.

    A complete, verified file already there is kept. Dropped connections are retried (with
    backoff) from where they stopped, up to `retries` times.
    """
    log = log or (lambda _msg: None)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final, part = dest / spec.name, dest / (spec.name + ".part")
    url = url or file_url(spec.name, base_url)
    if final.exists():
        v = verify_file(final, spec)
        if v.ok:
            log(f"{spec.name}: already there ({v.detail})")
            return final
        if final.stat().st_size < spec.size and not part.exists():
            log(f"{spec.name}: incomplete ({final.stat().st_size} of {spec.size} bytes), resuming")
            final.replace(part)
        else:
            log(f"{spec.name}: existing file is bad ({v.detail}); downloading again")
            final.unlink()
    last_error: str = ""
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > spec.size:
            part.unlink()
            have = 0
        if have == spec.size:
            break
        if attempt > retries:
            raise DownloadError(f"{spec.name}: gave up after {retries + 1} attempts at {url} "
                                f"({have} of {spec.size} bytes; last error: {last_error}); run "
                                "again to resume")
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))
        attempt += 1
        try:
            _fetch_into(part, have, spec, url, timeout, chunk_size, progress)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have == spec.size:
                break
            if e.code == 416:  # our range is past the server's end: start over
                part.unlink(missing_ok=True)
                last_error = "HTTP 416 (range not satisfiable)"
                continue
            if e.code in (408, 425, 429) or e.code >= 500:
                last_error = f"HTTP {e.code}"
                continue
            raise DownloadError(f"{spec.name}: HTTP {e.code} {e.reason} from {url}") from None
        except _RETRYABLE as e:
            last_error = f"{type(e).__name__}: {e}"
            got = part.stat().st_size if part.exists() else 0
            log(f"{spec.name}: connection lost at {got} of {spec.size} bytes ({last_error}); resuming")
    v = verify_file(part, spec)
    if not v.ok:
        part.unlink()
        cls = ChecksumError if v.detail.startswith("md5") else DownloadError
        raise cls(f"{spec.name}: downloaded file is corrupt ({v.detail}); it was deleted — run "
                  "again to download it afresh")
    part.replace(final)
    log(f"{spec.name}: done ({v.detail})")
    return final


def _fetch_into(part: Path, have: int, spec: RemoteFile, url: str, timeout: float,
                chunk_size: int, progress: bool) -> None:
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _open(url, headers, timeout) as r:
        status = r.status
        m = None
        if status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise http.client.HTTPException(
                    f"server answered range {have}- with Content-Range "
                    f"{r.headers.get('Content-Range')!r}")
            mode, start = "ab", have
        elif status == 200:
            mode, start = "wb", 0  # the server ignored the range: start over
        else:
            raise http.client.HTTPException(f"unexpected HTTP status {status}")
        length = r.headers.get("Content-Length")
        expected = int(length) if length is not None else spec.size - start
        total = int(m.group(3)) if status == 206 and m.group(3) != "*" else (
            expected if status == 200 and length is not None else None)
        if total is not None and total != spec.size:
            raise DownloadError(f"{spec.name}: the server has {total} bytes, expected {spec.size} "
                                f"({url})")
        bar = Progress(spec.size, spec.name, unit=BYTES, done=start, enabled=progress)
        got = 0
        try:
            with open(part, mode) as f:
                while block := r.read(chunk_size):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
        if got < expected:
            raise http.client.IncompleteRead(b"", expected - got)


def download(
    files: Iterable[str] | None = None, dest: str | Path = ".", *, exclude: Iterable[str] = (),
    base_url: str = BASE_URL, checksums: str | dict[str, tuple[str, int]] | None = "auto",
    checksums_url: str = RECORD_API_URL, manifest: Sequence[RemoteFile] = WIKICHURCHES_FILES,
    extract: bool = False, timeout: float = 30.0, retries: int = 5, backoff: float = 1.0,
    progress: bool = False, log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download (and verify) the chosen files into `dest`; returns their paths.

    ``checksums``: "auto" fetches md5s from the record API (falling back to size-only checks,
    with a warning, when it cannot be reached); a dict gives them; None uses only the
    manifest's. ``extract=True`` unpacks images.zip into ``dest/images`` (see `extract_images`).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    chosen = resolve_checksums(select_files(files, exclude, manifest), checksums, checksums_url,
                               timeout, log)
    paths = []
    for spec in chosen:
        paths.append(download_file(spec, dest, base_url=base_url, timeout=timeout, retries=retries,
                                   backoff=backoff, progress=progress, log=log))
        if extract and spec.name == "images.zip":
            extract_images(paths[-1], dest, log=log)
    return paths


def resolve_checksums(files: Sequence[RemoteFile], checksums, checksums_url: str, timeout: float,
                      log: Callable[[str], None]) -> list[RemoteFile]:
    if isinstance(checksums, dict):
        return with_checksums(files, checksums, log)
    if checksums == "auto" and any(f.md5 is None for f in files):
        try:
            return with_checksums(files, fetch_checksums(checksums_url, timeout), log)
        except (OSError, ValueError, http.client.HTTPException) as e:
            log(f"warning: could not read checksums from {checksums_url} ({e}); "
                "checking sizes only")
    elif checksums not in ("auto", None):
        raise ValueError(f"checksums must be 'auto', None or a dict, got {checksums!r}")
    return list(files)


def verify(files: Iterable[str] | None = None, dest: str | Path = ".", *,
           exclude: Iterable[str] = (), checksums: str | dict | None = "auto",
           checksums_url: str = RECORD_API_URL, manifest: Sequence[RemoteFile] = WIKICHURCHES_FILES,
           timeout: float = 30.0, log: Callable[[str], None] | None = None) -> list[Verification]:
    """Check files already in `dest` (size, and md5 where known) without downloading."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    chosen = resolve_checksums(select_files(files, exclude, manifest), checksums, checksums_url,
                               timeout, log)
    return [verify_file(Path(dest) / f.name, f) for f in chosen]


# --------------------------------------------------------------------------------------------
# safe extraction


def _member_problem(name: str) -> str | None:
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL in name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        return "'..' in path"
    return None


def _inside(root: Path, name: str) -> bool:
    target = (root / PurePosixPath(name.replace("\\", "/"))).resolve()
    return target == root or root in target.parents


def check_archive(path: str | Path, dest: str | Path) -> list[str]:
    """Members of a zip/tar archive that are unsafe to extract into `dest` ("member: why")."""
    path, root = Path(path), Path(dest).resolve()
    bad: list[str] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                why = _member_problem(info.filename)
                mode = info.external_attr >> 16
                if why is None and stat.S_ISLNK(mode):
                    why = "symbolic link"
                if why is None and not _inside(root, info.filename):
                    why = "lands outside the target folder"
                if why:
                    bad.append(f"{info.filename!r}: {why}")
        return bad
    try:
        tf = tarfile.open(path)
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"{path}: not a zip or tar archive ({e})") from None
    with tf:
        for m in tf.getmembers():
            why = _member_problem(m.name)
            if why is None and m.issym():
                why = f"symbolic link to {m.linkname!r}"
            elif why is None and m.islnk():
                why = f"hard link to {m.linkname!r}"
            elif why is None and not (m.isfile() or m.isdir()):
                why = "device, fifo or other special member"
            if why is None and not _inside(root, m.name):
                why = "lands outside the target folder"
            if why:
                bad.append(f"{m.name!r}: {why}")
    return bad


def safe_extract(path: str | Path, dest: str | Path, *, strip_prefix: str | None = None) -> list[Path]:
    """Extract a zip or tar archive into `dest` after checking every member (`check_archive`);
    an unsafe archive raises `UnsafeArchiveError` naming the members, and nothing is written.
    ``strip_prefix`` drops a leading folder (e.g. "images/") from member names."""
    path, root = Path(path), Path(dest)
    bad = check_archive(path, root)
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... {len(bad) - 10} more" if len(bad) > 10 else "")
        raise UnsafeArchiveError(f"{path}: refusing to extract — {shown}")
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    out: list[Path] = []

    def target(name: str) -> Path | None:
        name = name.replace("\\", "/")
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix):]
        if not name.strip("/"):
            return None
        t = (root / PurePosixPath(name)).resolve()
        if not (t == root or root in t.parents):  # checked above; belt and braces
            raise UnsafeArchiveError(f"{path}: member {name!r} lands outside {root}")
        return t

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                t = target(info.filename)
                if t is None:
                    continue
                if info.is_dir():
                    t.mkdir(parents=True, exist_ok=True)
                    continue
                t.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(t, "wb") as dst:
                    while block := src.read(CHUNK):
                        dst.write(block)
                out.append(t)
        return out
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            t = target(m.name)
            if t is None:
                continue
            if m.isdir():
                t.mkdir(parents=True, exist_ok=True)
                continue
            t.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            assert src is not None
            with src, open(t, "wb") as dst:
                while block := src.read(CHUNK):
                    dst.write(block)
            with contextlib.suppress(OSError):
                os.chmod(t, m.mode & 0o755 | 0o600)
            out.append(t)
    return out


def extract_images(archive: str | Path, dataset_root: str | Path,
                   log: Callable[[str], None] | None = None) -> Path:
    """Unpack images.zip so the photos end up in ``dataset_root/images/``; when every member
    sits under one top folder (e.g. ``images/``), that folder is dropped."""
    log = log or (lambda _m: None)
    archive, root = Path(archive), Path(dataset_root)
    with zipfile.ZipFile(archive) as zf:
        names = [n.replace("\\", "/") for n in zf.namelist()]
    tops = {n.split("/", 1)[0] for n in names if "/" in n.strip("/")}
    flat = any("/" not in n.strip("/") and not n.endswith("/") for n in names)
    strip = f"{next(iter(tops))}/" if len(tops) == 1 and not flat else None
    files = safe_extract(archive, root / "images", strip_prefix=strip)
    log(f"{archive.name}: extracted {len(files)} files into {root / 'images'}")
    return root / "images"
