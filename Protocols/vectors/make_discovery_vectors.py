#!/usr/bin/env python3
"""Writes Protocols/vectors/discovery.json from Protocols/discovery.md alone (hashlib BLAKE2b, no
libsodium, no Swift). The Swift tests check the codec against the file.
Run: python3 Protocols/vectors/make_discovery_vectors.py
"""
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).parent


def beacon_key(network, root, secret=b""):
    data = b"fieldsync/v1/beacon\x00" + network.encode() + b"\x00" + root
    return hashlib.blake2b(data, digest_size=32, key=secret).digest()


def beacon(key, port, nonce):
    body = b"FSB\x01" + port.to_bytes(2, "big") + b"\x00\x00" + nonce
    return body + hashlib.blake2b(body, digest_size=16, key=key).digest()


root = bytes(range(32))
nonce = bytes(range(0xA0, 0xB0))
secret = b"village-hall-secret-0123456789ab"
valid = []
for name, network, sec, port in [
    ("default key", "longnan-police", b"", 7000),
    ("with discovery secret", "longnan-police", secret, 7000),
    ("other network", "longnan-training", b"", 65535),
]:
    k = beacon_key(network, root, sec)
    valid.append({"name": name, "network": network, "root": root.hex(), "secret": sec.hex(), "port": port,
                  "nonce": nonce.hex(), "beaconKey": k.hex(), "beacon": beacon(k, port, nonce).hex()})

k = beacon_key("longnan-police", root)
good = beacon(k, 7000, nonce)
flipped = bytearray(good); flipped[30] ^= 1
zero_port = beacon(k, 0, nonce)
reserved = bytearray(good); reserved[7] = 1
v2 = bytearray(good); v2[3] = 2
invalid = [
    {"name": "truncated", "beacon": good[:39].hex(), "error": "wrongLength"},
    {"name": "trailing byte", "beacon": (good + b"\x00").hex(), "error": "wrongLength"},
    {"name": "version 2", "beacon": bytes(v2).hex(), "error": "notABeacon"},
    {"name": "reserved bits set", "beacon": bytes(reserved).hex(), "error": "notABeacon"},
    {"name": "tag bit flipped", "beacon": bytes(flipped).hex(), "error": "badTag"},
    {"name": "other network's beacon", "beacon": valid[2]["beacon"], "error": "badTag"},
    {"name": "port zero", "beacon": zero_port.hex(), "error": "zeroPort"},
]
out = {
    "description": "FieldSync LAN discovery beacon v1 vectors (Protocols/discovery.md). Invalid beacons are "
                   "checked against network longnan-police, the same root and no secret.",
    "valid": valid, "invalid": invalid,
}
(HERE / "discovery.json").write_text(json.dumps(out, indent=2) + "\n")
print("wrote", HERE / "discovery.json")
