"""What the sync keeps: which Django users are keel's, and where in keel's change log it is."""

from django.conf import settings
from django.db import models


class KeelUser(models.Model):
    """A Django user that mirrors a keel user. Users without one (a local superuser) are never
    touched by the sync."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="keel")
    login = models.CharField(max_length=31, unique=True)
    uid = models.PositiveIntegerField()
    group = models.CharField(max_length=8)
    hfs = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self):
        return self.login


class SyncState(models.Model):
    """One row: the last keel change applied (``seq``) of database ``db_id``; the sync resumes
    after it, and starts from a snapshot when keel's database is another (a restore)."""

    seq = models.BigIntegerField(default=0)
    db_id = models.CharField(max_length=64, blank=True, default="")

    @classmethod
    def load(cls):
        return cls.objects.get_or_create(pk=1)[0]
