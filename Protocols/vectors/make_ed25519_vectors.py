#!/usr/bin/env python3
"""Builds ed25519-edge.json: the Ed25519 accept/reject set of suite FPS-1 (Protocols/identity.md §1).

FPS-1 verifies with libsodium's strict rules (`crypto_sign_verify_detached`, libsodium 1.0.18 built
without ED25519_COMPAT): S must be canonical (S < L); R and A must not be one of the small-order
encodings (the sign bit ignored); A must be a canonical encoding (y < p); the check is cofactorless
([S]B = R + [h]A, compared as the canonical encoding of the left side against R's bytes, so a
non-canonical R never verifies). Every build of every node (device, relay, HQ) must give the same
answer for every case below, or a change could be accepted by some peers and refused by others
(security-notes §11 case 2, "Taming the many EdDSAs"). FieldSyncCryptoTests.Ed25519EdgeCaseTests
checks the Swift build against the committed file.

The cases are constructed here from the curve arithmetic (RFC 8032 §5.1), pure Python, with fixed
seeds; `fps1_verify` below is the rule written out, and each case's expected answer is checked
against it before the file is written. Run: python3 Protocols/vectors/make_ed25519_vectors.py
"""
import hashlib
import json
from pathlib import Path

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def inv(x):
    return pow(x, P - 2, P)


def add(p1, p2):
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * inv(1 + t) % P, (y1 * y2 + x1 * x2) * inv(1 - t) % P)


def mul(k, pt):
    out, q = (0, 1), pt
    while k:
        if k & 1:
            out = add(out, q)
        q = add(q, q)
        k >>= 1
    return out


def neg(pt):
    return ((-pt[0]) % P, pt[1])


def recover_x(y, sign):
    x2 = (y * y - 1) * inv(D * y * y + 1) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def encode(pt):
    x, y = pt
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def decode(s):
    """Decodes like libsodium: y is taken modulo p (a non-canonical y >= p decodes too)."""
    v = int.from_bytes(s, "little")
    y, sign = (v & ((1 << 255) - 1)) % P, v >> 255
    x = recover_x(y, sign)
    return None if x is None else (x, y)


B = (recover_x(4 * inv(5) % P, 0), 4 * inv(5) % P)

# libsodium 1.0.18 ge25519_has_small_order: these encodings, compared with the sign bit cleared.
SMALL_ORDER = [bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)]


def small_order(s):
    return any(s[:31] == b[:31] and (s[31] & 0x7F) == b[31] for b in SMALL_ORDER)


def canonical(s):
    return (int.from_bytes(s, "little") & ((1 << 255) - 1)) < P


def h_int(r, a, m):
    return int.from_bytes(hashlib.sha512(r + a + m).digest(), "little") % L


def fps1_verify(a_bytes, m, sig):
    r_bytes, s = sig[:32], int.from_bytes(sig[32:], "little")
    if s >= L or small_order(r_bytes) or not canonical(a_bytes) or small_order(a_bytes):
        return False
    a = decode(a_bytes)
    if a is None:
        return False
    return encode(add(mul(s, B), neg(mul(h_int(r_bytes, a_bytes, m), a)))) == r_bytes


def keypair(seed):
    hh = hashlib.sha512(seed).digest()
    a = int.from_bytes(hh[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, hh[32:], encode(mul(a, B))


def sign(a, prefix, a_bytes, m):
    r = int.from_bytes(hashlib.sha512(prefix + m).digest(), "little") % L
    r_bytes = encode(mul(r, B))
    return r_bytes + ((r + h_int(r_bytes, a_bytes, m) * a) % L).to_bytes(32, "little")


def main():
    seed = bytes(range(0x40, 0x60))
    a, prefix, pk = keypair(seed)
    msg = b"fieldsync/v1 ed25519 edge case"
    good = sign(a, prefix, pk, msg)
    s_good = int.from_bytes(good[32:], "little")
    identity = encode((0, 1))
    cases = []

    def case(name, why, pk_bytes, m, sig, accept):
        assert fps1_verify(pk_bytes, m, sig) == accept, name
        cases.append(dict(name=name, why=why, publicKey=pk_bytes.hex(), message=m.hex(), signature=sig.hex(), accept=accept))

    case("valid", "RFC 8032 signature by the seed 40..5f key", pk, msg, good, True)
    case("wrong message", "baseline: one byte of the message changed", pk, msg[:-1] + b"X", good, False)
    case("S + L", "non-canonical S: the same S modulo L; a verifier that reduces S accepts it",
         pk, msg, good[:32] + (s_good + L).to_bytes(32, "little"), False)
    case("S with the top bits set", "S >= 2^253", pk, msg, good[:32] + (s_good | (7 << 253)).to_bytes(32, "little"), False)
    case("small-order A and R (identity), S = 0", "[0]B = R + [h]A holds for every message; a lax verifier accepts",
         identity, msg, identity + bytes(32), False)
    # Small-order R with an honest key: S = h * a makes [S]B = R + [h]A with R = identity.
    h_id = h_int(identity, pk, msg)
    case("small-order R (identity), honest A", "the equation holds; only the small-order check on R refuses it",
         pk, msg, identity + (h_id * a % L).to_bytes(32, "little"), False)
    # Small-order A of order 8: find R among the torsion points with R = -[h]A (S = 0).
    t8 = decode(SMALL_ORDER[3])
    torsion = [mul(i, t8) for i in range(8)]
    a8 = encode(t8)
    for i in range(64):
        m = msg + bytes([i])
        for r in torsion:
            if encode(add(r, mul(h_int(encode(r), a8, m), t8))) == identity and encode(r) != identity:
                case("order-8 A, torsion R, S = 0", "small-order public key; the cofactorless equation holds",
                     a8, m, encode(r) + bytes(32), False)
                break
        else:
            continue
        break
    non_canonical_identity = (P + 1).to_bytes(32, "little")
    case("non-canonical A (identity as y = p + 1)", "A not canonical (and small order), R = identity, S = 0",
         non_canonical_identity, msg, identity + bytes(32), False)
    case("negative-zero A (identity with the sign bit)", "x = 0 with sign 1; small order, sign bit ignored",
         bytes(identity[:31]) + bytes([identity[31] | 0x80]), msg, identity + bytes(32), False)
    h_nc = h_int(non_canonical_identity, pk, msg)
    case("non-canonical R (identity as y = p + 1), honest A",
         "[S]B - [h]A is the identity, whose canonical encoding differs from R's bytes",
         pk, msg, non_canonical_identity + (h_nc * a % L).to_bytes(32, "little"), False)
    # Mixed-order key A' = A + T8 (not small order): the signer knows a. Cofactorless verification
    # accepts only when 8 divides h; a cofactored verifier accepts both.
    mixed = encode(add(mul(a, B), t8))
    found = {}
    for i in range(256):
        m = msg + b" mixed " + bytes([i])
        sig = sign(a, prefix, mixed, m)
        hm = h_int(sig[:32], mixed, m)
        found.setdefault(hm % 8 == 0, (m, sig))
        if len(found) == 2:
            break
    case("mixed-order A, 8 divides h", "torsion component vanishes: accepted (libsodium does not refuse mixed-order keys)",
         mixed, found[True][0], found[True][1], True)
    case("mixed-order A, 8 does not divide h", "cofactorless check refuses; a cofactored verifier would accept",
         mixed, found[False][0], found[False][1], False)

    out = {
        "description": "FPS-1 Ed25519 accept/reject set (Protocols/identity.md §1, security-notes §11 case 2). "
                       "Built by make_ed25519_vectors.py; every FieldSync build must give `accept` for every case.",
        "rule": "libsodium 1.0.18 crypto_sign_verify_detached: S < L; R and A not small-order (7 encodings, sign bit "
                "ignored); A canonical (y < p); cofactorless [S]B = R + [h]A, R compared byte for byte",
        "cases": cases,
    }
    path = Path(__file__).parent / "ed25519-edge.json"
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"{path.name}: {len(cases)} cases")


if __name__ == "__main__":
    main()
