import pytest

from pipelines import InvalidRequestError, MethodUnavailableError, get_method, resolve_device
from pipelines.core import device as device_module


@pytest.fixture
def hardware(monkeypatch):
    """Pretend to have the given accelerators."""

    def set_(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(device_module, "cuda_available", lambda: cuda)
        monkeypatch.setattr(device_module, "mps_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(hardware, cuda, mps, expected):
    hardware(cuda, mps)
    assert resolve_device("auto") == expected
    assert resolve_device("") == expected


def test_explicit_choices_are_honoured_and_checked(hardware):
    hardware(False, False)
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(MethodUnavailableError, match="CUDA was requested"):
        resolve_device("cuda")
    with pytest.raises(MethodUnavailableError, match="MPS"):
        resolve_device("mps")
    hardware(False, True)
    assert resolve_device("mps") == "mps"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "cuda0"])
def test_unknown_device_names_are_refused(bad):
    with pytest.raises(InvalidRequestError, match="Unknown device"):
        resolve_device(bad)


def test_real_machine_resolves_to_something_usable():
    assert resolve_device("auto") in ("cuda", "mps", "cpu")


def test_fast_engine_runs_on_cpu_whatever_is_asked_but_checks_the_name(hardware):
    hardware(True, False)
    fast = get_method("fast")
    assert fast.run_device("cuda") == "cpu" and fast.run_device("auto") == "cpu"
    with pytest.raises(InvalidRequestError):
        fast.run_device("quantum")
