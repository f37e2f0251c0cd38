from django.contrib import admin

from inference.models import Contender


@admin.register(Contender)
class ContenderAdmin(admin.ModelAdmin):
    list_display = ("name", "engine", "model", "enabled", "weight", "created_at")
    list_filter = ("engine", "enabled")
    list_editable = ("enabled", "weight")
    search_fields = ("name", "model")
