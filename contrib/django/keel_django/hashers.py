"""A Django password hasher for keel's SHA-512-crypt hashes: the sync stores each user's keel hash
as ``keel_sha512_crypt$<$6$ hash>``, and a login form checks passwords against it. No plaintext
ever leaves keel."""

import secrets

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.translation import gettext_noop as _

from . import sha512crypt


class KeelSHA512CryptHasher(BasePasswordHasher):
    algorithm = "keel_sha512_crypt"

    def salt(self):
        return "".join(secrets.choice(sha512crypt.ITOA64) for _ in range(16))

    def encode(self, password, salt):
        return f"{self.algorithm}${sha512crypt.crypt(password, salt)}"

    def _crypt_part(self, encoded):
        algorithm, _, crypted = encoded.partition("$")
        if algorithm != self.algorithm:
            raise ValueError("not a keel_sha512_crypt password")
        return crypted

    def verify(self, password, encoded):
        try:
            return sha512crypt.verify(password, self._crypt_part(encoded))
        except ValueError:
            return False

    def decode(self, encoded):
        rounds, salt, digest = sha512crypt.parse(self._crypt_part(encoded))
        return {"algorithm": self.algorithm, "hash": digest, "salt": salt, "rounds": rounds}

    def safe_summary(self, encoded):
        d = self.decode(encoded)
        return {
            _("algorithm"): d["algorithm"],
            _("rounds"): d["rounds"] or sha512crypt.DEFAULT_ROUNDS,
            _("salt"): mask_hash(d["salt"], show=2),
            _("hash"): mask_hash(d["hash"]),
        }

    def must_update(self, encoded):
        return False

    def harden_runtime(self, password, encoded):
        pass
