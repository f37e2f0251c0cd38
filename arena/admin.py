import math
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
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


class FlaggedVoterFilter(admin.SimpleListFilter):
    """Votes of visitors the outlier test flagged (ratings.FlaggedVoter)."""

    title = "voter flagged as an outlier"
    parameter_name = "flagged_voter"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Vote]) -> QuerySet[Vote]:
        # debt (issue 15): arena imports no ratings; this filter and the
        # export actions below belong in ratings' own admin of the votes.
        from ratings.models import FlaggedVoter

        # A visitor is flagged by its key; a whole network as "ip:<ip_key>".
        keys = list(FlaggedVoter.objects.values_list("session_key", flat=True))
        ips = [k.removeprefix("ip:") for k in keys if k.startswith("ip:")]
        flagged = Q(session_key__in=keys) | Q(ip_key__in=ips)
        if self.value() == "yes":
            return queryset.filter(flagged)
        if self.value() == "no":
            return queryset.exclude(flagged)
        return queryset


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
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
        FlaggedVoterFilter,
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

    actions = ["export_trl", "export_arena"]

    def _export(self, queryset: QuerySet[Vote], fmt: str) -> HttpResponse:
        # debt (issue 15), as FlaggedVoterFilter above.
        from ratings.api import jsonl_lines
        from ratings.exports import ExportFilter
        from ratings.preference import Options

        ids = tuple(queryset.values_list("id", flat=True))
        lines = jsonl_lines(
            fmt,
            ExportFilter(vote_ids=ids, include_named=True, include_flagged=True),
            Options(include_ties=True, include_both_bad=True),
        )
        response = HttpResponse("".join(lines), content_type="application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="arena-{fmt}.jsonl"'
        return response

    @admin.action(description="Download selected votes as TRL preference pairs (JSONL)")
    def export_trl(self, request: HttpRequest, queryset: QuerySet[Vote]) -> HttpResponse:
        return self._export(queryset, "trl")

    @admin.action(description="Download selected votes in LMArena's format (JSONL)")
    def export_arena(self, request: HttpRequest, queryset: QuerySet[Vote]) -> HttpResponse:
        return self._export(queryset, "arena")


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
