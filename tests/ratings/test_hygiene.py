"""Vote hygiene: which answers give a contender away, and which votes count."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from arena import services
from arena.models import Answer, Battle, Vote
from arena.visitors import network_key, visitor_key, visitor_new
from inference.models import Contender, Engine
from inference.selectors import pair_vote_records, pair_vote_records_forget
from ratings.annotation import battle_vote_annotate
from ratings.categories import conversation_categories, imported_categories
from ratings.exports import ExportFilter
from ratings.hygiene import identity_leak, identity_pattern, outlier_p_values
from ratings.models import FlaggedVoter
from ratings.selectors import VoteFilter, identities_battling
from ratings.services import leaderboard_compute
from ratings.vote_import import votes_import

REAL = Path(__file__).resolve().parents[2] / "data" / "arena_hp140k_votes.csv.gz"
# Names of LMArena's 140k release that are also words, or stems of them.
IMPORTED = (
    "command-a-03-2025",
    "amazon-nova-experimental-chat-05-14",
    "amazon.nova-pro-v1:0",
    "minimax-m1",
    "o3-mini",
    "o3-2025-04-16",
    "gemma-3-27b-it",
)
ORDINARY = (
    "Run the command `ls -la` to list the files, then the command again with -R.",
    "The Amazon is the largest river by discharge; Amazon also sells books.",
    "Chess engines search with minimax and alpha-beta pruning.",
    "O3 is ozone: the o3 layer absorbs ultraviolet light.",
    "In botany a gemma is a small bud that splits off.",
    "I am happy to help with your command-line question.",
    "The Kindle was built by Amazon.",
)


def test_categories_of_a_conversation() -> None:
    assert conversation_categories(["Bonjour, pouvez-vous m'aider avec ma recette ?"]) == {
        "language:fr"
    }
    tags = conversation_categories(["Fix this:\n```python\ndef f(): pass\n```", "thanks"])
    assert {"coding", "multi_turn", "language:en"} <= tags
    assert "longer_query" in conversation_categories(["word " * 500])


def test_hard_prompts_need_six_of_seven_criteria() -> None:
    five = {
        f"criteria_v0.1.{c}": "True"
        for c in ("complexity", "creativity", "domain_knowledge", "problem_solving", "real_world")
    }
    assert "hard_prompts" not in imported_categories(five)
    six = {**five, "criteria_v0.1.specificity": "True"}
    assert "hard_prompts" in imported_categories(six)


def test_an_answer_naming_a_model_or_vendor_is_caught() -> None:
    pattern = identity_pattern(["smollm2-concise", "alpha"])
    assert identity_leak(["I am ChatGPT, made by OpenAI."], pattern).lower() == "chatgpt"
    assert identity_leak(["I was trained by Anthropic."], pattern).lower() == "anthropic"
    assert identity_leak(["As smollm2, I think"], pattern) == "smollm2"
    assert identity_leak(["I'm smollm2-concise."], pattern) == "smollm2-concise"
    assert identity_leak(["GPT-4o would say so"], pattern) == "GPT-4o"
    assert identity_leak(["I am a large language model trained by Google."], pattern) == "Google"
    assert identity_leak(["Hi! I'm Gemma, an open model."], pattern) == "Gemma"
    assert identity_leak(["I am alpha."], pattern) == "alpha"
    assert identity_leak(["The alphabet has 26 letters."], pattern) == ""
    assert identity_leak(["Greek letters: alpha, beta."], pattern) == ""


def test_ordinary_words_are_no_leak_when_those_models_are_only_imported() -> None:
    pattern = identity_pattern(["smollm2-concise", "alpha"])
    for text in ORDINARY:
        assert identity_leak([text], pattern) == "", text


def test_a_battling_contender_is_caught_by_its_name_its_model_and_its_stems() -> None:
    pattern = identity_pattern(["gemma-3-27b-it", "local", "HuggingFaceTB/SmolLM2-135M-Instruct"])
    assert identity_leak(["As gemma-3-27b-it I cannot"], pattern) == "gemma-3-27b-it"
    assert identity_leak(["Gemma 3 here."], pattern) == "Gemma 3"
    assert identity_leak(["SmolLM2-135M-Instruct speaking"], pattern) == "SmolLM2-135M-Instruct"
    # Its letters-only stem and its letters-only name only where the answer names itself.
    assert identity_leak(["In botany a gemma is a small bud."], pattern) == ""
    assert identity_leak(["A local shop."], pattern) == ""
    assert identity_leak(["I am Local."], pattern) == "Local"
    # A stem too short to be a name: "o3" of "o3-mini" is ozone.
    assert identity_leak(["O3 is ozone."], identity_pattern(["o3-mini"])) == ""
    assert identity_leak(["Ask o3-mini."], identity_pattern(["o3-mini"])) == "o3-mini"


def test_a_contrarian_voter_gets_a_tiny_p_value_and_a_normal_one_does_not() -> None:
    rng = np.random.default_rng(0)
    votes = 4000
    pair = rng.integers(0, 5, votes)
    # Everyone: side A wins pair k with probability 0.9 (a strong side A).
    outcome = (rng.random(votes) > 0.9).astype(np.int64)
    voter = rng.integers(1, 40, votes)
    # Voter 0 always picks the side everyone else rejects.
    contrarian = 30
    pair = np.concatenate([pair, rng.integers(0, 5, contrarian)])
    outcome = np.concatenate([outcome, np.ones(contrarian, dtype=np.int64)])
    voter = np.concatenate([voter, np.zeros(contrarian, dtype=np.int64)])
    p = outlier_p_values(voter, pair, outcome, 40)
    assert p[0] < 1e-6
    assert np.nanmedian(p[1:]) > 0.05


# --- on the database -------------------------------------------------------


def _answer(answer_id: int, text: str) -> None:
    """What the generation worker does for one answer: claim it, save the text."""
    assert services.answer_start(answer_id=answer_id) is not None
    services.answer_complete(
        answer_id=answer_id,
        outcome=services.AnswerOutcome(status="done", text=text, tokens=len(text.split())),
    )


def _voted(
    visitor: str, text_a: str, text_b: str, *, named: bool = False, ip: str = "", choice: str = "a"
) -> Vote:
    """Alpha (side a) against beta, one turn, voted through the services and
    annotated as ratings' task does once the vote commits."""
    battle = services.battle_create(
        session_key=visitor, mode="named", contender_a="alpha", contender_b="beta", ip=ip
    )
    if not named:
        Battle.objects.filter(pk=battle.pk).update(mode="anonymous")
    a, b = services.turn_create(battle_id=battle.pk, session_key=visitor, text="Tell me something")
    _answer(a.pk, text_a)
    _answer(b.pk, text_b)
    vote = services.vote_record(battle_id=battle.pk, session_key=visitor, choice=choice, ip=ip)
    assert battle_vote_annotate(vote_id=vote.pk)
    return Vote.objects.get(battle=battle)


@pytest.fixture
def imported_only(db: None) -> list[Contender]:
    """Contenders known only from imported votes, as import_votes makes them."""
    return [Contender.objects.create(name=n, engine=Engine.NONE, enabled=False) for n in IMPORTED]


@pytest.mark.django_db
def test_votes_on_ordinary_words_are_not_flagged_when_the_models_are_only_imported(
    contenders: list[Contender], imported_only: list[Contender], alice: str
) -> None:
    assert not set(IMPORTED) & set(identities_battling())
    for text in ORDINARY:
        vote = _voted(alice, text, "Fine.")
        assert (vote.identity_leak, vote.leak_evidence) == (False, ""), text


@pytest.mark.django_db
def test_a_vote_on_an_answer_naming_a_battling_contender_is_flagged(
    contenders: list[Contender], imported_only: list[Contender], alice: str
) -> None:
    Contender.objects.create(name="smollm2-concise", engine=Engine.LOCAL)
    vote = _voted(alice, "I'm smollm2-concise, happy to help.", "Sure.")
    assert (vote.identity_leak, vote.leak_evidence) == (True, "smollm2-concise")
    # An imported name that starts battling is one to hide from then on.
    Contender.objects.filter(name="gemma-3-27b-it").update(engine=Engine.LOCAL, enabled=True)
    vote = _voted(alice, "Sure.", "As gemma-3-27b-it, I would say no.")
    assert (vote.identity_leak, vote.leak_evidence) == (True, "gemma-3-27b-it")
    # The vote's own contenders count even once disabled: "beta" names itself.
    Contender.objects.filter(name="beta").update(enabled=False)
    Contender.objects.create(name="gamma", engine=Engine.LOCAL)
    assert "beta" not in identities_battling()
    assert "beta" in identities_battling(also=(Contender.objects.get(name="beta").pk,))


@pytest.mark.django_db
def test_one_rule_decides_the_votes_the_board_the_exports_and_sampling_count(
    contenders: list[Contender], alice: str, mallory: str, settings: object
) -> None:
    settings.ARENA_DAILY_VOTE_CAP = 1000  # type: ignore[attr-defined]
    counted = _voted(alice, "Paris.", "Lyon.")
    named = _voted(alice, "Yes.", "No.", named=True)
    leak = _voted(alice, "I am ChatGPT.", "Hello.")
    assert leak.identity_leak
    over_cap = _voted(alice, "Four.", "4")
    Vote.objects.filter(pk=over_cap.pk).update(over_cap=True)
    outlier = _voted(mallory, "Up.", "Down.", choice="b")
    FlaggedVoter.objects.create(session_key=visitor_key(mallory), votes=1, p_value=1e-9)
    bob = visitor_new()
    network = _voted(bob, "Red.", "Blue.", ip="203.0.113.9")
    FlaggedVoter.objects.create(
        session_key="ip:" + network_key("203.0.113.9"), votes=1, p_value=1e-9
    )
    failed = _voted(alice, "Left.", "Right.")
    Answer.objects.filter(turn__battle=failed.battle, side="b").update(status=Answer.Status.ERROR)

    board = set(VoteFilter().queryset().values_list("id", flat=True))
    exports = set(ExportFilter().queryset().values_list("id", flat=True))
    assert board == exports == {counted.pk}
    assert leaderboard_compute(save=False).votes == 1  # outlier voters are off the board too
    pair_vote_records_forget()
    assert sum(n for n, _ in pair_vote_records(max_age=0).values()) == 1
    # Each kind comes back by its own name; failed turns only when asked.
    assert Vote.objects.counting(include_named=True).filter(pk=named.pk).exists()
    assert Vote.objects.counting(include_leaks=True).filter(pk=leak.pk).exists()
    assert Vote.objects.counting(include_over_cap=True).filter(pk=over_cap.pk).exists()
    flagged = Vote.objects.counting(include_flagged_voters=True)
    assert {outlier.pk, network.pk} <= set(flagged.values_list("id", flat=True))
    assert Vote.objects.counting(include_failed_turns=True).filter(pk=failed.pk).exists()
    everything = VoteFilter(include_flagged=True, include_named=True).queryset()
    assert set(everything.values_list("id", flat=True)) == {
        counted.pk, named.pk, leak.pk, over_cap.pk, outlier.pk, network.pk
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.django_db
def test_after_importing_the_real_140k_votes_ordinary_words_are_still_no_leak(
    contenders: list[Contender], alice: str
) -> None:
    report = votes_import(path=REAL, source="arena_hp140k")
    assert report.added == 135624
    imported = Contender.objects.exclude(name__in=["alpha", "beta"])
    assert imported.count() == 53 and not imported.filter(enabled=True).exists()
    assert set(identities_battling()) == {"alpha", "beta"}
    for text in ORDINARY:
        vote = _voted(alice, text, "Fine.")
        assert (vote.identity_leak, vote.leak_evidence) == (False, ""), text
    assert _voted(alice, "I am ChatGPT.", "Fine.").leak_evidence == "ChatGPT"
    assert _voted(alice, "Fine.", "Hi, I'm Beta.").leak_evidence == "Beta"


@pytest.mark.django_db
def test_votes_an_older_rule_flagged_for_ordinary_words_count_again_after_a_recheck(
    contenders: list[Contender], imported_only: list[Contender], alice: str
) -> None:
    ordinary = _voted(alice, "Run the command again.", "Fine.")
    leak = _voted(alice, "I am ChatGPT.", "Fine.")
    # What the rule before this one did: "command" of command-a-03-2025.
    Vote.objects.filter(pk=ordinary.pk).update(identity_leak=True, leak_evidence="command")
    out = io.StringIO()
    call_command("leaks_recheck", stdout=out)
    assert "1 votes no longer flagged" in out.getvalue()
    assert Vote.objects.filter(identity_leak=True).get() == leak
    assert VoteFilter().queryset().filter(pk=ordinary.pk).exists()
