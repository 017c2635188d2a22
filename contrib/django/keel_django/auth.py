"""Single sign-on behind keel's nginx snippets (contrib/nginx/sso): nginx asks keel who sits at
the client's machine and passes the login in ``X-SSO-User``, after removing any such header the
client sent. Only ever deploy this behind that nginx configuration: the header is trusted."""

from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import RemoteUserMiddleware


class KeelSSOMiddleware(RemoteUserMiddleware):
    """Logs in the ``X-SSO-User`` user. A request without the header keeps its session, so a
    login form (off the contest machines) still works beside SSO."""

    header = "HTTP_X_SSO_USER"
    force_logout_if_no_header = False


class KeelSSOBackend(RemoteUserBackend):
    """Recognises only users the sync created: an unknown login is nobody (as prologin's apps)."""

    create_unknown_user = False
