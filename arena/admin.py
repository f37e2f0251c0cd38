import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from arena.models import Answer, ApiToken, Battle, Turn, Vote
from arena.ratelimit import client_ip, login_check, login_failed


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    fields = ("index", "user_text", "created_at")
    readonly_fields = fields
    can_delete = False


@admin.register(Battle)
class BattleAdmin(admin.ModelAdmin):
    list_display = ("id", "mode", "status", "contender_a", "contender_b", "created_at")
    list_filter = ("mode", "status")
    readonly_fields = ("session_key", "created_at")
    inlines = [TurnInline]


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ("id", "turn", "side", "attempt", "contender", "status", "tokens", "ttft_ms")
    list_filter = ("status", "superseded", "contender")
    readonly_fields = ("messages", "params", "created_at", "started_at", "finished_at")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    """The votes. Ratings adds what is its own to this page (the outlier
    filter, the preference exports: ratings.admin), as arena imports no ratings."""

    list_display = (
        "id",
        "choice",
        "contender_a",
        "contender_b",
        "anonymous",
        "source",
        "identity_leak",
        "leak_evidence",
        "over_cap",
        "voter",
        "created_at",
    )
    list_filter = (
        "choice",
        "anonymous",
        "source",
        "identity_leak",
        "over_cap",
    )
    search_fields = ("session_key", "leak_evidence", "external_id")
    readonly_fields = ("session_key", "ip_key", "leak_evidence")

    @admin.display(description="voter")
    def voter(self, obj: Vote) -> str:
        """The voter's other votes (the changelist filtered by session)."""
        if not obj.session_key:
            return "-"
        url = (
            reverse("admin:arena_vote_changelist")
            + "?"
            + urlencode({"session_key": obj.session_key})
        )
        return format_html('<a href="{}">{}…</a>', url, obj.session_key[:8])


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "created_at", "last_used_at")
    readonly_fields = ("user", "name", "token_hash", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tokens are made with `manage.py create_api_token`, which shows the
        # clear text once; the admin lists and revokes them.
        return False


# --- sign-in ---------------------------------------------------------------------------


class ThrottledLoginForm(AdminAuthenticationForm):
    """The admin's sign-in, refused after too many failures from one address
    or for one username (arena.ratelimit: counted in Redis, so every web
    process shares the count), whatever the password."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed sign-ins from this address or for this username. "
        "Try again in %(minutes)d minutes.",
    }

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        ip = _request_ip(self.request)
        verdict = login_check(ip=ip, username=username)
        if not verdict.allowed:
            raise ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"minutes": max(1, math.ceil(verdict.retry_after / 60))},
            )
        try:
            return super().clean()
        except ValidationError:
            login_failed(ip=ip, username=username)
            raise


def _request_ip(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return client_ip(
        str(request.META.get("REMOTE_ADDR") or ""),
        str(request.META.get("HTTP_X_FORWARDED_FOR") or ""),
        settings.ARENA_TRUSTED_PROXIES,
    )


admin.site.login_form = ThrottledLoginForm
