from django.contrib import admin

from arena.models import Answer, Battle, Turn, Vote


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
    list_display = (
        "id",
        "choice",
        "contender_a",
        "contender_b",
        "anonymous",
        "source",
        "created_at",
    )
    list_filter = ("choice", "anonymous", "source")
    readonly_fields = ("session_key",)
