"""keel for Django: users synced from keel's watch stream, SSO by nginx's ``X-SSO-User`` header,
and a password hasher for keel's ``$6$`` hashes (docs: contrib/django/README.md)."""

__version__ = "0.1.0"
