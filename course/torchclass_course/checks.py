"""Self-checks for lesson exercises: each prints a tick when the learner's answer is right and
raises ``CheckFailed`` with a hint when it is not, so a wrong answer stops the notebook at the
exercise rather than failing confusingly three cells later."""

import math


class CheckFailed(AssertionError):
    """The learner's answer does not pass an exercise's check."""


def _ok(name: str) -> None:
    print(f"\u2714 {name}: correct")


def _fail(name: str, problem: str, hint: str) -> None:
    raise CheckFailed(f"\u2718 {name}: {problem}" + (f"\n  hint: {hint}" if hint else ""))


def _as_float_tensor(value):
    import torch

    return torch.as_tensor(value).detach().cpu().to(torch.float64)


def true(condition: bool, name: str, hint: str = "") -> None:
    """Pass when ``condition`` holds."""
    if not condition:
        _fail(name, "not yet right", hint)
    _ok(name)


def equal(actual, expected, name: str, hint: str = "") -> None:
    """Pass when ``actual == expected`` (plain Python values: ints, strings, tuples...)."""
    if actual != expected:
        _fail(name, f"got {actual!r}, expected {expected!r}", hint)
    _ok(name)


def shape(tensor, expected: tuple, name: str, hint: str = "") -> None:
    """Pass when ``tensor.shape`` is ``expected``."""
    got = tuple(getattr(tensor, "shape", ()))
    if got != tuple(expected):
        _fail(name, f"shape is {got}, expected {tuple(expected)}", hint)
    _ok(name)


def close(actual, expected, name: str, atol: float = 1e-5, rtol: float = 1e-4, hint: str = "") -> None:
    """Pass when ``actual`` and ``expected`` (numbers, arrays or tensors, any device) have the
    same shape and agree within the tolerances."""
    import torch

    a, e = _as_float_tensor(actual), _as_float_tensor(expected)
    if a.shape != e.shape:
        _fail(name, f"shape is {tuple(a.shape)}, expected {tuple(e.shape)}", hint)
    if not torch.allclose(a, e, atol=atol, rtol=rtol):
        worst = (a - e).abs().max().item()
        _fail(name, f"values differ from the expected ones (largest difference {worst:.3g})", hint)
    _ok(name)


def below(value, limit: float, name: str, hint: str = "") -> None:
    """Pass when the number ``value`` is finite and below ``limit`` (e.g. a final loss)."""
    v = float(value)
    if not math.isfinite(v) or v >= limit:
        _fail(name, f"{v:.4g} is not below {limit:.4g}", hint)
    _ok(name)


def above(value, limit: float, name: str, hint: str = "") -> None:
    """Pass when the number ``value`` is above ``limit`` (e.g. an accuracy)."""
    v = float(value)
    if not math.isfinite(v) or v <= limit:
        _fail(name, f"{v:.4g} is not above {limit:.4g}", hint)
    _ok(name)
