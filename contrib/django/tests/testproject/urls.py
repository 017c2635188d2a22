from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.contrib.auth import authenticate, login


@login_required
def whoami(request):
    return HttpResponse(request.user.get_username(), content_type="text/plain")


@csrf_exempt
def form_login(request):
    """A login form's POST (the template is not the point here)."""
    user = authenticate(request, username=request.POST.get("username"), password=request.POST.get("password"))
    if user is None:
        return HttpResponse("refused", status=403, content_type="text/plain")
    login(request, user)
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("whoami/", whoami), path("login/", form_login)]
