"""Self-checks for lesson exercises and demos.

Each check prints a tick when the value is right and raises ``CheckFailed`` with a hint when it
is not. A lesson's own demonstrations use them bare, so a broken demo stops the notebook. An
exercise's check cell wraps them in ``with checks.exercise("Exercise 1 — ..."):``, which turns a
failure into a printed "not solved yet" with the reason, so the rest of the lesson still runs
while the learner's answer is a stub (``...`` for a value, ``raise NotImplementedError`` in a
function) or wrong::

    answer = ...  # TODO: your answer

    with checks.exercise("Exercise 1 — the answer"):
        checks.equal(answer, 42, "the answer")
"""

import math
from contextlib import contextmanager

SOLVED = "solved"
NOT_SOLVED = "not solved yet"

#: Exercise name -> SOLVED or NOT_SOLVED, for every ``exercise`` block run in this kernel.
RESULTS: dict[str, str] = {}


class CheckFailed(AssertionError):
    """The learner's answer does not pass an exercise's check."""


class Unanswered(CheckFailed):
    """The exercise's stub (``...``) is still in place."""


def _answered(value, name: str) -> None:
    if value is Ellipsis:
        raise Unanswered(f"\u2718 {name}: no answer yet (replace the `...` in the exercise cell)")


@contextmanager
def exercise(title: str):
    """Run an exercise's checks: print "✔ <title>: solved" when they all pass, else "✘ <title>:
    not solved yet" with the first failing check's message, and carry on (no exception), so a
    stub or a wrong answer never stops the lesson. Only Exceptions are caught: an interrupt
    still stops the kernel."""
    try:
        yield
    except NotImplementedError:
        reason = "the exercise cell still raises NotImplementedError: write your code there"
    except CheckFailed as e:  # Unanswered included: its message says the stub is still there
        reason = str(e).removeprefix("\u2718 ")
    except Exception as e:  # noqa: BLE001 -- any error in the learner's code is a "not yet", said briefly
        if "ellipsis" in str(e).lower():  # e.g. s.shape or d[s] where s is still the stub's `...`
            reason = "no answer yet (replace the `...` in the exercise cell)"
        else:
            reason = f"your code raised {type(e).__name__}: {e}"
    else:
        RESULTS[title] = SOLVED
        print(f"\u2714 {title}: {SOLVED}")
        return
    RESULTS[title] = NOT_SOLVED
    print(f"\u2718 {title}: {NOT_SOLVED}\n  {reason}")


def _ok(name: str) -> None:
    print(f"\u2714 {name}: correct")


def _fail(name: str, problem: str, hint: str) -> None:
    raise CheckFailed(f"\u2718 {name}: {problem}" + (f"\n  hint: {hint}" if hint else ""))


def _as_float_tensor(value):
    import torch

    return torch.as_tensor(value).detach().cpu().to(torch.float64)


def true(condition: bool, name: str, hint: str = "") -> None:
    """Pass when ``condition`` holds."""
    _answered(condition, name)
    if not condition:
        _fail(name, "not yet right", hint)
    _ok(name)


def equal(actual, expected, name: str, hint: str = "") -> None:
    """Pass when ``actual == expected`` (plain Python values: ints, strings, tuples...)."""
    _answered(actual, name)
    if actual != expected:
        _fail(name, f"got {actual!r}, expected {expected!r}", hint)
    _ok(name)


def shape(tensor, expected: tuple, name: str, hint: str = "") -> None:
    """Pass when ``tensor.shape`` is ``expected``."""
    _answered(tensor, name)
    got = tuple(getattr(tensor, "shape", ()))
    if got != tuple(expected):
        _fail(name, f"shape is {got}, expected {tuple(expected)}", hint)
    _ok(name)


def close(actual, expected, name: str, atol: float = 1e-5, rtol: float = 1e-4, hint: str = "") -> None:
    """Pass when ``actual`` and ``expected`` (numbers, arrays or tensors, any device) have the
    same shape and agree within the tolerances."""
    import torch

    _answered(actual, name)
    a, e = _as_float_tensor(actual), _as_float_tensor(expected)
    if a.shape != e.shape:
        _fail(name, f"shape is {tuple(a.shape)}, expected {tuple(e.shape)}", hint)
    if not torch.allclose(a, e, atol=atol, rtol=rtol):
        worst = (a - e).abs().max().item()
        _fail(name, f"values differ from the expected ones (largest difference {worst:.3g})", hint)
    _ok(name)


def below(value, limit: float, name: str, hint: str = "") -> None:
    """Pass when the number ``value`` is finite and below ``limit`` (e.g. a final loss)."""
    _answered(value, name)
    v = float(value)
    if not math.isfinite(v) or v >= limit:
        _fail(name, f"{v:.4g} is not below {limit:.4g}", hint)
    _ok(name)


def above(value, limit: float, name: str, hint: str = "") -> None:
    """Pass when the number ``value`` is above ``limit`` (e.g. an accuracy)."""
    _answered(value, name)
    v = float(value)
    if not math.isfinite(v) or v <= limit:
        _fail(name, f"{v:.4g} is not above {limit:.4g}", hint)
    _ok(name)
