"""``manage.py keel_sync``: keeps Django's users in step with keel's (contrib/django/README.md)."""

import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from keel_django.client import Client, KeelError
from keel_django.sync import Sync


class Command(BaseCommand):
    help = (
        "Follow keel's watch stream and keep Django's users in step: created, updated, "
        "deactivated; passwords as keel's $6$ hashes. Resumes after the last change applied."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", help="keel's URL (default: settings.KEEL_URL or $KEEL_URL)")
        parser.add_argument(
            "--token-file",
            help="a file holding a facility manager's token (default: settings.KEEL_TOKEN_FILE or "
            "$KEEL_TOKEN_FILE); $KEEL_TOKEN is read when no file is given",
        )
        parser.add_argument("--once", action="store_true", help="stop once caught up (cron, tests)")

    def handle(self, *args, url=None, token_file=None, once=False, **options):
        url = url or getattr(settings, "KEEL_URL", None) or os.environ.get("KEEL_URL")
        token_file = token_file or getattr(settings, "KEEL_TOKEN_FILE", None) or os.environ.get("KEEL_TOKEN_FILE")
        if not url:
            raise CommandError("no keel URL: --url, settings.KEEL_URL or $KEEL_URL")
        if token_file:
            with open(token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        else:
            token = os.environ.get("KEEL_TOKEN", "")
        if not token:
            raise CommandError("no token: --token-file, settings.KEEL_TOKEN_FILE, $KEEL_TOKEN_FILE or $KEEL_TOKEN")
        ca_file = getattr(settings, "KEEL_CA_FILE", None) or os.environ.get("KEEL_CA_FILE")
        sync = Sync(Client(url, token, ca_file=ca_file))
        delay = 1
        while True:
            try:
                sync.run(once=once)
                if once:
                    return
                delay = 1
            except KeelError as e:
                if once:
                    raise CommandError(str(e)) from e
                self.stderr.write(f"keel_sync: {e}; retrying in {delay} s")
                time.sleep(delay)
                delay = min(delay * 2, 60)
