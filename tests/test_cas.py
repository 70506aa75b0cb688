"""CAS v2: round trips, integrity checks, corruption, crash safety, concurrency, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from requiem import hashing
from requiem.cas import HEADER_SIZE, Cas
from requiem.errors import RequiemError
from tests.conftest import cli_command, run_cli


@pytest.fixture
def cas(tmp_path: Path) -> Cas:
    return Cas(tmp_path / "cas")


@pytest.mark.parametrize("encoding", ["identity", "zstd"])
@pytest.mark.parametrize("size", [0, 1, 4096, 3 * (1 << 20) + 5])
def test_put_get_round_trip(cas: Cas, tmp_path: Path, encoding: str, size: int) -> None:
    data = (os.urandom(1000) + b"log line\n" * 50) * (size // 1450 + 1)
    data = data[:size]
    src = tmp_path / "src"
    src.write_bytes(data)
    info = cas.put_file(src, encoding=encoding)
    assert info.digest == hashing.hash_bytes(data)
    assert info.original_size == size
    assert cas.read_bytes(info.digest) == data
    out = tmp_path / "out"
    cas.get_to_file(info.digest, out)
    assert out.read_bytes() == data
    assert cas.info(info.digest) == info
    assert cas.contains(info.digest)


def test_zstd_compresses_text_and_records_the_stored_hash(cas: Cas) -> None:
    data = b"2026-11-22 INFO request served in 3 ms\n" * 10000
    info = cas.put_bytes(data, encoding="zstd", level=9)
    assert info.stored_size < info.original_size / 10
    raw = cas.object_path(info.digest).read_bytes()[HEADER_SIZE:]
    assert hashing.hash_bytes(raw) == info.stored_blob_hash


def test_identical_content_is_stored_once(cas: Cas) -> None:
    first = cas.put_bytes(b"same")
    second = cas.put_bytes(b"same", encoding="zstd")
    assert first == second
    assert list(cas.list_digests()) == [first.digest]


def test_stats_count_bytes_and_rank_top_objects(cas: Cas) -> None:
    small = cas.put_bytes(b"a")
    big = cas.put_bytes(b"b" * 10000, encoding="zstd")
    stats = cas.stats(top=1)
    assert stats["objects"] == 2
    assert stats["original_bytes"] == 10001
    assert stats["stored_bytes"] == small.stored_size + big.stored_size
    assert stats["compression_ratio"] == round(10001 / stats["stored_bytes"], 4)
    assert [o["digest"] for o in stats["top"]] == [big.digest]


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "flip_blob_byte":
        raw[HEADER_SIZE + len(raw[HEADER_SIZE:]) // 2] ^= 0x01
    elif how == "break_metadata":
        text = raw[:HEADER_SIZE].decode()
        raw[:HEADER_SIZE] = text.replace('"original_size":', '"original_size":1').encode()[:HEADER_SIZE]
    elif how == "truncate":
        raw = raw[: len(raw) - 7]
    elif how == "garbage_header":
        raw[:20] = b"x" * 20
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("encoding", ["identity", "zstd"])
@pytest.mark.parametrize("how", ["flip_blob_byte", "break_metadata", "truncate", "garbage_header"])
def test_corruption_is_detected_and_isolated(cas: Cas, encoding: str, how: str) -> None:
    victim = cas.put_bytes(os.urandom(5000) + b"v" * 5000, encoding=encoding)
    bystander = cas.put_bytes(b"bystander" * 100, encoding=encoding)
    _corrupt(cas.object_path(victim.digest), how)
    with pytest.raises(RequiemError) as info:
        cas.read_bytes(victim.digest)
    assert info.value.code == "cas_integrity_failed"
    report = cas.verify()
    assert not report["ok"]
    assert [c["digest"] for c in report["corrupt"]] == [victim.digest]
    assert cas.read_bytes(bystander.digest) == b"bystander" * 100


def test_cli_reports_corruption_with_exit_1(cli, home: Path, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"precious" * 1000)
    digest = cli("cas", "put", "--in", str(src)).json["digest"]
    path = Cas(home / "cas").object_path(digest)
    _corrupt(path, "flip_blob_byte")
    got = cli("cas", "get", "--digest", digest, "--out", str(tmp_path / "out"))
    assert got.returncode == 1
    assert got.json["error"]["code"] == "cas_integrity_failed"
    assert not (tmp_path / "out").exists()
    verify = cli("cas", "verify", "--all")
    assert verify.returncode == 1
    assert verify.json["corrupt"][0]["digest"] == digest
    sample = cli("cas", "verify", "--sample", "5")
    assert sample.returncode == 1 and sample.json["mode"] == "sample"


def test_verify_sample_checks_at_most_n(cas: Cas) -> None:
    for i in range(10):
        cas.put_bytes(f"object {i}".encode())
    report = cas.verify(sample=3, seed=1)
    assert report["objects_checked"] == 3 and report["objects_total"] == 10 and report["ok"]


@pytest.mark.parametrize(
    "digest", ["abc", "A" * 64, "a" * 65, "../" + "a" * 61, "g" * 64, "a" * 63 + "/"]
)
def test_bad_digests_are_rejected_before_touching_the_filesystem(cli, digest: str) -> None:
    got = cli("cas", "info", "--digest", digest)
    assert got.returncode == 1
    assert got.json["error"]["code"] == "invalid_request"


def test_missing_object_is_missing_input(cli) -> None:
    got = cli("cas", "info", "--digest", "a" * 64)
    assert got.returncode == 1 and got.json["error"]["code"] == "missing_input"


def test_bad_put_inputs(cli, tmp_path: Path) -> None:
    missing = cli("cas", "put", "--in", str(tmp_path / "nope"))
    assert missing.json["error"]["code"] == "missing_input"
    directory = cli("cas", "put", "--in", str(tmp_path))
    assert directory.json["error"]["code"] == "invalid_request"
    assert missing.returncode == directory.returncode == 1


def test_unreadable_file_is_an_error(home: Path, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "secret"
    src.write_bytes(b"x")
    src.chmod(0)
    argv = cli_command() + ["--home", str(home), "cas", "put", "--in", str(src)]
    if os.geteuid() == 0:
        # Root reads any file; without its capabilities (bounding set cleared) it cannot.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing to drop capabilities")
        argv = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "missing_input"
    assert "permission denied" in json.loads(proc.stdout)["error"]["message"]
    assert list(Cas(home / "cas").list_digests()) == []


def test_full_disk_leaves_no_partial_object(tmp_path: Path) -> None:
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        keep = tmp_path / "keep"
        keep.write_bytes(b"kept" * 100)
        before = run_cli("cas", "put", "--in", str(keep), "--cas", str(root))
        assert before.returncode == 0
        big = tmp_path / "big"
        big.write_bytes(os.urandom(3 << 20))
        for extra in ([], ["--compress", "zstd"]):
            got = run_cli("cas", "put", "--in", str(big), "--cas", str(root), *extra)
            assert got.returncode == 1
            assert got.json["error"]["code"] == "quota_exceeded"
            assert "space" in got.json["error"]["message"]
        assert os.listdir(root / "v2" / "tmp") == []
        store = Cas(root)
        assert list(store.list_digests()) == [before.json["digest"]]
        assert store.verify()["ok"]
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_four_processes_putting_the_same_content(tmp_path: Path) -> None:
    src = tmp_path / "same"
    src.write_bytes(os.urandom(8 << 20))
    root = tmp_path / "cas"
    procs = [
        subprocess.Popen(cli_command() + ["cas", "put", "--in", str(src), "--cas", str(root)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({o["digest"] for o in outputs}) == 1
    store = Cas(root)
    assert list(store.list_digests()) == [outputs[0]["digest"]]
    assert store.verify()["ok"]
    assert os.listdir(root / "v2" / "tmp") == []


@pytest.mark.slow
def test_kill_9_during_put_never_leaves_a_bad_object(tmp_path: Path) -> None:
    src = tmp_path / "large"
    with open(src, "wb") as handle:
        block = os.urandom(1 << 20)
        for _ in range(192):
            handle.write(block)
    root = tmp_path / "cas"
    rng = random.Random(20261122)
    for round_ in range(20):
        encoding = ["identity", "zstd"][round_ % 2]
        proc = subprocess.Popen(
            cli_command() + ["cas", "put", "--in", str(src), "--cas", str(root),
                             "--compress", encoding],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = Cas(root)  # a new start sweeps the dead writer's temp files
        report = store.verify()
        assert report["ok"], report
        assert os.listdir(root / "v2" / "tmp") == []
        for digest in store.list_digests():
            store.remove(digest)
