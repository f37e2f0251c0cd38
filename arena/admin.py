from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from arena.models import Answer, ApiToken, Battle, Turn, Vote


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
        from ratings.models import FlaggedVoter

        flagged = FlaggedVoter.objects.values("session_key")
        if self.value() == "yes":
            return queryset.filter(session_key__in=flagged)
        if self.value() == "no":
            return queryset.exclude(session_key__in=flagged)
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
    readonly_fields = ("session_key", "leak_evidence")

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
