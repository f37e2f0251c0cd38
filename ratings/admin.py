import json

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from arena.models import Vote
from ratings.api import jsonl_lines
from ratings.exports import ExportFilter
from ratings.models import FlaggedVoter, Snapshot
from ratings.preference import Options
from ratings.services import IP_FLAG_PREFIX


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("created_at", "category", "style_control", "dedup", "ci", "votes", "seconds")
    list_filter = ("style_control", "dedup", "ci", "category")
    readonly_fields = ("rows", "extra")


@admin.register(FlaggedVoter)
class FlaggedVoterAdmin(admin.ModelAdmin):
    """Visitors whose votes disagree with the crowd far beyond chance, with
    the evidence and a way to their votes."""

    list_display = (
        "session_key",
        "votes",
        "p_value",
        "evidence_summary",
        "votes_link",
        "flagged_at",
    )
    list_filter = ("flagged_at",)
    search_fields = ("session_key",)
    ordering = ("p_value",)
    readonly_fields = (
        "session_key",
        "votes",
        "p_value",
        "evidence_pretty",
        "votes_link",
        "flagged_at",
    )
    exclude = ("evidence",)

    def has_add_permission(self, request: object) -> bool:
        return False  # flags come from the outlier test (ratings.tasks.voters_flag)

    @admin.display(description="evidence")
    def evidence_summary(self, obj: FlaggedVoter) -> str:
        ev = obj.evidence or {}
        choices = ev.get("choices") or {}
        shown = ", ".join(f"{k} {v}" for k, v in sorted(choices.items()))
        return f"{ev.get('test', '?')} test" + (f"; choices: {shown}" if shown else "")

    @admin.display(description="evidence")
    def evidence_pretty(self, obj: FlaggedVoter) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.evidence, indent=2, sort_keys=True))

    @admin.display(description="votes")
    def votes_link(self, obj: FlaggedVoter) -> str:
        # A network flagged as a whole: its votes by network key.
        key = obj.session_key
        query = (
            {"ip_key": key.removeprefix(IP_FLAG_PREFIX)}
            if key.startswith(IP_FLAG_PREFIX)
            else {"session_key": key}
        )
        url = reverse("admin:arena_vote_changelist") + "?" + urlencode(query)
        return format_html('<a href="{}">their {} votes</a>', url, obj.votes)


# --- ratings' part of arena's page of votes ------------------------------------------


class FlaggedVoterFilter(admin.SimpleListFilter):
    """Votes of visitors the outlier test flagged (FlaggedVoter)."""

    title = "voter flagged as an outlier"
    parameter_name = "flagged_voter"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Vote]) -> QuerySet[Vote]:
        # A visitor is flagged by its key; a whole network as "ip:<ip_key>".
        keys = list(FlaggedVoter.objects.values_list("session_key", flat=True))
        ips = [k.removeprefix(IP_FLAG_PREFIX) for k in keys if k.startswith(IP_FLAG_PREFIX)]
        flagged = Q(session_key__in=keys) | Q(ip_key__in=ips)
        if self.value() == "yes":
            return queryset.filter(flagged)
        if self.value() == "no":
            return queryset.exclude(flagged)
        return queryset


def _export(queryset: QuerySet[Vote], fmt: str) -> HttpResponse:
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
def export_trl(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Vote]
) -> HttpResponse:
    return _export(queryset, "trl")


@admin.action(description="Download selected votes in LMArena's format (JSONL)")
def export_arena(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Vote]
) -> HttpResponse:
    return _export(queryset, "arena")


# Arena registers the votes' page (its model) and imports no ratings; ratings,
# later in INSTALLED_APPS, adds its filter and exports to that page, so the
# page and its URLs stay one.
_votes_page = type(admin.site.get_model_admin(Vote))
_votes_page.list_filter = (*_votes_page.list_filter, FlaggedVoterFilter)
_votes_page.actions = (*(_votes_page.actions or ()), export_trl, export_arena)
