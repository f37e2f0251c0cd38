from django.contrib import admin

from ratings.models import FlaggedVoter, Snapshot


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ("created_at", "category", "style_control", "ci", "votes", "seconds")
    list_filter = ("style_control", "ci", "category")
    readonly_fields = ("rows", "extra")


@admin.register(FlaggedVoter)
class FlaggedVoterAdmin(admin.ModelAdmin):
    list_display = ("session_key", "votes", "p_value", "flagged_at")
    readonly_fields = ("session_key", "votes", "p_value", "evidence", "flagged_at")
