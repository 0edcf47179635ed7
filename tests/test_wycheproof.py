"""Project Wycheproof vectors through securechat.crypto's own primitives.

The vectors are vendored in ``tests/vectors/wycheproof/`` (source, version
and license in its README) and read only from there. A missing file is a
FAILURE, not a skip: a green run must mean the vectors really ran.

What applies to protocol v1:

* RSA-OAEP (SHA-256, MGF1-SHA-256) through :func:`crypto.oaep_unwrap`. Our
  label is always empty, so a vector is expected to unwrap to ``msg`` only if
  it is ``valid`` *and* has an empty label. A ``valid`` vector with a
  non-empty label was encrypted under that label; OAEP decoding with the
  empty label compares ``lHash`` and must fail, so our function must reject
  it. ``invalid`` vectors must be rejected whatever their label.
* RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) through :func:`crypto.pss_verify`.
* AES-GCM through :func:`crypto.gcm_seal` / :func:`crypto.gcm_open`, only the
  groups with a 256-bit key, 96-bit IV and 128-bit tag. Every other group is
  skipped explicitly (the protocol never uses those parameters).

"acceptable" vectors may go either way; we only check that nothing but the
documented result (bytes / rejection) comes out.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from securechat import crypto
from securechat.errors import DecryptFailed, UnwrapFailed
from tests.conftest import WYCHEPROOF_DIR

OAEP_FILES = [f"rsa_oaep_{bits}_sha256_mgf1sha256_test.json" for bits in (2048, 3072, 4096)]
PSS_FILES = [f"rsa_pss_{bits}_sha256_mgf1_32_test.json" for bits in (2048, 3072, 4096)]
GCM_FILE = "aes_gcm_test.json"
ALL_FILES = [*OAEP_FILES, *PSS_FILES, GCM_FILE]

# Minimum vectors that must run per file; the pinned copy has 37 / 108 / 66.
MIN_RUN = {**{f: 30 for f in OAEP_FILES}, **{f: 100 for f in PSS_FILES}, GCM_FILE: 60}

MISSING = "missing"


@functools.cache
def load(name: str) -> dict[str, Any] | None:
    path = Path(WYCHEPROOF_DIR) / name
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def missing_message(name: str) -> str:
    return (
        f"Wycheproof vectors not found: {Path(WYCHEPROOF_DIR) / name}. They are vendored in "
        "tests/vectors/wycheproof/; without them the crypto primitives are untested, so this is a "
        "failure, not a skip."
    )


def gcm_group_applies(group: dict[str, Any]) -> bool:
    return (group["keySize"], group["ivSize"], group["tagSize"]) == (256, 96, 128)


def vector_params(name: str) -> list[Any]:
    """One pytest param per vector (id: file stem + tcId); one failing param if the file is absent."""
    data = load(name)
    stem = name.removesuffix("_test.json")
    if data is None:
        return [pytest.param(name, None, None, id=f"{stem}-{MISSING}")]
    params: list[Any] = []
    for index, group in enumerate(data["testGroups"]):
        if name == GCM_FILE and not gcm_group_applies(group):
            params.append(
                pytest.param(
                    name, index, None,
                    id=f"{stem}-group{index}-key{group['keySize']}-iv{group['ivSize']}-tag{group['tagSize']}",
                    marks=pytest.mark.skip(
                        reason="protocol v1 uses only AES-256-GCM with 96-bit nonces and 128-bit tags; "
                        "this group's parameters never occur on the wire"
                    ),
                )
            )
            continue
        for test in group["tests"]:
            params.append(pytest.param(name, index, test["tcId"], id=f"{stem}-tc{test['tcId']}"))
    return params


def find(name: str, group_index: int | None, tc_id: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    data = load(name)
    if data is None or group_index is None or tc_id is None:
        pytest.fail(missing_message(name))
    group = data["testGroups"][group_index]
    (test,) = [t for t in group["tests"] if t["tcId"] == tc_id]
    return group, test


@functools.cache
def private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.cache
def public_key(pem: str) -> rsa.RSAPublicKey:
    # Our strict loader: the Wycheproof keys are RSA/65537/>=2048, like ours.
    return crypto.load_public_key_pem(pem)


# --- one check per vector kind; each returns what happened for the counters -------------


def check_oaep(group: dict[str, Any], test: dict[str, Any]) -> str:
    assert (group["sha"], group["mgf"], group["mgfSha"]) == ("SHA-256", "MGF1", "SHA-256")
    key = private_key(group["privateKeyPem"])
    ct, msg = bytes.fromhex(test["ct"]), bytes.fromhex(test["msg"])
    label = bytes.fromhex(test["label"])
    try:
        got: bytes | None = crypto.oaep_unwrap(key, ct)
    except UnwrapFailed:
        got = None
    ctx = f"tcId {test['tcId']} ({test['comment']!r}, flags {test['flags']}, label {test['label']!r})"
    if test["result"] == "valid" and not label:
        assert got == msg, f"valid vector did not unwrap to msg: {ctx}"
        return "valid"
    if test["result"] == "valid":
        # Encrypted under a label we never use: the empty-label lHash check must fail.
        assert got is None, f"vector encrypted with a non-empty label was accepted: {ctx}"
        return "valid-with-label-rejected"
    if test["result"] == "invalid":
        assert got is None, f"invalid vector was accepted: {ctx}"
        return "invalid"
    assert got is None or got == msg, f"acceptable vector gave wrong bytes: {ctx}"
    return "acceptable"


def check_pss(group: dict[str, Any], test: dict[str, Any]) -> str:
    assert (group["sha"], group["mgf"], group["mgfSha"], group["sLen"]) == ("SHA-256", "MGF1", "SHA-256", 32)
    key = public_key(group["publicKeyPem"])
    ok = crypto.pss_verify(key, bytes.fromhex(test["sig"]), bytes.fromhex(test["msg"]))
    ctx = f"tcId {test['tcId']} ({test['comment']!r}, flags {test['flags']})"
    if test["result"] == "valid":
        assert ok is True, f"valid signature rejected: {ctx}"
    elif test["result"] == "invalid":
        assert ok is False, f"invalid signature accepted: {ctx}"
    else:
        assert ok in (True, False)
    return str(test["result"])


def check_gcm(group: dict[str, Any], test: dict[str, Any]) -> str:
    assert gcm_group_applies(group)
    key, iv = bytes.fromhex(test["key"]), bytes.fromhex(test["iv"])
    aad, msg = bytes.fromhex(test["aad"]), bytes.fromhex(test["msg"])
    sealed = bytes.fromhex(test["ct"]) + bytes.fromhex(test["tag"])
    ctx = f"tcId {test['tcId']} ({test['comment']!r}, flags {test['flags']})"
    try:
        opened: bytes | None = crypto.gcm_open(key, iv, sealed, aad)
    except DecryptFailed:
        opened = None
    if test["result"] == "valid":
        assert crypto.gcm_seal(key, iv, msg, aad) == sealed, f"seal differs: {ctx}"
        assert opened == msg, f"valid ciphertext did not open: {ctx}"
    elif test["result"] == "invalid":
        assert opened is None, f"invalid ciphertext opened: {ctx}"
    else:
        assert opened is None or opened == msg, ctx
    return str(test["result"])


CHECKS = {**{f: check_oaep for f in OAEP_FILES}, **{f: check_pss for f in PSS_FILES}, GCM_FILE: check_gcm}


# --- per-vector tests: a failure names the file and tcId ---------------------------------


@pytest.mark.parametrize(("name", "group_index", "tc_id"), [p for f in OAEP_FILES for p in vector_params(f)])
def test_rsa_oaep_vector(name: str, group_index: int | None, tc_id: int | None) -> None:
    check_oaep(*find(name, group_index, tc_id))


@pytest.mark.parametrize(("name", "group_index", "tc_id"), [p for f in PSS_FILES for p in vector_params(f)])
def test_rsa_pss_vector(name: str, group_index: int | None, tc_id: int | None) -> None:
    check_pss(*find(name, group_index, tc_id))


@pytest.mark.parametrize(("name", "group_index", "tc_id"), vector_params(GCM_FILE))
def test_aes_gcm_vector(name: str, group_index: int | None, tc_id: int | None) -> None:
    check_gcm(*find(name, group_index, tc_id))


# --- per-file sweeps: count what ran, so a silently shrunken file cannot pass ------------------


def test_wycheproof_dir_exists() -> None:
    assert Path(WYCHEPROOF_DIR).is_dir(), missing_message("")


@pytest.mark.parametrize("name", ALL_FILES)
def test_file_sweep_runs_enough_vectors(name: str, record_property: Any) -> None:
    data = load(name)
    if data is None:
        pytest.fail(missing_message(name))
    check = CHECKS[name]
    outcomes: Counter[str] = Counter()
    skipped_groups = 0
    for group in data["testGroups"]:
        if name == GCM_FILE and not gcm_group_applies(group):
            skipped_groups += 1
            continue
        for test in group["tests"]:
            outcomes[check(group, test)] += 1
    ran = sum(outcomes.values())
    record_property("vectors_run", ran)
    print(f"{name}: {ran} vectors run {dict(outcomes)}; {skipped_groups} groups skipped")
    assert ran >= MIN_RUN[name], f"only {ran} vectors ran from {name}"
    assert outcomes["valid"] > 0 and outcomes["invalid"] > 0, f"{name}: need both valid and invalid vectors"
    if name in OAEP_FILES:
        assert outcomes["valid-with-label-rejected"] > 0
