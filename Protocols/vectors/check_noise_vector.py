#!/usr/bin/env python3
"""Differential check of noise-cacophony.json with a second Noise implementation.

Recomputes every vector of the file whose protocol FieldSync speaks (or whose suite the package
supports) with the Python `noiseprotocol` package (github.com/plizonczyk/noiseprotocol; `pip install
noiseprotocol`, checked with 0.3.1): all handshake and transport ciphertexts, and the final handshake
hash, which FieldSync uses as its session id (Protocols/sync.md §4). None of the Swift code or of
libsodium's Noise-free primitives is involved. The suite runs it (VectorTests.secondNoiseImplementationReproducesTheVectors; .ci/run installs the package). Run:
python3 Protocols/vectors/check_noise_vector.py
"""
import json
import sys
import warnings
from pathlib import Path

from noise.connection import Keypair, NoiseConnection

warnings.filterwarnings("ignore")  # the package warns that preset ephemeral keys are for tests only


def run(v):
    h = bytes.fromhex
    sides = []
    for role in ("init", "resp"):
        c = NoiseConnection.from_name(v["protocol_name"].encode())
        c.set_as_initiator() if role == "init" else c.set_as_responder()
        c.set_prologue(h(v[role + "_prologue"]))
        if v.get(role + "_static"):
            c.set_keypair_from_private_bytes(Keypair.STATIC, h(v[role + "_static"]))
        c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, h(v[role + "_ephemeral"]))
        c.start_handshake()
        sides.append(c)
    for n, m in enumerate(v["messages"]):
        writer, reader = (sides[0], sides[1]) if n % 2 == 0 else (sides[1], sides[0])
        ct = writer.write_message(h(m["payload"])) if not writer.handshake_finished else writer.encrypt(h(m["payload"]))
        assert ct.hex() == m["ciphertext"], f"{v['protocol_name']} message {n}"
        pt = reader.read_message(ct) if not reader.handshake_finished else reader.decrypt(ct)
        assert pt == h(m["payload"])
    assert sides[0].get_handshake_hash().hex() == v["handshake_hash"], f"{v['protocol_name']} handshake hash"
    assert sides[1].get_handshake_hash().hex() == v["handshake_hash"]


def main():
    vectors = json.loads((Path(__file__).parent / "noise-cacophony.json").read_text())["vectors"]
    for v in vectors:
        run(v)
        print(f"{v['protocol_name']}: ciphertexts and handshake hash reproduced")


if __name__ == "__main__":
    sys.exit(main())
