"""Section 4: client crypto cost, envelope seal/open against the raw primitives.

Every repetition times the envelope call and the sum of its primitives back to
back, in the same process with the same library, so the overhead ratio is not
skewed by frequency scaling or a noisy neighbour between the two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from .. import crypto
from ..envelope import GCM_NONCE_SIZE, parse_envelope
from .stats import summary

TEXT = ("The quick brown fox jumps over the lazy dog; " * 5)[:200]


def _per_op_us(fn: Callable[[], object], iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6


def bench_key_size(bits: int, iterations: int, reps: int, keygen_reps: int) -> dict[str, Any]:
    """Seal/open and their primitives for one RSA size, plus key generation."""
    alice = crypto.generate_private_key(bits)
    bob = crypto.generate_private_key(bits)
    alice_pub, bob_pub = alice.public_key(), bob.public_key()

    envelope = crypto.seal_envelope(alice, bob_pub, "alice", "bob", TEXT)
    parsed = parse_envelope(envelope)
    header = crypto.envelope_header("alice", "bob", parsed.msg_id, parsed.ts)
    signed = crypto.envelope_signed_bytes(header, parsed.wrapped_key, parsed.nonce, parsed.ciphertext)
    plaintext = crypto.encode_plaintext(TEXT)
    aes_key = os.urandom(crypto.AES_KEY_SIZE)
    nonce = os.urandom(GCM_NONCE_SIZE)
    sealed_ct = crypto.gcm_seal(aes_key, nonce, plaintext, header)
    wrapped = crypto.oaep_wrap(bob_pub, aes_key)
    signature = crypto.pss_sign(alice, signed)

    def seal() -> object:
        return crypto.seal_envelope(alice, bob_pub, "alice", "bob", TEXT)

    def raw_seal() -> object:
        # What seal must do at the least: fresh key and nonce, GCM, OAEP wrap, PSS sign.
        key = os.urandom(crypto.AES_KEY_SIZE)
        iv = os.urandom(GCM_NONCE_SIZE)
        crypto.gcm_seal(key, iv, plaintext, header)
        crypto.oaep_wrap(bob_pub, key)
        return crypto.pss_sign(alice, signed)

    def open_() -> object:
        return crypto.open_envelope(bob, "bob", alice_pub, envelope, "alice")

    def raw_open() -> object:
        crypto.pss_verify(alice_pub, parsed.signature, signed)
        key = crypto.oaep_unwrap(bob, parsed.wrapped_key)
        return crypto.gcm_open(key, parsed.nonce, parsed.ciphertext, header)

    parts: dict[str, Callable[[], object]] = {
        "oaep_wrap": lambda: crypto.oaep_wrap(bob_pub, aes_key),
        "pss_sign": lambda: crypto.pss_sign(alice, signed),
        "gcm_seal": lambda: crypto.gcm_seal(aes_key, nonce, plaintext, header),
        "oaep_unwrap": lambda: crypto.oaep_unwrap(bob, wrapped),
        "pss_verify": lambda: crypto.pss_verify(alice_pub, signature, signed),
        "gcm_open": lambda: crypto.gcm_open(aes_key, nonce, sealed_ct, header),
    }
    whole = {"seal": seal, "raw_seal": raw_seal, "open": open_, "raw_open": raw_open}
    us = _interleaved({**whole, **parts}, iterations, reps)
    return {
        "bits": bits,
        "iterations_per_rep": iterations,
        "seal_us": summary(us["seal"], 1),
        "raw_seal_us": summary(us["raw_seal"], 1),
        "seal_overhead": summary([a / b for a, b in zip(us["seal"], us["raw_seal"])], 3),
        "open_us": summary(us["open"], 1),
        "raw_open_us": summary(us["raw_open"], 1),
        "open_overhead": summary([a / b for a, b in zip(us["open"], us["raw_open"])], 3),
        "primitives_us": {name: summary(us[name], 1) for name in parts},
        "keygen_ms": summary(_keygen_ms(bits, keygen_reps), 1),
    }


def _interleaved(
    operations: dict[str, Callable[[], object]], iterations: int, reps: int
) -> dict[str, list[float]]:
    """µs per call of each operation, every operation once per repetition, in turn (ratios within a rep)."""
    us: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(reps):
        for name, fn in operations.items():
            us[name].append(_per_op_us(fn, iterations))
    return us


def _keygen_ms(bits: int, reps: int) -> list[float]:
    times: list[float] = []
    for _ in range(reps):
        start = time.perf_counter()
        crypto.generate_private_key(bits)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def run(*, quick: bool) -> dict[str, Any]:
    iterations = 20 if quick else 200
    reps = 3 if quick else 7
    keygen = {3072: 1 if quick else 7, 2048: 2 if quick else 7}
    return {f"rsa{bits}": bench_key_size(bits, iterations, reps, keygen[bits]) for bits in (3072, 2048)}
