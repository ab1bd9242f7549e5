"""UNSAFE, test-only textbook SM2 over any short-Weierstrass curve, with the random k given.

It exists to reproduce the standards' examples exactly (they fix k, and some use an example curve
OpenSSL cannot load). It uses Python integers (not constant time) and must never sign anything
real. It is written from GB/T 32918.2 §6.1 and GB/T 32918.4 §6.1 / §7.1 and uses trustspace's SM3
and KDF, so reproducing the examples also checks those.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustspace.crypto import sm3, sm3_kdf

Point = tuple[int, int] | None  # None is the point at infinity


@dataclass(frozen=True)
class Curve:
    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @classmethod
    def from_block(cls, block: dict[str, str]) -> Curve:
        return cls(*(int(block[k], 16) for k in ("p", "a", "b", "gx", "gy", "n")))

    def add(self, P: Point, Q: Point) -> Point:
        if P is None:
            return Q
        if Q is None:
            return P
        (x1, y1), (x2, y2) = P, Q
        if x1 == x2 and (y1 + y2) % self.p == 0:
            return None
        if P == Q:
            lam = (3 * x1 * x1 + self.a) * pow(2 * y1, -1, self.p)
        else:
            lam = (y2 - y1) * pow(x2 - x1, -1, self.p)
        x3 = (lam * lam - x1 - x2) % self.p
        return x3, (lam * (x1 - x3) - y1) % self.p

    def mul(self, k: int, P: Point) -> Point:
        result: Point = None
        while k:
            if k & 1:
                result = self.add(result, P)
            P = self.add(P, P)
            k >>= 1
        return result

    @property
    def g(self) -> Point:
        return self.gx, self.gy

    def b32(self, v: int) -> bytes:
        return v.to_bytes(32, "big")

    def z(self, user_id: bytes, P: tuple[int, int]) -> bytes:
        entl = (len(user_id) * 8).to_bytes(2, "big")
        return sm3(entl + user_id + b"".join(self.b32(v) for v in
                                             (self.a, self.b, self.gx, self.gy, *P)))

    def public(self, d: int) -> tuple[int, int]:
        P = self.mul(d, self.g)
        assert P is not None
        return P

    def sign(self, d: int, message: bytes, user_id: bytes, k: int) -> tuple[int, int]:
        e = int.from_bytes(sm3(self.z(user_id, self.public(d)) + message), "big")
        kG = self.mul(k, self.g)
        assert kG is not None
        r = (e + kG[0]) % self.n
        s = pow(1 + d, -1, self.n) * (k - r * d) % self.n
        return r, s

    def verify(self, P: tuple[int, int], message: bytes, user_id: bytes, r: int, s: int) -> bool:
        if not (1 <= r < self.n and 1 <= s < self.n):
            return False
        e = int.from_bytes(sm3(self.z(user_id, P) + message), "big")
        t = (r + s) % self.n
        if t == 0:
            return False
        X = self.add(self.mul(s, self.g), self.mul(t, P))
        return X is not None and (e + X[0]) % self.n == r

    def encrypt(self, P: tuple[int, int], message: bytes, k: int) -> bytes:
        C1 = self.mul(k, self.g)
        S = self.mul(k, P)
        assert C1 is not None and S is not None
        x2y2 = self.b32(S[0]) + self.b32(S[1])
        t = sm3_kdf(x2y2, len(message))
        c2 = bytes(m ^ x for m, x in zip(message, t, strict=True))
        c3 = sm3(self.b32(S[0]) + message + self.b32(S[1]))
        return b"\x04" + self.b32(C1[0]) + self.b32(C1[1]) + c3 + c2

    def decrypt(self, d: int, ciphertext: bytes) -> bytes:
        x1, y1 = int.from_bytes(ciphertext[1:33], "big"), int.from_bytes(ciphertext[33:65], "big")
        c3, c2 = ciphertext[65:97], ciphertext[97:]
        S = self.mul(d, (x1, y1))
        assert S is not None
        t = sm3_kdf(self.b32(S[0]) + self.b32(S[1]), len(c2))
        message = bytes(c ^ x for c, x in zip(c2, t, strict=True))
        if sm3(self.b32(S[0]) + message + self.b32(S[1])) != c3:
            raise ValueError("C3 mismatch")
        return message
