"""SHA-512-crypt (the ``$6$`` hashes of glibc's crypt(3)), in pure Python.

keel stores every password as such a hash. Python's ``crypt`` module is gone since 3.13, so the
hasher carries the algorithm itself: Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"
specification, checked against its test vectors and against hashes keel made (tests).
"""

import hashlib
import hmac
import re

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_ROUNDS = 5000
# keel refuses hashes outside 1,000-50,000 rounds (a costly hash is a denial of service on every
# login); the same bound here, so a hash keel would refuse is never computed.
MIN_ROUNDS, MAX_ROUNDS = 1000, 50000

_HASH = re.compile(r"^\$6\$(?:rounds=([1-9][0-9]{0,8})\$)?([./0-9A-Za-z]{1,16})\$([./0-9A-Za-z]{86})$")

# The order the 64 digest bytes are taken in, three at a time, for the base64 text.
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
]


class BadHash(ValueError):
    """Not a SHA-512-crypt hash keel could have made."""


def parse(encoded):
    """``(rounds or None, salt, digest text)`` of a ``$6$`` hash, or BadHash."""
    m = _HASH.match(encoded)
    if not m:
        raise BadHash("not a $6$ hash")
    rounds = int(m.group(1)) if m.group(1) else None
    if rounds is not None and not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise BadHash(f"rounds={rounds} is outside {MIN_ROUNDS}-{MAX_ROUNDS}")
    return rounds, m.group(2), m.group(3)


def _repeat(block, length):
    return (block * (length // len(block) + 1))[:length]


def _b64(data):
    out = []
    for a, b, c in _ORDER:
        w = (data[a] << 16) | (data[b] << 8) | data[c]
        for _ in range(4):
            out.append(ITOA64[w & 0x3F])
            w >>= 6
    w = data[63]
    for _ in range(2):
        out.append(ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def crypt(password, salt, rounds=None):
    """The ``$6$`` hash of ``password`` (str or bytes) with ``salt`` (at most 16 characters are
    used) and ``rounds`` (None: the default 5000, not written in the hash)."""
    key = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    salt_b = salt.encode("ascii")[:16]
    n = DEFAULT_ROUNDS if rounds is None else rounds
    b = hashlib.sha512(key + salt_b + key).digest()
    a = hashlib.sha512(key + salt_b)
    a.update(_repeat(b, len(key)))
    length = len(key)
    while length:
        a.update(b if length & 1 else key)
        length >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(key * len(key)).digest(), len(key))
    s = _repeat(hashlib.sha512(salt_b * (16 + c[0])).digest(), len(salt_b))
    for i in range(n):
        h = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    head = "$6$" + (f"rounds={n}$" if rounds is not None else "") + salt_b.decode("ascii")
    return f"{head}${_b64(c)}"


def verify(password, encoded):
    """Whether ``password`` matches the ``$6$`` hash ``encoded`` (compared in constant time)."""
    rounds, salt, _ = parse(encoded)
    return hmac.compare_digest(crypt(password, salt, rounds), encoded)
