"""Proof bundles: the RFC 9162 tree shape with BLAKE3, generate and verify end to end."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest
import rfc8785

from requiem import proof
from requiem.cas import HEADER_SIZE, Cas
from tests.conftest import run_cli
from tests.test_exec import PLAIN


def h(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def reference_root(leaves: list[tuple[str, str]]) -> str:
    """RFC 9162 §2.1.1 written out independently: MTH(D[n]) splits at the largest 2^k < n."""
    def mth(items: list[bytes]) -> bytes:
        if len(items) == 1:
            return h(b"\x00" + items[0])
        k = 1
        while k * 2 < len(items):
            k *= 2
        return h(b"\x01" + mth(items[:k]) + mth(items[k:]))
    return mth([rfc8785.dumps([label, digest]) for label, digest in leaves]).hex()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9])
def test_merkle_root_matches_the_rfc_shape(n: int) -> None:
    leaves = [(f"leaf{i}", blake3.blake3(bytes([i])).hexdigest()) for i in range(n)]
    assert proof.merkle_root(leaves) == reference_root(leaves)


def test_order_and_labels_matter() -> None:
    a, b = ("x", "1" * 64), ("y", "2" * 64)
    assert proof.merkle_root([a, b]) != proof.merkle_root([b, a])
    assert proof.merkle_root([a]) != proof.merkle_root([("z", a[1])])


def _run(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    ws = tmp_path / "ws"
    ws.mkdir()
    req, out = tmp_path / "req.json", tmp_path / "out.json"
    req.write_text(json.dumps({"command": "sh", "argv": ["-c", "echo data > o.txt; echo hi"],
                               "workspace_root": str(ws), "outputs": ["o.txt"], "policy": PLAIN}))
    run_cli("exec", "run", "--request", str(req), "--out", str(out), home=home)
    return req, out


def test_generate_and_verify_with_content(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path)
    bundle = tmp_path / "proof.json"
    got = run_cli("proof", "generate", "--request", str(req), "--result", str(out), "--out",
                  str(bundle), home=home)
    assert got.returncode == 0
    doc = json.loads(bundle.read_text())
    assert doc["algorithm"] == "RFC9162_BLAKE3"
    labels = [leaf["label"] for leaf in doc["leaves"]]
    assert labels == ["request", "policy", "stdout", "stderr", "output:o.txt", "trace", "result"]
    ok = run_cli("proof", "verify", "--bundle", str(bundle), "--request", str(req), "--result",
                 str(out), home=home)
    assert ok.returncode == 0 and ok.json["checks"]["content"]["ok"]

    output_digest = json.loads(out.read_text())["output_digests"]["o.txt"]
    path = Cas(home / "cas").object_path(output_digest)
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE] ^= 1
    path.write_bytes(bytes(raw))
    corrupt = run_cli("proof", "verify", "--bundle", str(bundle), home=home)
    assert corrupt.returncode == 1 and not corrupt.json["checks"]["content"]["ok"]


def test_tampered_bundle_fails(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path)
    bundle = tmp_path / "proof.json"
    run_cli("proof", "generate", "--request", str(req), "--result", str(out), "--out",
            str(bundle), home=home)
    doc = json.loads(bundle.read_text())
    doc["leaves"][2]["digest"] = "0" * 64
    bundle.write_text(json.dumps(doc))
    got = run_cli("proof", "verify", "--bundle", str(bundle), home=home)
    assert got.returncode == 1 and got.json["checks"]["merkle_root"]["ok"] is False


def test_signer_and_verifier_commands(home: Path, tmp_path: Path) -> None:
    req, out = _run(home, tmp_path)
    bundle = tmp_path / "proof.json"
    run_cli("proof", "generate", "--request", str(req), "--result", str(out), "--out",
            str(bundle), "--signer", "b3sum --no-names", home=home)
    signature = json.loads(bundle.read_text())["signature"]
    assert signature["value"]
    verifier = 'test "$(printf %s "$REQUIEM_PROOF_ROOT" | b3sum --no-names)" = "$REQUIEM_PROOF_SIGNATURE"'
    good = run_cli("proof", "verify", "--bundle", str(bundle), "--verifier", verifier, home=home)
    assert good.returncode == 0 and good.json["checks"]["signature"]["ok"]
