"""Differential test: ``tandem.ot`` against the npm reference, quill-delta 5.1.0.

Seeded random cases for compose, transform (both sides), transform_position
(both sides) and invert go to ONE node process (``js/runner.mjs``) as a batch;
every result must equal quill-delta's exactly, compared as canonical JSON text
(so ``true`` and ``1`` stay different, as they do on the wire).

Mapping between the two APIs:

* ``compose(a, b)``                    == ``a.compose(b)``
* ``transform(op, against, side)``     == ``against.transform(op, side == "right")``
* ``transform_position(i, op, side)``  == ``op.transformPosition(i, side == "left")``
* ``invert(op, base)``                 == ``op.invert(base)``

Text uses BMP characters only, so quill's UTF-16 lengths equal our code-point
lengths. Known deviations: none (quill raises nothing and returns only valid
canonical deltas for these inputs).

Replay a failure with ``TANDEM_DIFF_SEED=<seed> pytest tests/differential``.
Needs ``npm install`` in ``tests/differential/js`` (``scripts/bootstrap.sh --test``
does it); without it the test skips, or fails when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tandem.ot import Delta, Side, compose, invert, transform, transform_position

JS_DIR = Path(__file__).resolve().parent / "js"
CASES_PER_KIND = int(os.environ.get("TANDEM_DIFF_CASES", "5000"))
SEED = int(os.environ.get("TANDEM_DIFF_SEED", "20240917"))

ALPHABET = "ab é\n中"  # BMP only: UTF-16 units == code points
NAMES = ("bold", "italic", "color", "size")
VALUES: tuple[object, ...] = (True, False, "red", "blue", 1, 2, 0, 1.5)

Json = Any


# -- random inputs -------------------------------------------------------------


def random_attributes(rng: random.Random, *, allow_null: bool) -> dict[str, object] | None:
    if rng.random() < 0.5:
        return None
    names = rng.sample(NAMES, rng.randint(1, 3))
    return {
        name: None if allow_null and rng.random() < 0.3 else rng.choice(VALUES) for name in names
    }


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))


def random_document(rng: random.Random) -> Delta:
    document = Delta()
    for _ in range(rng.randint(0, 6)):
        document.insert(random_text(rng), random_attributes(rng, allow_null=False))
    return document


def random_op(rng: random.Random, length: int) -> Delta:
    """A valid op on a document of ``length``; sometimes left unchopped."""
    op = Delta()
    position = 0
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        if position >= length or roll < 0.3:
            op.insert(random_text(rng), random_attributes(rng, allow_null=False))
            continue
        count = rng.randint(1, min(length - position, 5))
        if roll < 0.65:
            op.retain(count, random_attributes(rng, allow_null=True) if roll < 0.45 else None)
        else:
            op.delete(count)
        position += count
    return op.chop() if rng.random() < 0.8 else op


# -- cases: (payload for node, our answer) ---------------------------------------

Case = tuple[dict[str, Json], Json]


def compose_payload(a: Delta, b: Delta) -> Case:
    ours = compose(Delta.from_json(a.to_json()), Delta.from_json(b.to_json())).to_json()
    return {"fn": "compose", "a": a.to_json(), "b": b.to_json()}, ours


def transform_payload(op: Delta, against: Delta, side: Side) -> Case:
    payload = {"fn": "transform", "a": against.to_json(), "b": op.to_json()}
    payload["priority"] = side == "right"
    return payload, transform(op, against, side).to_json()


def position_payload(index: int, op: Delta, side: Side) -> Case:
    payload = {"fn": "transformPosition", "a": op.to_json(), "index": index}
    payload["priority"] = side == "left"
    return payload, transform_position(index, op, side)


def invert_payload(op: Delta, base: Delta) -> Case:
    return {"fn": "invert", "a": op.to_json(), "base": base.to_json()}, invert(op, base).to_json()


def compose_case(rng: random.Random) -> Case:
    n = rng.randint(0, 12)
    a = random_document(rng) if rng.random() < 0.2 else random_op(rng, n)
    after = a.length() if a.is_document() else a.target_length(n)
    # Now and then b does not fit a at all: both treat the shorter one as retaining the rest.
    b = random_op(rng, rng.randint(0, 12) if rng.random() < 0.1 else after)
    return compose_payload(a, b)


def transform_case(side: Side) -> Callable[[random.Random], Case]:
    def make(rng: random.Random) -> Case:
        n = rng.randint(0, 12)
        return transform_payload(random_op(rng, n), random_op(rng, n), side)

    return make


def random_keystroke(rng: random.Random, length: int) -> Delta:
    """A one-position edit (retain, then one insert or delete): transform's fast path."""
    position = rng.randint(0, length)
    if position < length and rng.random() < 0.4:
        return Delta().retain(position).delete(rng.randint(1, min(3, length - position)))
    text = random_text(rng)
    return Delta().retain(position).insert(text, random_attributes(rng, allow_null=False))


def keystroke_case(side: Side) -> Callable[[random.Random], Case]:
    def make(rng: random.Random) -> Case:
        n = rng.randint(0, 8)
        return transform_payload(random_keystroke(rng, n), random_keystroke(rng, n), side)

    return make


def position_case(side: Side) -> Callable[[random.Random], Case]:
    def make(rng: random.Random) -> Case:
        n = rng.randint(0, 12)
        return position_payload(rng.randint(0, n), random_op(rng, n), side)

    return make


def invert_case(rng: random.Random) -> Case:
    base = random_document(rng)
    return invert_payload(random_op(rng, base.length()), base)


KINDS: dict[str, Callable[[random.Random], Case]] = {
    "compose": compose_case,
    "transform-left": transform_case("left"),
    "transform-right": transform_case("right"),
    "transform-keystroke-left": keystroke_case("left"),
    "transform-keystroke-right": keystroke_case("right"),
    "position-left": position_case("left"),
    "position-right": position_case("right"),
    "invert": invert_case,
}


def fixed_cases() -> dict[str, list[Case]]:
    """Hand-picked cases the random ones might miss."""
    bold_true = Delta().insert("a", {"bold": True})
    # algorithms.md §3: b1 = delete 1, b2 = insert "c", a = retain 1, insert "b" on "x".
    b1, b2 = Delta().delete(1), Delta().insert("c")
    a = Delta().retain(1).insert("b")
    return {
        # true and 1 are different attribute values: the runs must not merge.
        "compose": [compose_payload(bold_true, Delta().retain(1).insert("b", {"bold": 1}))],
        "transform-left": [
            transform_payload(a, b1, "left"),
            transform_payload(transform(a, b1, "left"), b2, "left"),
            transform_payload(a, compose(b1, b2), "left"),
        ],
        "invert": [invert_payload(Delta().retain(1, {"bold": 1}), bold_true)],
    }


def canonical(value: Json) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# -- running -------------------------------------------------------------------


def _quill_available() -> str | None:
    """Why the reference cannot run, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules" / "quill-delta").is_dir():
        return "quill-delta is not installed: run scripts/bootstrap.sh --test"
    return None


@pytest.fixture(scope="module")
def batch() -> dict[str, tuple[list[Case], list[Json]]]:
    problem = _quill_available()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"differential test cannot run under CI: {problem}")
        pytest.skip(problem)
    cases: dict[str, list[Case]] = {}
    fixed = fixed_cases()
    for kind, make in KINDS.items():
        rng = random.Random(f"{SEED}-{kind}")
        cases[kind] = fixed.get(kind, []) + [make(rng) for _ in range(CASES_PER_KIND)]
    payload = [payload for kind in KINDS for payload, _ in cases[kind]]
    completed = subprocess.run(
        ["node", str(JS_DIR / "runner.mjs")],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"runner.mjs failed ({completed.returncode}): {completed.stderr.decode()}")
    results = json.loads(completed.stdout)
    assert len(results) == len(payload)
    out: dict[str, tuple[list[Case], list[Json]]] = {}
    start = 0
    for kind in KINDS:
        out[kind] = (cases[kind], results[start : start + len(cases[kind])])
        start += len(cases[kind])
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_quill_delta(kind: str, batch: dict[str, tuple[list[Case], list[Json]]]) -> None:
    cases, theirs = batch[kind]
    assert len(cases) >= CASES_PER_KIND
    mismatches = [
        (payload, ours, reference)
        for (payload, ours), reference in zip(cases, theirs, strict=True)
        if canonical(ours) != canonical(reference)
    ]
    if mismatches:
        shown = "\n".join(
            f"  input {canonical(p)}\n    ours  {canonical(o)}\n    quill {canonical(r)}"
            for p, o, r in mismatches[:5]
        )
        pytest.fail(
            f"{len(mismatches)} of {len(cases)} {kind} cases differ from quill-delta "
            f"(TANDEM_DIFF_SEED={SEED}):\n{shown}"
        )
