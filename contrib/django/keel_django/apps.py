from django.apps import AppConfig


class KeelConfig(AppConfig):
    name = "keel_django"
    label = "keel_django"
    verbose_name = "keel"
    default_auto_field = "django.db.models.BigAutoField"
