#!/usr/bin/env python3
"""Independent check of backup.json, written from Protocols/backup.md only.

Parses both committed backups (key file and passphrase), checks the header checksum, the key check, the
file size and every chunk (XChaCha20-Poly1305 through pyca/cryptography and the HChaCha20 of
check_vectors.py; BLAKE2b from hashlib), and compares the plaintext and the manifest with the vector.
Argon2id is not in the Python standard library: the passphrase backup is checked from the vector's
`argon2idKey` on. Run: python3 Protocols/vectors/check_backup_vector.py (needs `pip install cryptography`).
"""
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_vectors import xchacha_open  # noqa: E402


def varint(b, o):
    v, shift = 0, 0
    while True:
        x = b[o]; o += 1
        v |= (x & 0x7F) << shift
        if x < 0x80:
            return v, o
        shift += 7


def check(data, material, v):
    assert data[:4] == b"FSBK" and data[4] == 1, "magic or version"
    kdf, o = data[5], 6
    if kdf == 1:
        assert data[o:o + 16].hex() == v["argon2idSalt"]; o += 16
        ops, o = varint(data, o); mem, o = varint(data, o)
        assert (ops, mem) == (v["argon2idOpsLimit"], v["argon2idMemLimit"])
    else:
        assert kdf == 2, "kdf"
    prefix = data[o:o + 16]; o += 16
    chunk, o = varint(data, o)
    length, o = varint(data, o)
    assert hashlib.blake2b(data[:o], digest_size=32).digest() == data[o:o + 32], "header checksum"
    o += 32
    header = data[:o]
    k = bytes.fromhex(material)
    check_value = hashlib.blake2b(b"fieldsync/v1/backup-check" + header, digest_size=32, key=k).digest()
    assert data[o:o + 32] == check_value, "key check"
    o += 32
    stream = hashlib.blake2b(b"fieldsync/v1/backup-stream", digest_size=32, key=k).digest()
    n = max(1, -(-length // chunk))
    assert len(data) == o + length + 16 * n, "file size"
    plain = b""
    for i in range(n):
        size = chunk if i < n - 1 else length - chunk * (n - 1)
        ct = data[o:o + size + 16]; o += size + 16
        nonce = prefix + i.to_bytes(8, "little")
        plain += xchacha_open(stream, nonce, ct, header + check_value + bytes([1 if i == n - 1 else 0]))
    assert plain == bytes.fromhex(v["plaintext"]), "plaintext"
    mlen, p = varint(plain, 0)
    assert plain[p:p + mlen].hex() == v["manifest"], "manifest"
    return n


def main():
    v = json.loads((Path(__file__).parent / "backup.json").read_text())
    n1 = check(bytes.fromhex(v["keyFileBackup"]), v["keyFile"], v)
    n2 = check(bytes.fromhex(v["passphraseBackup"]), v["argon2idKey"], v)
    print(f"backup.json: key-file backup ({n1} chunks) and passphrase backup ({n2} chunks) check")


if __name__ == "__main__":
    main()
