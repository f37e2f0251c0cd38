"""The admin shows the vote-hygiene evidence: identity leaks and outlier voters."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from arena.models import Vote
from inference.models import Contender, Engine
from ratings.models import FlaggedVoter
from ratings.services import voters_flag_outliers

pytestmark = pytest.mark.django_db
CARL = "carl0000session000000000000000000"  # a voter who always picks the weaker side


@pytest.fixture
def bob() -> Client:
    """Bob is staff."""
    user = User.objects.create_user("bob", password="pw", is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.fixture
def votes() -> None:
    strong = Contender.objects.create(name="strong", engine=Engine.NONE)
    weak = Contender.objects.create(name="weak", engine=Engine.NONE)

    def vote(session: str, choice: str, **flags: object) -> Vote:
        return Vote.objects.create(
            contender_a=strong,
            contender_b=weak,
            choice=choice,
            anonymous=True,
            session_key=session,
            created_at=timezone.now(),
            **flags,
        )

    for i in range(400):  # the crowd: the strong side wins 19 times in 20
        vote(f"crowd{i % 40:02d}", "b" if i % 20 == 0 else "a")
    for _ in range(30):
        vote(CARL, "b")
    vote("dave", "a", identity_leak=True, leak_evidence="As ChatGPT, made by OpenAI")


def test_identity_leaks_are_filtered_with_their_evidence(bob: Client, votes: None) -> None:
    page = bob.get("/admin/arena/vote/", {"identity_leak__exact": "1"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "As ChatGPT, made by OpenAI" in html
    assert "1 vote" in html  # only Dave's
    assert "Identity leak" in bob.get("/admin/arena/vote/").content.decode()  # the filter


def test_an_outlier_voter_links_to_their_votes(bob: Client, votes: None) -> None:
    assert voters_flag_outliers(threshold=1e-4, min_votes=10) == 1
    flagged = FlaggedVoter.objects.get()
    assert flagged.session_key == CARL
    assert flagged.evidence["choices"] == {"b": 30}
    listing = bob.get("/admin/ratings/flaggedvoter/").content.decode()
    assert "fisher test; choices: b 30" in listing
    link = f"/admin/arena/vote/?session_key={CARL}"
    assert f'href="{link}"' in listing
    votes_page = bob.get(link)
    assert votes_page.status_code == 200
    assert "30 votes" in votes_page.content.decode()
    detail = bob.get(f"/admin/ratings/flaggedvoter/{flagged.pk}/change/").content.decode()
    assert "&quot;threshold&quot;: 0.0001" in detail and link in detail
    only_flagged = bob.get("/admin/arena/vote/", {"flagged_voter": "yes"})
    assert "30 votes" in only_flagged.content.decode()


def test_a_visitor_who_is_not_staff_sees_no_evidence(votes: None) -> None:
    page = Client().get("/admin/ratings/flaggedvoter/")
    assert page.status_code == 302
    assert page["Location"].startswith("/admin/login/")
