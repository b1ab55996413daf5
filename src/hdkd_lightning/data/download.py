"""``hdkd-data download``: fetch the public datasets, verified, resumable, into the layouts the sources read.

Where each dataset comes from (:data:`DATASETS`, the one table of it in the package):

* ``isic2018``: the ISIC challenge's public S3 bucket (``https://isic-challenge-data.s3.amazonaws.com/2018/``):
  Task 3 training, validation and test inputs and ground truth, and the training lesion groupings.
  ISIC publishes no checksums: the SHA-256 of each file is recorded at its first complete download
  (``<root>/.hdkd-download.json``) and every later download or re-run is verified against it.
* ``ham10000``: the authors' archive on Harvard Dataverse (doi:10.7910/DVN/DBW86T). The file
  list, sizes and MD5 checksums are read from Dataverse's public API at run time (checksums
  published by the host) and each download is verified against them; the metadata table is
  fetched in its original CSV form.
* ``brain_tumor``: Kaggle (``masoudnickparvar/brain-tumor-mri-dataset``) needs the user's Kaggle
  credentials: with the ``kaggle`` client installed (``pip install 'hdkd-lightning[kaggle]'``) and
  configured it is used; otherwise the exact steps are printed. No checksums are published; the
  layout check of ``hdkd-data inspect`` verifies the result.

Every file goes to ``<root>/<name>.part`` first; an interrupted download continues from there
with an HTTP ``Range`` request (a server that ignores ``Range`` makes it start again from zero);
only a file whose size and checksum match, and for an archive a zip whose every member passes its
CRC check, is renamed to its final name, so a partial file never looks complete. A file that fails
verification is kept aside as ``<name>.bad-<time>`` (never used, its checksum never recorded: the
next run downloads it afresh) and the command fails naming it. Complete, verified files are not
fetched again. Archives are extracted (refusing members that would land outside the root) into
exactly the layout that ``data=isic2018`` / ``data=ham10000`` read, after which ``hdkd-data
inspect`` runs and its summary is printed.

A mirror (a lab server, an internal bucket) holding the same file names in one folder replaces
every host with ``url_base=<url>`` or the ``HDKD_DATA_MIRROR`` environment variable. A mirror
publishes no checksums: its files are treated like ISIC's (SHA-256 recorded at the first
complete download, every later one verified against it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional

__all__ = ["RemoteFile", "DownloadError", "DATASETS", "remote_files", "fetch", "extract", "download_dataset",
           "MIRROR_ENV"]

MIRROR_ENV = "HDKD_DATA_MIRROR"
RECORD = ".hdkd-download.json"
CHUNK = 1 << 20
STREAM_CHUNK = 1 << 16  # small: a connection that drops loses at most this much of what arrived
MIN_RATE = 1024  # bytes/s: a server slower than this over a whole timeout window is given up on

ISIC_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018/"
ISIC_FILES = [
    ("ISIC2018_Task3_Training_Input.zip", "zip"), ("ISIC2018_Task3_Training_GroundTruth.zip", "zip"),
    ("ISIC2018_Task3_Training_LesionGroupings.csv", "file"),
    ("ISIC2018_Task3_Validation_Input.zip", "zip"), ("ISIC2018_Task3_Validation_GroundTruth.zip", "zip"),
    ("ISIC2018_Task3_Test_Input.zip", "zip"), ("ISIC2018_Task3_Test_GroundTruth.zip", "zip"),
]
HAM_DOI = "doi:10.7910/DVN/DBW86T"
DATAVERSE = "https://dataverse.harvard.edu"
# Dataverse file label -> (name on disk, how to unpack); the metadata table is ingested by Dataverse
# and served in its original CSV form with ?format=original
HAM_FILES = {"HAM10000_images_part_1.zip": ("HAM10000_images_part_1.zip", "zip-folder"),
             "HAM10000_images_part_2.zip": ("HAM10000_images_part_2.zip", "zip-folder"),
             "HAM10000_metadata.tab": ("HAM10000_metadata.csv", "file")}
KAGGLE_DATASET = "masoudnickparvar/brain-tumor-mri-dataset"
KAGGLE_ARCHIVE = "brain-tumor-mri-dataset.zip"

DATASETS = {
    "isic2018": {"source": "ISIC 2018 challenge, Task 3 (public S3 bucket)", "licence": "CC BY-NC 4.0",
                 "size": "about 3 GB"},
    "ham10000": {"source": f"Harvard Dataverse, {HAM_DOI} (Tschandl, Rosendahl, Kittler, Sci. Data 2018)",
                 "licence": "CC BY-NC 4.0 (attribution, non-commercial)", "size": "about 2.6 GB"},
    "brain_tumor": {"source": f"Kaggle, {KAGGLE_DATASET} (M. Nickparvar)", "licence": "CC0 1.0 as published "
                    "on Kaggle (its images come from earlier public sets; cite them)", "size": "about 150 MB"},
}


class DownloadError(RuntimeError):
    """A download, verification or extraction that failed; the message names the file and the fix."""


@dataclasses.dataclass
class RemoteFile:
    name: str                       # file name on disk (and on a mirror)
    url: str
    unpack: str = "file"            # file | zip (into the root) | zip-folder (into <root>/<zip stem>/)
    size: Optional[int] = None      # bytes, when known in advance
    sha256: Optional[str] = None
    md5: Optional[str] = None
    checksum_source: str = "none published"


# -- where the files are ---------------------------------------------------------------------------

def _mirror(url_base: Optional[str]) -> Optional[str]:
    base = url_base or os.environ.get(MIRROR_ENV) or None
    return None if base is None else base.rstrip("/") + "/"


def remote_files(dataset: str, url_base: Optional[str] = None, timeout: float = 30.0) -> List[RemoteFile]:
    """The files of ``dataset`` (``isic2018`` or ``ham10000``), from the official hosts or a mirror."""
    mirror = _mirror(url_base)
    if dataset == "isic2018":
        return [RemoteFile(name, (mirror or ISIC_BASE) + name, unpack) for name, unpack in ISIC_FILES]
    if dataset == "ham10000":
        if mirror:
            return [RemoteFile(name, mirror + name, unpack) for name, unpack in HAM_FILES.values()]
        return _dataverse_files(timeout)
    raise DownloadError(f"no direct download for {dataset!r}; choose one of {', '.join(DATASETS)}")


def _dataverse_files(timeout: float) -> List[RemoteFile]:
    import requests

    url = f"{DATAVERSE}/api/datasets/:persistentId/versions/:latest-published/files?persistentId={HAM_DOI}"
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        listing = response.json()["data"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise DownloadError(f"cannot read the HAM10000 file list from Dataverse ({url}): {exc}; check the network, "
                            f"or use a mirror (url_base=<url> or {MIRROR_ENV})") from None
    files = []
    for entry in listing:
        data = entry.get("dataFile", {})
        label = entry.get("label") or data.get("filename")
        if label not in HAM_FILES:
            continue
        name, unpack = HAM_FILES[label]
        original = label.endswith(".tab")
        checksum = data.get("checksum", {})
        md5 = (checksum.get("value") if checksum.get("type", "MD5").upper() == "MD5" else None) or data.get("md5")
        files.append(RemoteFile(
            name, f"{DATAVERSE}/api/access/datafile/{data['id']}" + ("?format=original" if original else ""), unpack,
            size=None if original else data.get("filesize"), md5=None if original else md5,
            checksum_source="none for the original form of an ingested table" if original else "Dataverse (MD5)"))
    missing = sorted(set(v[0] for v in HAM_FILES.values()) - {f.name for f in files})
    if missing:
        raise DownloadError(f"Dataverse's HAM10000 listing lacks {missing}; the archive changed: use a mirror")
    return files


# -- one file ---------------------------------------------------------------------------------------

def _records(root: Path) -> Dict[str, Dict[str, object]]:
    try:
        return json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _save_record(root: Path, name: str, size: int, sha256: str) -> None:
    from hdkd_lightning.files import write_json_atomic

    records = _records(root)
    records[name] = {"size": size, "sha256": sha256, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(root / RECORD, records)


def _digests(path: Path) -> Dict[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _expected(remote: RemoteFile, root: Path) -> RemoteFile:
    """``remote`` with the checksum recorded at an earlier download when none is published."""
    if remote.sha256 or remote.md5:
        return remote
    rec = _records(root).get(remote.name)
    if rec:
        return dataclasses.replace(remote, size=remote.size or rec.get("size"), sha256=rec.get("sha256"),
                                   checksum_source=f"recorded at the first download ({rec.get('recorded')})")
    return remote


def _verify(path: Path, remote: RemoteFile) -> Optional[str]:
    """None when ``path`` matches what is expected of it, else what differs."""
    size = path.stat().st_size
    if remote.size is not None and size != int(remote.size):
        return f"size {size} bytes, expected {remote.size} ({remote.checksum_source})"
    if remote.sha256 or remote.md5:
        got = _digests(path)
        if remote.sha256 and got["sha256"] != remote.sha256:
            return f"SHA-256 {got['sha256']}, expected {remote.sha256} ({remote.checksum_source})"
        if remote.md5 and got["md5"] != remote.md5:
            return f"MD5 {got['md5']}, expected {remote.md5} ({remote.checksum_source})"
    return None


def _set_aside(path: Path) -> Path:
    bad = path.with_name(f"{path.name.removesuffix('.part')}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, bad)
    return bad


# what reading a damaged zip raises: a bad directory or CRC (BadZipFile), damaged deflate data (zlib),
# a truncated member (EOFError), an encrypted member (RuntimeError) or an unknown compression method
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _zip_problem(path: Path) -> Optional[str]:
    """None when ``path`` is a zip whose every member reads back with its CRC, else what is wrong."""
    try:
        with zipfile.ZipFile(path) as zf:
            broken = zf.testzip()
    except _ZIP_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if broken is None else f"member {broken!r} fails its CRC check"


def _forget_record(root: Path, name: str) -> None:
    from hdkd_lightning.files import write_json_atomic

    records = _records(root)
    if records.pop(name, None) is not None:
        write_json_atomic(root / RECORD, records)


def fetch(remote: RemoteFile, root: Path, timeout: float = 60.0, progress: Optional[Callable] = None,
          min_rate: float = MIN_RATE) -> Path:
    """Download ``remote`` into ``root`` (module docstring: resume, atomic rename, verification).

    ``timeout`` bounds every wait for data; and a server that keeps sending, but less than
    ``min_rate`` bytes/s over a whole ``timeout`` window, is given up on too (what arrived is kept
    for the next try), so that no download hangs on a trickle."""
    import requests
    import urllib3

    root.mkdir(parents=True, exist_ok=True)
    remote = _expected(remote, root)
    final = root / remote.name
    if final.is_file():
        problem = _verify(final, remote)
        if problem is None:
            return final
        bad = _set_aside(final)
        raise DownloadError(f"{final} is not the expected file ({problem}); it was moved to {bad.name}: run the "
                            f"command again to download it afresh")
    part = root / (remote.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(remote.url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and offset:  # nothing left to send: the part is complete
                pass
            elif response.status_code not in (200, 206):
                raise DownloadError(f"{remote.url}: HTTP {response.status_code} {response.reason}; check the URL or "
                                    f"the mirror (url_base=... / {MIRROR_ENV})")
            else:
                resumed = response.status_code == 206 and offset > 0
                total = _total_size(response, offset if resumed else 0)
                if remote.size is None and total is not None:
                    remote = dataclasses.replace(remote, size=total)
                done = offset if resumed else 0
                window_start, window_bytes = time.monotonic(), 0
                with open(part, "ab" if resumed else "wb") as fh:  # 200: the server ignored Range, start again
                    for block in _blocks(response):
                        fh.write(block)
                        done += len(block)
                        window_bytes += len(block)
                        if progress:
                            progress(remote.name, done, remote.size)
                        elapsed = time.monotonic() - window_start
                        if elapsed >= timeout:
                            if window_bytes < min_rate * elapsed:
                                fh.flush()
                                raise DownloadError(
                                    f"{remote.url}: slower than {min_rate:g} bytes/s for {elapsed:.1f} s; what arrived "
                                    f"is kept in {part.name}: run the command again to continue (or use a mirror)")
                            window_start, window_bytes = time.monotonic(), 0
                    fh.flush()
                    os.fsync(fh.fileno())
                if total is not None and done < total:  # the connection closed early
                    raise DownloadError(f"{remote.url}: the connection closed after {done} of {total} bytes; what "
                                        f"arrived is kept in {part.name}: run the command again to continue")
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError):
        raise DownloadError(f"{remote.url}: no data for {timeout:g} s (timeout); what arrived is kept in {part.name}: "
                            f"run the command again to continue") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise DownloadError(f"{remote.url}: {type(exc).__name__}: {exc}; what arrived is kept in {part.name}: run "
                            f"the command again to continue") from None
    problem = _verify(part, remote)
    if problem is not None:
        bad = _set_aside(part)
        raise DownloadError(f"{remote.name} from {remote.url} failed verification: {problem}; the file was kept aside "
                            f"as {bad} and is not used")
    # checked before anything is recorded: a mirror serving an error page under an archive's name must not
    # have that page's SHA-256 written down as the file's, or every later run would trust it
    problem = _zip_problem(part) if remote.unpack != "file" else None
    if problem is not None:
        bad = _set_aside(part)
        raise DownloadError(f"{remote.name} from {remote.url} is not a valid zip archive ({problem}); it was kept "
                            f"aside as {bad} and not recorded: run the command again to download it afresh, or check "
                            f"the host (url_base=... / {MIRROR_ENV})")
    if not (remote.sha256 or remote.md5):
        _save_record(root, remote.name, part.stat().st_size, _digests(part)["sha256"])
    os.replace(part, final)
    return final


def _blocks(response):
    """What has arrived, as soon as it arrives (``iter_content`` waits for a whole chunk, so a trickling
    server would never reach the rate check)."""
    while True:
        block = response.raw.read1(STREAM_CHUNK, decode_content=True)
        if not block:
            return
        yield block


def _total_size(response, offset: int) -> Optional[int]:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


# -- unpacking --------------------------------------------------------------------------------------

def extract(archive: Path, root: Path, into_folder: bool = False) -> Path:
    """Unpack a zip into ``root`` (or ``root/<zip stem>/``), refusing members outside it; done once."""
    marker = root / f".extracted-{archive.name}"
    target = root / archive.stem if into_folder else root
    if marker.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
        tmp_root = Path(tmp).resolve()
        try:  # extractall checks each member's CRC as it goes
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    dest = (tmp_root / member.filename).resolve()
                    if tmp_root not in dest.parents and dest != tmp_root:
                        raise DownloadError(f"{archive}: member {member.filename!r} would be written outside "
                                            f"{root}; refused")
                zf.extractall(tmp_root)
        except DownloadError:  # a RuntimeError too: the refusal above, not a damaged archive
            raise
        except _ZIP_ERRORS as exc:
            # e.g. a damaged archive whose checksum an earlier version recorded: both go, so the next run
            # downloads it afresh instead of trusting the recorded checksum of the wrong bytes
            bad = _set_aside(archive)
            _forget_record(root, archive.name)
            raise DownloadError(f"{archive} is not a valid zip archive ({type(exc).__name__}: {exc}); it was kept "
                                f"aside as {bad.name}: run the command again to download it afresh") from None
        entries = [p for p in tmp_root.iterdir() if p.name != "__MACOSX"]
        if into_folder:
            target.mkdir(parents=True, exist_ok=True)
            # a zip holding one folder of the same name is unpacked into that folder, not one level deeper
            sources = list(entries[0].iterdir()) if len(entries) == 1 and entries[0].is_dir() else entries
        else:
            sources = entries
        for src in sources:
            dest = target / src.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(src, dest)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    return target


# -- a whole dataset --------------------------------------------------------------------------------

def download_dataset(dataset: str, root: Path, url_base: Optional[str] = None, timeout: float = 60.0,
                     dry_run: bool = False, log: Callable[[str], None] = print,
                     progress: Optional[Callable] = None) -> List[Dict[str, object]]:
    """Fetch, verify and unpack ``dataset`` into ``root``; returns one row per file (what was done)."""
    if dataset == "brain_tumor":
        return _brain_tumor(root, url_base, timeout, dry_run, log, progress)
    rows = []
    files = remote_files(dataset, url_base, timeout=min(timeout, 60.0))
    for remote in files:
        remote = _expected(remote, root)
        final = root / remote.name
        state = "complete" if final.is_file() and _verify(final, remote) is None else \
            ("partial" if (root / (remote.name + ".part")).is_file() else "missing")
        size = remote.size if remote.size is not None else (_head_size(remote.url, timeout) if dry_run else None)
        rows.append({"file": remote.name, "url": remote.url, "size": size, "state": state,
                     "checksum": remote.checksum_source})
        if dry_run:
            continue
        if state != "complete":
            log(f"downloading {remote.name} from {remote.url}")
        path = fetch(remote, root, timeout=timeout, progress=progress)
        if remote.unpack != "file":
            extract(path, root, into_folder=remote.unpack == "zip-folder")
    return rows


def _head_size(url: str, timeout: float) -> Optional[int]:
    import requests

    try:
        response = requests.head(url, allow_redirects=True, timeout=timeout)
        length = response.headers.get("Content-Length")
        return int(length) if response.ok and length is not None else None
    except requests.RequestException:
        return None


def _brain_tumor(root: Path, url_base: Optional[str], timeout: float, dry_run: bool, log, progress):
    mirror = _mirror(url_base)
    if mirror:  # a mirror holding Kaggle's archive under its usual name
        remote = RemoteFile(KAGGLE_ARCHIVE, mirror + KAGGLE_ARCHIVE, "zip")
        row = {"file": remote.name, "url": remote.url, "size": _head_size(remote.url, timeout) if dry_run else None,
               "state": "complete" if (root / f".extracted-{remote.name}").exists() else "missing",
               "checksum": "recorded at the first download"}
        if not dry_run:
            extract(fetch(remote, root, timeout=timeout, progress=progress), root)
        return [row]
    steps = (f"Brain Tumor MRI comes from Kaggle and needs your Kaggle account:\n"
             f"  1. pip install 'hdkd-lightning[kaggle]'\n"
             f"  2. create an API token on kaggle.com (Settings > API) and save it as ~/.kaggle/kaggle.json "
             f"(or set KAGGLE_USERNAME and KAGGLE_KEY)\n"
             f"  3. run this command again; or download https://www.kaggle.com/datasets/{KAGGLE_DATASET} yourself "
             f"and unzip it into {root} so that {root}/Training/<class>/ and {root}/Testing/<class>/ exist")
    row = {"file": KAGGLE_ARCHIVE, "url": f"kaggle://{KAGGLE_DATASET}", "size": None,
           "state": "complete" if (root / "Training").is_dir() and (root / "Testing").is_dir() else "missing",
           "checksum": "none published (layout checked by inspect)"}
    if dry_run or row["state"] == "complete":
        return [row]
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DownloadError("the kaggle client is not installed.\n" + steps) from None
    try:
        api = KaggleApi()
        api.authenticate()
    except Exception as exc:  # noqa: BLE001 - the client raises several types for missing credentials
        raise DownloadError(f"the kaggle client is not configured ({exc}).\n" + steps) from None
    log(f"downloading {KAGGLE_DATASET} with the kaggle client into {root}")
    root.mkdir(parents=True, exist_ok=True)
    api.dataset_download_files(KAGGLE_DATASET, path=str(root), unzip=True, quiet=False)
    return [row]
