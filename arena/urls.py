from django.contrib import admin
from django.urls import include, path

from arena import views

urlpatterns = [
    path("", views.battle_page, name="battle"),
    path("side-by-side/", views.side_by_side_page, name="side_by_side"),
    path("healthz", views.healthz, name="healthz"),
    path("leaderboard/", include("ratings.urls")),
    path("admin/", admin.site.urls),
]
