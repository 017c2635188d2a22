"""A contest web application as keel's docs set one up (contrib/django/README.md)."""
import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "keel_django",
    "testproject",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "keel_django.auth.KeelSSOMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "keel_django.auth.KeelSSOBackend",
    "django.contrib.auth.backends.ModelBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "keel_django.hashers.KeelSHA512CryptHasher",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("KEEL_DJANGO_DB", os.path.join(os.path.dirname(__file__), "test.sqlite3")),
    }
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True, "DIRS": []}]
LOGIN_URL = "/login/"
KEEL_URL = os.environ.get("KEEL_URL")
KEEL_TOKEN_FILE = os.environ.get("KEEL_TOKEN_FILE")
