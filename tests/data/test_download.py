"""hdkd-data download against a local HTTP server (never the internet): full, resumed, refused, bounded."""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest
from hdkd_data_fixtures import HAM_CLASSES, ISIC_COLUMNS, write_image

from hdkd_lightning.data.download import DownloadError, RemoteFile, download_dataset, extract, fetch


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; behaviour switches per test."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []          # (path, Range header)
        self.honour_range = True
        self.cut_after = None       # send only this many bytes, then drop the connection
        self.delay = 0.0            # seconds before the first byte
        self.trickle = None         # seconds between single bytes (a server that never quite stalls)
        self.types = {}             # name -> Content-Type
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                name = self.path.lstrip("/").split("?")[0]
                server.requests.append((name, self.headers.get("Range")))
                return server.files.get(name)

            def do_HEAD(self):
                body = self._body()
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(0 if body is None else len(body)))
                self.end_headers()

            def do_GET(self):
                body = self._body()
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if server.delay:
                    time.sleep(server.delay)
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                if name := self.path.lstrip("/").split("?")[0]:
                    self.send_header("Content-Type", server.types.get(name, "application/octet-stream"))
                self.end_headers()
                if server.trickle:
                    for i in range(len(chunk)):
                        try:
                            self.wfile.write(chunk[i:i + 1])
                            self.wfile.flush()
                        except OSError:  # the client gave up
                            return
                        time.sleep(server.trickle)
                    return
                if server.cut_after is not None:
                    self.wfile.write(chunk[: server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client gave up (a timeout test)
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _ham_archives(tmp_path: Path) -> dict:
    """HAM10000 as a mirror holds it: two image zips and the metadata CSV (tiny images, 3 per class)."""
    images = tmp_path / "src"
    rows, n = [], 24306
    for c in HAM_CLASSES:
        for _ in range(3):
            rows.append((f"HAM_{n:07d}", f"ISIC_{n:07d}", c))
            write_image(images / f"ISIC_{n:07d}.jpg")
            n += 1
    parts = {}
    for k, subset in ((1, rows[::2]), (2, rows[1::2])):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for _, image_id, _ in subset:
                zf.write(images / f"{image_id}.jpg", f"{image_id}.jpg")
        parts[f"HAM10000_images_part_{k}.zip"] = buf.getvalue()
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"])
    w.writerows([(lesion, image, dx, "histo", "50", "male", "back") for lesion, image, dx in rows])
    parts["HAM10000_metadata.csv"] = text.getvalue().encode()
    return parts


@pytest.fixture
def served(tmp_path):
    servers = []

    def start(files):
        s = _Server(files)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


def test_full_download_extracts_the_layout_and_is_not_fetched_again(served, tmp_path):
    server = served(_ham_archives(tmp_path))
    root = tmp_path / "ham"
    rows = download_dataset("ham10000", root, url_base=server.url, timeout=10, log=lambda m: None)
    assert {r["file"] for r in rows} == {"HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip",
                                         "HAM10000_metadata.csv"}
    assert len(list((root / "HAM10000_images_part_1").glob("*.jpg"))) == 11
    assert len(list((root / "HAM10000_images_part_2").glob("*.jpg"))) == 10
    assert not list(root.glob("*.part"))
    from hdkd_lightning.data.datamodule import HdkdDataModule

    dm = HdkdDataModule(source="ham10000", root=str(root), image_size=32, num_workers=0,
                        cache={"dir": str(tmp_path / "cache")})
    assert sum(len(dm.prepare(strict=True).splits[s]) for s in ("train", "val", "test")) == 21
    seen = len(server.requests)
    again = download_dataset("ham10000", root, url_base=server.url, timeout=10, log=lambda m: None)
    assert {r["state"] for r in again} == {"complete"} and len(server.requests) == seen  # nothing fetched


def test_an_interrupted_download_resumes_with_range(served, tmp_path):
    data = bytes(range(256)) * 4000  # ~1 MB
    server = served({"big.bin": data})
    remote = RemoteFile("big.bin", server.url + "big.bin", sha256=hashlib.sha256(data).hexdigest(),
                        checksum_source="test")
    server.cut_after = 300_000
    with pytest.raises(DownloadError, match="run the command again to continue") as failure:
        fetch(remote, tmp_path, timeout=5)
    part = tmp_path / "big.bin.part"
    assert part.is_file(), (str(failure.value), sorted(p.name for p in tmp_path.iterdir()))
    kept = part.stat().st_size if part.is_file() else 0
    assert 0 < kept < len(data) and not (tmp_path / "big.bin").exists()
    server.cut_after = None
    out = fetch(remote, tmp_path, timeout=5)
    assert out.read_bytes() == data and not part.exists()
    assert server.requests[-1][1] == f"bytes={kept}-"  # only the rest was asked for


def test_a_server_without_range_support_starts_again(served, tmp_path):
    data = b"abcdefghij" * 1000
    server = served({"f.bin": data})
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"XXXXXXXX")  # stale bytes that must not survive
    out = fetch(RemoteFile("f.bin", server.url + "f.bin", size=len(data)), tmp_path, timeout=5)
    assert out.read_bytes() == data and server.requests[-1][1] == "bytes=8-"


def test_a_checksum_mismatch_is_refused_naming_the_file_and_kept_aside(served, tmp_path):
    server = served({"ISIC2018_Task3_Training_LesionGroupings.csv": b"image,lesion_id\n"})
    remote = RemoteFile("ISIC2018_Task3_Training_LesionGroupings.csv",
                        server.url + "ISIC2018_Task3_Training_LesionGroupings.csv", sha256="0" * 64,
                        checksum_source="test table")
    with pytest.raises(DownloadError, match=r"ISIC2018_Task3_Training_LesionGroupings.csv from .* failed "
                                            r"verification: SHA-256 [0-9a-f]{64}, expected 0{64}"):
        fetch(remote, tmp_path, timeout=5)
    assert not (tmp_path / remote.name).exists()
    assert len(list(tmp_path.glob("ISIC2018_Task3_Training_LesionGroupings.csv.bad-*"))) == 1


def test_checksums_recorded_at_the_first_download_guard_later_ones(served, tmp_path):
    server = served({"a.csv": b"first"})
    remote = RemoteFile("a.csv", server.url + "a.csv")
    fetch(remote, tmp_path, timeout=5)
    (tmp_path / "a.csv").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="a.csv is not the expected file .*recorded at the first download"):
        fetch(remote, tmp_path, timeout=5)


def test_404_and_a_slow_server_fail_clearly_and_stop(served, tmp_path):
    server = served({"x.bin": b"x" * 100})
    with pytest.raises(DownloadError, match=r"missing.bin: HTTP 404"):
        fetch(RemoteFile("missing.bin", server.url + "missing.bin"), tmp_path, timeout=5)
    server.delay = 3.0
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"no data for 0.5 s \(timeout\)"):
        fetch(RemoteFile("x.bin", server.url + "x.bin"), tmp_path, timeout=0.5)
    assert time.perf_counter() - t0 < 3.0


def test_a_trickling_server_is_given_up_on_and_what_arrived_is_kept(served, tmp_path):
    server = served({"t.bin": b"t" * 100_000})
    server.trickle = 0.05  # 20 bytes/s: each read gets data well within the timeout, the file would take hours
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"t.bin: slower than 1024 bytes/s for 1\.\d s; what arrived is kept"):
        fetch(RemoteFile("t.bin", server.url + "t.bin"), tmp_path, timeout=1.0)
    assert time.perf_counter() - t0 < 5.0
    assert 0 < (tmp_path / "t.bin.part").stat().st_size < 100_000 and not (tmp_path / "t.bin").exists()


def _dataverse(tmp_path, parts, wrong_md5=None):
    """Dataverse's file listing for the HAM10000 DOI (JSON) and the files behind it, as the real API serves them."""
    listing, files = [], {}
    for k, (label, name) in enumerate([("HAM10000_images_part_1.zip", "HAM10000_images_part_1.zip"),
                                       ("HAM10000_images_part_2.zip", "HAM10000_images_part_2.zip"),
                                       ("HAM10000_metadata.tab", "HAM10000_metadata.csv")], start=1):
        body = parts[name]
        md5 = hashlib.md5(body).hexdigest() if label != wrong_md5 else "0" * 32
        listing.append({"label": label, "dataFile": {"id": k, "filename": label, "filesize": len(body),
                                                     "checksum": {"type": "MD5", "value": md5}}})
        files[f"api/access/datafile/{k}"] = body
    files["api/datasets/:persistentId/versions/:latest-published/files"] = json.dumps({"data": listing}).encode()
    return files


def test_ham10000_from_dataverse_is_verified_against_its_published_md5(served, tmp_path, monkeypatch, cache_env):
    from hdkd_lightning.data import download

    parts = _ham_archives(tmp_path)
    server = served(_dataverse(tmp_path, parts))
    monkeypatch.setattr(download, "DATAVERSE", server.url.rstrip("/"))
    monkeypatch.delenv("HDKD_DATA_MIRROR", raising=False)
    root = tmp_path / "ham"
    rows = download_dataset("ham10000", root, timeout=5, log=lambda _: None)
    assert {r["checksum"] for r in rows[:2]} == {"Dataverse (MD5)"}
    assert (root / "HAM10000_metadata.csv").read_bytes() == parts["HAM10000_metadata.csv"]
    assert len(list((root / "HAM10000_images_part_1").glob("*.jpg"))) == 11

    bad_server = served(_dataverse(tmp_path, parts, wrong_md5="HAM10000_images_part_2.zip"))
    monkeypatch.setattr(download, "DATAVERSE", bad_server.url.rstrip("/"))
    with pytest.raises(DownloadError, match=r"HAM10000_images_part_2.zip from .* failed verification: MD5 .*"
                                            r"expected 0{32} \(Dataverse \(MD5\)\)"):
        download_dataset("ham10000", tmp_path / "ham_bad", timeout=5, log=lambda _: None)
    assert list((tmp_path / "ham_bad").glob("HAM10000_images_part_2.zip.bad-*"))


def test_the_mirror_environment_variable_replaces_every_host(served, tmp_path, monkeypatch):
    from hdkd_lightning.data.download import remote_files

    server = served(_ham_archives(tmp_path))
    monkeypatch.setenv("HDKD_DATA_MIRROR", server.url)
    for dataset in ("ham10000", "isic2018"):
        assert all(f.url.startswith(server.url) for f in remote_files(dataset))
    download_dataset("ham10000", tmp_path / "ham", timeout=5, log=lambda _: None)
    assert {name for name, _ in server.requests} >= {"HAM10000_images_part_1.zip", "HAM10000_metadata.csv"}


def _isic_archives(tmp_path: Path) -> dict:
    """ISIC 2018 Task 3 as the challenge publishes it: one zip per input / ground-truth folder, and the
    lesion groupings CSV (tiny images: 3 training images per class, 1 validation and 1 test image)."""
    files, n = {}, 24306
    groupings = io.StringIO()
    csv.writer(groupings).writerow(["image", "lesion_id", "diagnosis_confirm_type"])
    for word, per_class in (("Training", 3), ("Validation", 1), ("Test", 1)):
        inputs, truth = io.BytesIO(), io.StringIO()
        csv.writer(truth).writerow(["image", *ISIC_COLUMNS])
        with zipfile.ZipFile(inputs, "w") as zf:
            for k in range(len(ISIC_COLUMNS)):
                for _ in range(per_class):
                    image = f"ISIC_{n:07d}"
                    n += 1
                    zf.write(write_image(tmp_path / "src" / f"{image}.jpg"), f"ISIC2018_Task3_{word}_Input/{image}.jpg")
                    csv.writer(truth).writerow([image, *("1.0" if j == k else "0.0" for j in range(len(ISIC_COLUMNS)))])
                    if word == "Training":
                        csv.writer(groupings).writerow([image, f"HAM_{n:07d}", "histopathology"])
        gt = io.BytesIO()
        with zipfile.ZipFile(gt, "w") as zf:
            zf.writestr(f"ISIC2018_Task3_{word}_GroundTruth/ISIC2018_Task3_{word}_GroundTruth.csv", truth.getvalue())
        files[f"ISIC2018_Task3_{word}_Input.zip"] = inputs.getvalue()
        files[f"ISIC2018_Task3_{word}_GroundTruth.zip"] = gt.getvalue()
    files["ISIC2018_Task3_Training_LesionGroupings.csv"] = groupings.getvalue().encode()
    return files


def test_isic2018_is_fetched_unpacked_into_its_layout_and_inspected(served, tmp_path, capsys, cache_env):
    from hdkd_lightning.cli.data import main

    server = served(_isic_archives(tmp_path))
    root = tmp_path / "isic"
    assert main(["download", "isic2018", f"root={root}", f"url_base={server.url}"]) == 0
    out = capsys.readouterr().out
    assert (root / "ISIC2018_Task3_Training_Input").is_dir() and (root / "ISIC2018_Task3_Test_Input").is_dir()
    assert "total" in out and "35" in out  # inspect: 21 training + 7 validation + 7 test images
    assert "ready: hdkd-train experiment=<...> data=isic2018" in out
    record = json.loads((root / ".hdkd-download.json").read_text())  # no published checksums: recorded
    assert len(record) == 7 and all(len(r["sha256"]) == 64 for r in record.values())


def test_a_broken_archive_from_a_mirror_is_refused_kept_aside_and_its_checksum_not_recorded(served, tmp_path, capsys,
                                                                                            cache_env):
    from hdkd_lightning.cli.data import main

    files = _isic_archives(tmp_path)
    good = files["ISIC2018_Task3_Validation_Input.zip"]
    files["ISIC2018_Task3_Validation_Input.zip"] = b"<html>503 Service Unavailable</html>" * 40  # no published checksum
    server = served(files)
    root = tmp_path / "isic"
    assert main(["download", "isic2018", f"root={root}", f"url_base={server.url}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hdkd-data: error: ISIC2018_Task3_Validation_Input.zip from ")
    assert "is not a valid zip archive (BadZipFile" in err[0] and "run the command again" in err[0]
    assert "ISIC2018_Task3_Validation_Input.zip" not in json.loads((root / ".hdkd-download.json").read_text())
    assert not (root / "ISIC2018_Task3_Validation_Input.zip").exists()
    assert len(list(root.glob("ISIC2018_Task3_Validation_Input.zip.bad-*"))) == 1
    server.files["ISIC2018_Task3_Validation_Input.zip"] = good  # the mirror is repaired: the next run fetches afresh
    assert main(["download", "isic2018", f"root={root}", f"url_base={server.url}"]) == 0
    record = json.loads((root / ".hdkd-download.json").read_text())
    assert record["ISIC2018_Task3_Validation_Input.zip"]["sha256"] == hashlib.sha256(good).hexdigest()


def test_a_zip_member_that_fails_its_crc_check_is_refused_before_anything_is_recorded(served, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a/image.txt", b"pixels" * 200)
    damaged = bytearray(buf.getvalue())
    damaged[damaged.index(b"pixels") + 7] ^= 0xFF  # one byte of the member's data: the directory still reads
    server = served({"d.zip": bytes(damaged)})
    with pytest.raises(DownloadError, match=r"d.zip from .* is not a valid zip archive \(member 'a/image.txt' fails "
                                            r"its CRC check\); it was kept aside as .*d.zip.bad-"):
        fetch(RemoteFile("d.zip", server.url + "d.zip", "zip"), tmp_path, timeout=5)
    assert not (tmp_path / "d.zip").exists() and not (tmp_path / ".hdkd-download.json").exists()


def test_a_broken_archive_recorded_by_an_earlier_version_is_kept_aside_and_forgotten(served, tmp_path):
    from hdkd_lightning.data.download import RECORD

    body = b"not a zip at all" * 10
    (tmp_path / "old.zip").write_bytes(body)  # what the previous code accepted and recorded
    (tmp_path / RECORD).write_text(json.dumps({"old.zip": {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()},
                                               "other.csv": {"size": 1, "sha256": "0" * 64}}))
    with pytest.raises(DownloadError, match=r"old.zip is not a valid zip archive \(BadZipFile.*kept aside as old.zip.bad-"):
        extract(tmp_path / "old.zip", tmp_path)
    assert not (tmp_path / "old.zip").exists() and list(tmp_path.glob("old.zip.bad-*"))
    assert list(json.loads((tmp_path / RECORD).read_text())) == ["other.csv"]  # the next run downloads it afresh


def test_extraction_refuses_members_outside_the_root(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "no")
    with pytest.raises(DownloadError, match="would be written outside"):
        extract(evil, tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()


def test_command_downloads_extracts_and_inspects_then_dry_run_lists(served, tmp_path, capsys, cache_env):
    from hdkd_lightning.cli.data import main

    server = served(_ham_archives(tmp_path))
    root = tmp_path / "ham"
    assert main(["download", "ham10000", f"root={root}", f"url_base={server.url}"]) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC" in out and "ham10000" in out and "fetched into" in out
    assert "total" in out and "21" in out  # inspect's summary of the 21 images
    assert main(["download", "ham10000", f"root={root}", f"url_base={server.url}", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "would fetch" in listing and listing.count("complete") == 3


def test_command_refuses_bad_requests_and_explains_kaggle(tmp_path, capsys, monkeypatch):
    from hdkd_lightning.cli.data import main

    monkeypatch.delenv("HDKD_DATA_MIRROR", raising=False)
    assert main(["download", "imagenet", f"root={tmp_path}"]) == 2
    assert "hdkd-data: error: download imagenet: choose one of isic2018, ham10000, brain_tumor" in capsys.readouterr().err
    assert main(["download", "ham10000"]) == 2
    assert "pass root=<folder to put the dataset in>" in capsys.readouterr().err
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no_kaggle"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    assert main(["download", "brain_tumor", f"root={tmp_path / 'brain'}"]) == 2
    err = capsys.readouterr().err
    assert "hdkd-data: error: the kaggle client is" in err
    assert "pip install 'hdkd-lightning[kaggle]'" in err and "Training/<class>/" in err
