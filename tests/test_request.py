import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines import InvalidRequestError, StyleRequest
from pipelines.core.request import MAX_SEED, MAX_STEPS


def make(**overrides):
    return StyleRequest(content="c.png", style="s.png", **overrides)


def test_defaults_are_valid_and_parameters_exclude_images():
    request = make()
    assert request.strength == 0.7 and request.steps is None and request.seed is None
    params = request.parameters()
    assert "content" not in params and "style" not in params
    assert params["max_side"] == 1024 and params["preserve_color"] is False


@given(st.floats(min_value=0.0, max_value=1.0))
def test_any_strength_in_unit_interval_is_accepted(strength):
    assert make(strength=strength).strength == strength


@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9), st.just(math.nan)))
def test_strength_outside_unit_interval_or_nan_is_refused(strength):
    with pytest.raises(InvalidRequestError, match="strength"):
        make(strength=strength)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, "0.5", None, True, [0.5]])
def test_strength_of_wrong_type_is_refused(bad):
    with pytest.raises(InvalidRequestError, match="strength"):
        make(strength=bad)


@given(st.integers(min_value=1, max_value=MAX_STEPS))
def test_steps_in_range_accepted_also_as_integral_float(steps):
    assert make(steps=steps).steps == steps
    assert make(steps=float(steps)).steps == steps


@pytest.mark.parametrize("bad", [0, -3, MAX_STEPS + 1, 2.5, math.nan, math.inf, "20", False])
def test_bad_steps_are_refused(bad):
    with pytest.raises(InvalidRequestError, match="steps"):
        make(steps=bad)


@given(st.integers(min_value=0, max_value=MAX_SEED))
def test_seed_range(seed):
    assert make(seed=seed).seed == seed


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)))
def test_seed_out_of_range_is_refused(seed):
    with pytest.raises(InvalidRequestError, match="seed"):
        make(seed=seed)


@pytest.mark.parametrize("bad", [0, 63, 4097, 512.5, "512", None])
def test_bad_max_side_is_refused(bad):
    with pytest.raises(InvalidRequestError, match="max_side"):
        make(max_side=bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("preserve_color", "yes"), ("preserve_color", 1), ("options", [1]), ("method", 7)],
)
def test_wrong_types_are_refused_with_the_field_named(field, value):
    with pytest.raises(InvalidRequestError, match=field):
        make(**{field: value})


def test_numpy_numbers_are_accepted():
    np = pytest.importorskip("numpy")
    request = make(strength=np.float32(0.25), steps=np.int64(12), seed=np.uint32(7))
    assert request.strength == 0.25 and request.steps == 12 and request.seed == 7
    assert type(request.steps) is int and type(request.seed) is int
