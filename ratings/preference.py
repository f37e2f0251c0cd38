"""Preference records from battles: pure functions, no Django.

A battle is handed over as a `BattleData`: the two full conversations up to
the voted turn. Builders return the records one format makes of it (none,
one or two), shaped as TRL reads them:
  trl       {"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}  (conversational)
  trl-text  {"prompt": str, "chosen": str, "rejected": str}           (standard)
  kto       {"prompt": [msgs], "completion": [msgs], "label": bool}   (unpaired)
  arena     LMArena's columns (question_id, model_a, model_b, winner, conversation_a, ...),
            plus passages_a/passages_b: what RAG contenders retrieved
RAG context reaches the trl and kto formats through the system prompt option:
a RAG answer's system message holds the passages it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
FORMATS = ("trl", "trl-text", "kto", "arena")
ARENA_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}


@dataclass(frozen=True)
class BattleData:
    question_id: str
    model_a: str
    model_b: str
    choice: str  # a | b | tie | both_bad
    system_a: str
    system_b: str
    users: list[str]  # the user's messages, one per turn up to the voted one
    answers_a: list[str]
    answers_b: list[str]
    anonymous: bool
    tstamp: float
    language: str
    categories: list[str] = field(default_factory=list)
    judge: str = ""  # hashed visitor id
    # RAG answers: the passages each side was given, [{turn, document, source,
    # section, text, score}]; empty for other contenders.
    passages_a: list[dict[str, Any]] = field(default_factory=list)
    passages_b: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    system_prompt: bool = False  # add the chosen side's system prompt to the prompt
    include_ties: bool = False
    include_both_bad: bool = False
    user_text: bool = True  # False: users' free text is blanked
    render: Callable[[list[Message], bool], str] | None = None  # chat template for trl-text


def _user(text: str, opts: Options) -> Message:
    return {"role": "user", "content": text if opts.user_text else ""}


def conversation(battle: BattleData, side: str, opts: Options) -> list[Message]:
    answers = battle.answers_a if side == "a" else battle.answers_b
    out: list[Message] = []
    for user, answer in zip(battle.users, answers, strict=True):
        out.append(_user(user, opts))
        out.append({"role": "assistant", "content": answer})
    return out


def _split(battle: BattleData, side: str, opts: Options) -> tuple[list[Message], list[Message]]:
    """(prompt, completion): the first user message, then the rest of that side's talk."""
    full = conversation(battle, side, opts)
    system = battle.system_a if side == "a" else battle.system_b
    head: list[Message] = (
        [{"role": "system", "content": system}] if opts.system_prompt and system else []
    )
    return head + full[:1], full[1:]


def trl_records(battle: BattleData, opts: Options) -> list[dict[str, Any]]:
    if battle.choice not in ("a", "b"):
        return []
    loser = "b" if battle.choice == "a" else "a"
    prompt, chosen = _split(battle, battle.choice, opts)
    _, rejected = _split(battle, loser, opts)
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]


def _default_render(messages: list[Message], generation_prompt: bool) -> str:
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return text + ("Assistant:" if generation_prompt else "")


def trl_text_records(battle: BattleData, opts: Options) -> list[dict[str, Any]]:
    render = opts.render or _default_render
    out = []
    for record in trl_records(battle, opts):
        prompt = render(record["prompt"], True)
        chosen = render(record["prompt"] + record["chosen"], False)
        rejected = render(record["prompt"] + record["rejected"], False)
        # Completions are what follows the rendered prompt, as TRL's standard format has it.
        out.append(
            {
                "prompt": prompt,
                "chosen": chosen[len(prompt) :] if chosen.startswith(prompt) else chosen,
                "rejected": rejected[len(prompt) :] if rejected.startswith(prompt) else rejected,
            }
        )
    return out


def kto_records(battle: BattleData, opts: Options) -> list[dict[str, Any]]:
    labels = {"a": (True, False), "b": (False, True), "both_bad": (False, False)}
    if opts.include_ties:
        labels["tie"] = (True, True)
    if battle.choice not in labels:
        return []
    out = []
    for side, label in zip(("a", "b"), labels[battle.choice], strict=True):
        prompt, completion = _split(battle, side, opts)
        out.append({"prompt": prompt, "completion": completion, "label": label})
    return out


def arena_records(battle: BattleData, opts: Options) -> list[dict[str, Any]]:
    if battle.choice == "tie" and not opts.include_ties:
        return []
    if battle.choice == "both_bad" and not opts.include_both_bad:
        return []
    return [
        {
            "question_id": battle.question_id,
            "model_a": battle.model_a,
            "model_b": battle.model_b,
            "winner": ARENA_WINNER[battle.choice],
            "judge": battle.judge,
            "conversation_a": conversation(battle, "a", opts),
            "conversation_b": conversation(battle, "b", opts),
            "turn": len(battle.users),
            "anony": battle.anonymous,
            "language": battle.language,
            "tstamp": battle.tstamp,
            "categories": list(battle.categories),
            "passages_a": list(battle.passages_a),
            "passages_b": list(battle.passages_b),
        }
    ]


BUILDERS: dict[str, Callable[[BattleData, Options], list[dict[str, Any]]]] = {
    "trl": trl_records,
    "trl-text": trl_text_records,
    "kto": kto_records,
    "arena": arena_records,
}
