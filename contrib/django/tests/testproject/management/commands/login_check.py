"""``manage.py login_check LOGIN PASSWORD``: what a browser would see, as JSON — the SSO header
alone, the login form with the right and a wrong password (keel's end-to-end test reads it)."""

import json

from django.core.management.base import BaseCommand
from django.test import Client


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("login")
        parser.add_argument("password")

    def handle(self, login, password, **options):
        sso = Client().get("/whoami/", headers={"X-SSO-User": login})
        anonymous = Client().get("/whoami/")
        form = Client()
        ok = form.post("/login/", {"username": login, "password": password})
        after = form.get("/whoami/")
        wrong = Client().post("/login/", {"username": login, "password": password + "x"})
        self.stdout.write(
            json.dumps(
                {
                    "sso": [sso.status_code, sso.content.decode()],
                    "anonymous": anonymous.status_code,
                    "form": [ok.status_code, after.status_code, after.content.decode()],
                    "wrong_password": wrong.status_code,
                }
            )
        )
