import logging
import os
import threading

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from arena.beat import beat_start  # noqa: E402
from arena.gcpolicy import gc_settle  # noqa: E402
from arena.routing import websocket_urlpatterns  # noqa: E402
from inference.engines import engine_preload  # noqa: E402

if settings.ARENA_TASKS == "thread":
    engine_preload()
beat_start()  # the embedded default's CELERY_BEAT_SCHEDULE (no-op under Celery)


def _warm_up() -> None:
    """Load what the first vote would otherwise wait for (py3langid's model,
    for the vote's language category), beside the server's start-up."""
    from ratings.categories import language_warm

    try:
        language_warm()
    except Exception:  # a slower first vote, not a server that will not start
        logging.getLogger(__name__).exception("warm-up failed")
    gc_settle()  # the model just loaded too


threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app)
        if settings.ARENA_SERVE_STATIC
        else django_asgi_app,
        # Origin checked against ALLOWED_HOSTS: a foreign page cannot drive a
        # visitor's battles with the visitor's cookie.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
gc_settle()
