from django.urls import path

from ratings import api, views

urlpatterns = [
    path("", views.leaderboard_page, name="leaderboard"),
    path("leaderboard.json", views.leaderboard_json, name="leaderboard_json"),
    path("leaderboard.csv", views.leaderboard_csv, name="leaderboard_csv"),
    path("contender/<path:name>/", views.contender_page, name="contender"),
    path("export/preferences.jsonl", api.export_preferences, name="export_preferences"),
]
