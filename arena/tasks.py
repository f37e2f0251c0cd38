"""arena's scheduled task: forgetting visitors and expired sessions, hourly."""

from __future__ import annotations

import logging

from celery import shared_task
from django.core.management import call_command

from arena.services import visitors_expire as visitors_expire_service

log = logging.getLogger(__name__)


@shared_task(name="arena.tasks.visitors_expire", ignore_result=True)
def visitors_expire() -> None:
    """Forget visitors unseen for the cookie's age, and clear Django's expired
    sessions (only admins have any: page views make none)."""
    forgotten = visitors_expire_service()
    call_command("clearsessions")
    log.info("visitors forgotten: %d; expired sessions cleared", forgotten)
