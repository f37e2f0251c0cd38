import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from ratings.models import FlaggedVoter, Snapshot
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
