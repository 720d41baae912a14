"""The shared argument checks (``mirrorattn.checks``): what passes, what is converted, the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from mirrorattn.checks import check_choice, check_finite, check_fraction, check_int


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    ((3, "seeds"), {}, 3),
    ((np.int64(0), "first_seed", 0), {}, 0),
    ((None, "max_train"), {"optional": True}, None),
    ((2, "T", 2), {}, 2),
])
def test_check_int_passes(args: tuple, kwargs: dict, expected: int | None) -> None:
    got = check_int(*args, **kwargs)
    assert got == expected and (got is None or type(got) is int)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((0, "seeds"), {}, "seeds must be a positive integer (>= 1), got 0"),
    ((True, "grid_points"), {}, "grid_points must be a positive integer (>= 1), got True"),
    ((2.0, "n"), {}, "n must be a positive integer (>= 1), got 2.0"),
    ((-1, "first_seed", 0), {}, "first_seed must be an integer >= 0, got -1"),
    ((1, "T", 2), {}, "T must be an integer >= 2, got 1"),
    ((0, "max_test"), {"optional": True}, "max_test must be a positive integer (>= 1) or None, got 0"),
    ((None, "workers"), {}, "workers must be a positive integer (>= 1), got None"),
])
def test_check_int_refuses(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_int(*args, **kwargs)
    assert str(info.value) == message


def test_check_finite() -> None:
    assert check_finite(np.float32(0.5), "eta", low=0.0, strict=True) == 0.5
    assert check_finite(0, "weight_threshold", low=0.0) == 0.0
    for value, kwargs, message in [
        (0.0, {"low": 0.0, "strict": True}, "eta must be a finite number > 0, got 0.0"),
        (float("inf"), {"low": 0.0}, "eta must be a finite number >= 0, got inf"),
        (float("nan"), {}, "eta must be a finite number, got nan"),
        (True, {}, "eta must be a finite number, got True"),
        ("1", {}, "eta must be a finite number, got '1'"),
    ]:
        with pytest.raises(ValueError) as info:
            check_finite(value, "eta", **kwargs)
        assert str(info.value) == message


def test_check_fraction() -> None:
    assert check_fraction(0.2, "test_fraction") == 0.2
    assert check_fraction(0, "val_fraction", allow_zero=True) == 0.0
    for value, allow_zero, message in [
        (0.0, False, "test_fraction must be in (0, 1), got 0.0"),
        (1.0, True, "test_fraction must be in [0, 1), got 1.0"),
        (-0.1, True, "test_fraction must be in [0, 1), got -0.1"),
        (float("nan"), False, "test_fraction must be in (0, 1), got nan"),
        (False, True, "test_fraction must be in [0, 1), got False"),
    ]:
        with pytest.raises(ValueError) as info:
            check_fraction(value, "test_fraction", allow_zero=allow_zero)
        assert str(info.value) == message


def test_check_choice() -> None:
    assert check_choice("word", "tokenizer", ("wordpiece", "word")) == "word"
    with pytest.raises(ValueError) as info:
        check_choice("chars", "tokenizer", ("wordpiece", "word"))
    assert str(info.value) == "tokenizer must be one of wordpiece, word, got 'chars'"
    with pytest.raises(ValueError, match="must be one of a, b, got None"):
        check_choice(None, "x", iter(["a", "b"]))
