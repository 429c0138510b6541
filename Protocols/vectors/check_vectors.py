#!/usr/bin/env python3
"""Independent check of identity.json and change.json, written from Protocols/*.md only.

Uses pyca/cryptography (OpenSSL) for Ed25519 and ChaCha20-Poly1305, hashlib for BLAKE2b, and a small
HChaCha20 below for XChaCha20-Poly1305, so none of libsodium or the Swift code is involved.
Run: python3 Protocols/vectors/check_vectors.py  (needs `pip install cryptography`). The Swift test
VectorTests.independentCheckerAgrees runs it when python3 and cryptography are installed.
"""
import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

HERE = Path(__file__).parent


def dh(label, data, n):
    return hashlib.blake2b(label.encode() + b"\x00" + data, digest_size=n).digest()


def hchacha20(key, nonce16):
    def rotl(v, c):
        return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))

    def qr(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xFFFFFFFF; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xFFFFFFFF; s[b] = rotl(s[b] ^ s[c], 7)

    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        qr(s, 0, 4, 8, 12); qr(s, 1, 5, 9, 13); qr(s, 2, 6, 10, 14); qr(s, 3, 7, 11, 15)
        qr(s, 0, 5, 10, 15); qr(s, 1, 6, 11, 12); qr(s, 2, 7, 8, 13); qr(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def xchacha_open(key, nonce24, ct, ad):
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).decrypt(b"\x00" * 4 + nonce24[16:], ct, ad)


class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def raw(self, n):
        assert self.o + n <= len(self.b), "truncated"
        v = self.b[self.o:self.o + n]; self.o += n
        return v

    def u8(self):
        return self.raw(1)[0]

    def varint(self):
        r = shift = 0
        while True:
            c = self.u8(); r |= (c & 0x7F) << shift; shift += 7
            if not c & 0x80:
                return r

    def string(self):
        return self.raw(self.varint()).decode()


def read_certificate(r):
    start = r.o
    assert r.u8() == 1 and r.u8() == 1
    kind = r.u8(); subject = r.raw(16); sk = r.raw(32); ak = r.raw(32); role = r.u8()
    scopes = [r.string() for _ in range(r.varint())]
    nb, na, serial = r.varint(), r.varint(), r.varint()
    issuer = r.raw(16); tbs = r.b[start:r.o]; sig = r.raw(64)
    assert hashlib.blake2b(sk, digest_size=32).digest()[:16] == subject, "device id"
    return dict(kind=kind, subject=subject, sk=sk, role=role, scopes=scopes, nb=nb, na=na, serial=serial,
                issuer=issuer, tbs=tbs, sig=sig)


def parse_certificate(b):
    r = Reader(b)
    c = read_certificate(r)
    assert r.o == len(b)
    return c


def verifies(pk, sig, label, tbs):
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, dh(label, tbs, 64))
        return True
    except Exception:
        return False


def scope_contains(outer, inner):
    o, i = outer.split("/"), inner.split("/")
    return i[:len(o)] == o


def check_revocation(b, root_pk, skew=300_000):
    """identity.md section 5.1, from the root key alone: "accept" or the error code."""
    r = Reader(b)
    assert r.u8() == 1 and r.u8() == 1
    device = r.raw(16); serial = r.varint(); hlc = r.varint(); r.u8(); r.string(); issuer = r.raw(16)
    options = []
    for _ in range(2):
        flag = r.u8()
        assert flag in (0, 1)
        options.append(read_certificate(r) if flag else None)
    a, c = options
    tbs = b[:r.o]; sig = r.raw(64)
    assert r.o == len(b)
    root_id = hashlib.blake2b(root_pk, digest_size=32).digest()[:16]
    ms = hlc >> 16
    if device == root_id:
        return "outsideDelegation"
    if issuer == root_id:
        if a or c:
            return "invalid"
        return "accept" if verifies(root_pk, sig, "fieldsync/v1/revocation", tbs) else "badSignature"
    if a is None:
        return "unknownAuthority"
    if c is None:
        return "outsideDelegation"
    if a["subject"] != issuer:
        return "invalid"
    if a["kind"] != 2:
        return "wrongKind"
    if a["issuer"] != root_id:
        return "unknownAuthority"
    if a["role"] != 4:
        return "roleEscalation"
    if not verifies(root_pk, a["sig"], "fieldsync/v1/certificate", a["tbs"]):
        return "badSignature"
    if ms + skew < a["nb"]:
        return "notYetValid"
    if ms > a["na"] + skew:
        return "expired"
    if c["subject"] != device or c["serial"] != serial:
        return "invalid"
    if c["kind"] != 1 or c["issuer"] != a["subject"]:
        return "outsideDelegation"
    if not verifies(a["sk"], c["sig"], "fieldsync/v1/certificate", c["tbs"]):
        return "badSignature"
    if c["role"] in (4, 6):
        return "roleEscalation"
    if not all(any(scope_contains(o, i) for o in a["scopes"]) for i in c["scopes"]):
        return "scopeEscalation"
    return "accept" if verifies(a["sk"], sig, "fieldsync/v1/revocation", tbs) else "badSignature"


def parse_change(b):
    r = Reader(b)
    assert r.u8() == 1 and r.u8() == 1
    author = r.raw(16); scope = r.string(); seq = r.varint(); prev = r.raw(32); hlc = r.varint()
    ctype = r.u8(); prio = r.u8(); epoch = r.varint(); plen = r.varint()
    header = b[:r.o]
    nonce = b"" if ctype >= 0x80 else r.raw(24)
    slots = []
    for _ in range(r.varint()):
        start = r.o; kind = r.u8()
        if kind == 1:
            sscope = r.string(); sepoch = r.varint(); recipient = b[start:r.o]
            slots.append(dict(kind=1, scope=sscope, epoch=sepoch, recipient=recipient, nonce=r.raw(24), ct=r.raw(48)))
        else:
            kid = r.raw(16); recipient = b[start:r.o]
            slots.append(dict(kind=2, recipient=recipient, ct=r.raw(112)))
    payload = r.raw(plen); unsigned = b[:r.o]; sig = r.raw(64)
    assert r.o == len(b)
    return dict(author=author, scope=scope, seq=seq, prev=prev, ctype=ctype, epoch=epoch, header=header,
                nonce=nonce, slots=slots, payload=payload, unsigned=unsigned, sig=sig)


class DecodeError(Exception):
    pass


def parse_receipt(b):
    """change.md §2.1: count, then (author[16], scope string, seq varint), LogIDs strictly increasing."""
    r = Reader(b)
    try:
        count = r.varint()
    except AssertionError:
        raise DecodeError("truncated")
    if count > (len(b) - r.o) // 19:
        raise DecodeError("lengthTooLarge")
    heads, last = [], None
    for _ in range(count):
        try:
            author = r.raw(16); scope = r.raw(r.varint()); seq = r.varint()
        except AssertionError:
            raise DecodeError("truncated")
        key = (author, scope)
        if last is not None and not last < key:
            raise DecodeError("nonCanonicalOrder")
        last = key
        heads.append((author.hex(), scope.decode(), seq))
    if r.o != len(b):
        raise DecodeError("trailingBytes")
    return heads


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80); n >>= 7
    out.append(n)
    return bytes(out)


def main():
    ident = json.loads((HERE / "identity.json").read_text())
    chg = json.loads((HERE / "change.json").read_text())
    h = bytes.fromhex
    root = Ed25519PublicKey.from_public_bytes(h(ident["root"]["publicKey"]))
    county = parse_certificate(h(ident["countyAuthority"]["certificate"]))
    root.verify(county["sig"], dh("fieldsync/v1/certificate", county["tbs"], 64))
    device = parse_certificate(h(ident["device"]["certificate"]))
    Ed25519PublicKey.from_public_bytes(county["sk"]).verify(device["sig"], dh("fieldsync/v1/certificate", device["tbs"], 64))
    assert device["issuer"] == hashlib.blake2b(county["sk"], digest_size=32).digest()[:16]
    grant = h(ident["keyGrant"]["grant"])
    Ed25519PublicKey.from_public_bytes(county["sk"]).verify(grant[-64:], dh("fieldsync/v1/key-grant", grant[:-64], 64))
    rev = h(ident["revocation"]["revocation"])
    Ed25519PublicKey.from_public_bytes(county["sk"]).verify(rev[-64:], dh("fieldsync/v1/revocation", rev[:-64], 64))
    assert check_revocation(rev, h(ident["root"]["publicKey"])) == "accept"
    for row in ident["revocationBounds"]:
        got = check_revocation(h(row["revocation"]), h(ident["root"]["publicKey"]))
        assert got == row["expect"], f'{row["case"]}: {got}, expected {row["expect"]}'
    req = h(ident["device"]["request"])
    Ed25519PublicKey.from_public_bytes(device["sk"]).verify(req[-64:], dh("fieldsync/v1/enrollment-request", req[:-64], 64))

    c = parse_change(h(chg["sealed"]["change"]))
    author = Ed25519PublicKey.from_public_bytes(device["sk"])
    author.verify(c["sig"], dh("fieldsync/v1/change", c["unsigned"], 64))
    hh = dh("fieldsync/v1/change-header", c["header"], 32)
    assert hh.hex() == chg["sealed"]["headerHash"]
    slot = c["slots"][0]
    ad = hh + varint(0) + slot["recipient"]
    data_key = xchacha_open(h(chg["epochKey"]["key"]), slot["nonce"], slot["ct"], ad)
    plain = xchacha_open(data_key, c["nonce"], c["payload"], hh)
    assert plain.hex() == chg["sealed"]["payload"]
    assert hashlib.blake2b(h(chg["sealed"]["change"]), digest_size=32).hexdigest() == chg["sealed"]["id"]
    ctl = parse_change(h(chg["control"]["change"]))
    author.verify(ctl["sig"], dh("fieldsync/v1/change", ctl["unsigned"], 64))
    assert ctl["prev"].hex() == chg["sealed"]["id"] and ctl["payload"].hex() == chg["control"]["payloadIsRevocation"]

    # Fork proofs (change.md section 6): two length-prefixed changes by one author, both signed.
    def fork_proof(b):
        r = Reader(b)
        assert r.u8() == 1 and r.u8() == 1
        first = r.raw(r.varint()); second = r.raw(r.varint())
        assert r.o == len(b)
        return first, second

    def change_id(b):
        return hashlib.blake2b(b, digest_size=32).digest()

    a, b = fork_proof(h(chg["fork"]["proof"]))
    pa, pb = parse_change(a), parse_change(b)
    for p in (pa, pb):
        author.verify(p["sig"], dh("fieldsync/v1/change", p["unsigned"], 64))
    assert pa["author"] == pb["author"] and pa["scope"] == pb["scope"] and pa["seq"] == pb["seq"]
    assert change_id(a) < change_id(b), "position proof: smaller id first"
    a, b = fork_proof(h(chg["chainFork"]["proof"]))
    pa, pb = parse_change(a), parse_change(b)
    for p in (pa, pb):
        author.verify(p["sig"], dh("fieldsync/v1/change", p["unsigned"], 64))
    assert pa["author"] == pb["author"] and pa["scope"] == pb["scope"] and pb["seq"] == pa["seq"] + 1
    assert pb["prev"] != change_id(a), "chain proof: the second does not follow the first"
    ctl_rev = h(chg["control"]["payloadIsRevocation"])
    assert check_revocation(ctl_rev, h(ident["root"]["publicKey"])) == "accept"
    rc = chg["receipt"]
    hq = parse_certificate(h(rc["hqCertificate"]))
    assert hq["role"] == 6 and hq["issuer"] == hashlib.blake2b(h(ident["root"]["publicKey"]), digest_size=32).digest()[:16]
    root.verify(hq["sig"], dh("fieldsync/v1/certificate", hq["tbs"], 64))
    rch = parse_change(h(rc["change"]))
    Ed25519PublicKey.from_public_bytes(hq["sk"]).verify(rch["sig"], dh("fieldsync/v1/change", rch["unsigned"], 64))
    assert rch["ctype"] == 0x82 and rch["epoch"] == 0 and not rch["slots"] and rch["author"] == hq["subject"]
    assert rch["payload"].hex() == rc["payload"]
    assert hashlib.blake2b(h(rc["change"]), digest_size=32).hexdigest() == rc["id"]
    assert parse_receipt(rch["payload"]) == [(x["author"], x["scope"], x["seq"]) for x in rc["heads"]]
    for bad in rc["invalidPayloads"]:
        try:
            parse_receipt(h(bad["payload"]))
            raise AssertionError(bad["name"] + " decoded")
        except DecodeError as e:
            assert str(e) == bad["error"], (bad["name"], str(e))
    print("identity.json and change.json (fork proofs, revocation bounds and the receipt included): all signatures, hashes, AEAD openings and decodings check out")


if __name__ == "__main__":
    sys.exit(main())
