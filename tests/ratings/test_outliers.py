"""The outlier test groups votes by visitor and by network, on the test database."""

from __future__ import annotations

import pytest
from django.utils import timezone

from arena.models import Vote
from arena.visitors import network_key, visitor_key, visitor_new
from inference.models import Contender, Engine
from ratings.models import FlaggedVoter
from ratings.services import IP_FLAG_PREFIX, voters_flag_outliers

pytestmark = pytest.mark.django_db
SHARED_IP = "203.0.113.77"


def _votes(*, visitor: str, ip: str, choices: list[str]) -> None:
    strong, weak = Contender.objects.get(name="strong"), Contender.objects.get(name="weak")
    Vote.objects.bulk_create(
        Vote(
            contender_a=strong,
            contender_b=weak,
            choice=choice,
            anonymous=True,
            session_key=visitor_key(visitor),
            ip_key=network_key(ip),
            created_at=timezone.now(),
        )
        for choice in choices
    )


@pytest.fixture
def crowd() -> None:
    """40 visitors, each on an address of their own: the strong side wins 19 times in 20."""
    Contender.objects.create(name="strong", engine=Engine.NONE)
    Contender.objects.create(name="weak", engine=Engine.NONE)
    for i in range(40):
        choices = ["b" if (i * 10 + j) % 20 == 0 else "a" for j in range(10)]
        _votes(visitor=visitor_new(), ip=f"198.51.100.{i + 1}", choices=choices)


def test_visitors_who_each_vote_little_from_one_address_are_flagged_by_that_address(
    crowd: None,
) -> None:
    for _ in range(10):  # three votes each: too few for the test, alone
        _votes(visitor=visitor_new(), ip=SHARED_IP, choices=["b", "b", "b"])
    assert voters_flag_outliers(threshold=1e-4, min_votes=10) == 1
    flagged = FlaggedVoter.objects.get()
    assert flagged.session_key == IP_FLAG_PREFIX + network_key(SHARED_IP)
    assert len(flagged.session_key) <= 64 and SHARED_IP not in flagged.session_key
    assert flagged.votes == 30
    assert flagged.evidence["group"] == "ip"
    assert flagged.evidence["choices"] == {"b": 30}


def test_a_lone_outlier_is_flagged_as_a_visitor_and_as_its_address(crowd: None) -> None:
    carl = visitor_new()
    _votes(visitor=carl, ip=SHARED_IP, choices=["b"] * 30)
    assert voters_flag_outliers(threshold=1e-4, min_votes=10) == 2
    by_group = {f.evidence["group"]: f.session_key for f in FlaggedVoter.objects.all()}
    assert by_group == {
        "visitor": visitor_key(carl),
        "ip": IP_FLAG_PREFIX + network_key(SHARED_IP),
    }


def test_the_crowd_is_not_flagged(crowd: None) -> None:
    assert voters_flag_outliers(threshold=1e-4, min_votes=10) == 0
    assert not FlaggedVoter.objects.exists()
