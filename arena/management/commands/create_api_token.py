from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena.tokens import api_token_create


class Command(BaseCommand):
    help = "Make an API token for a staff user (shown once; stored hashed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args: Any, **opts: Any) -> None:
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user {opts['username']!r}")
        if not user.is_staff:
            raise CommandError(f"{user} is not staff: only staff may export")
        self.stdout.write(api_token_create(user=user, name=opts["name"]))
