import threading
import time

import pytest
from conftest import gradient_image
from PIL import Image

import pipelines
from pipelines import MethodInputs, PipelineCache, PipelineKey, StyleMethod, register_method
from pipelines.core import method as method_module

KEY = PipelineKey("m", "w", "cpu", "float32")


def test_concurrent_first_requests_load_once():
    cache = PipelineCache()
    calls = []
    start = threading.Barrier(8)

    def loader():
        calls.append(1)
        time.sleep(0.2)  # a slow load: everyone else arrives while it runs
        return object()

    results = []

    def request():
        start.wait()
        results.append(cache.get(KEY, loader)[0])

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)
    stats = cache.stats()
    assert stats.loads == 1 and stats.hits == 7 and stats.keys == [KEY]


def test_second_request_reports_zero_load_time():
    cache = PipelineCache()
    first, seconds = cache.get(KEY, lambda: time.sleep(0.05) or "model")
    again, seconds_again = cache.get(KEY, lambda: pytest.fail("loaded twice"))
    assert first == again == "model" and seconds > 0 and seconds_again == 0.0


def test_failed_load_is_not_cached_and_is_retried():
    cache = PipelineCache()

    def broken():
        raise OSError("weights missing")

    with pytest.raises(OSError):
        cache.get(KEY, broken)
    assert not cache.is_loaded(KEY) and cache.stats().failed_loads == 1
    assert cache.get(KEY, lambda: "fixed")[0] == "fixed"


def test_different_keys_load_in_parallel():
    cache = PipelineCache()
    other = KEY._replace(device="cuda")
    inside = threading.Barrier(2, timeout=5)  # both loaders must be running at once to pass

    def loader():
        inside.wait()
        return object()

    threads = [threading.Thread(target=cache.get, args=(key, loader)) for key in (KEY, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.stats().loads == 2


def test_evict_and_clear():
    cache = PipelineCache()
    cache.get(KEY, object)
    assert cache.evict(KEY) and not cache.evict(KEY)
    cache.get(KEY, object)
    cache.clear()
    assert not cache.is_loaded(KEY)


class CountingMethod(StyleMethod):
    """A stand-in method that records how often it is loaded (the real cache path, a trivial model)."""

    name = "counting-test"
    label = "Counting (test)"
    description = "inverts the content"
    strength_mapping = "unused"
    loads = 0

    def load(self, weights, device, dtype, context):
        type(self).loads += 1
        time.sleep(0.1)
        return {"weights": weights}

    def generate(self, model, inputs: MethodInputs, context) -> Image.Image:
        return Image.eval(inputs.content, lambda v: 255 - v)


@pytest.fixture
def counting(monkeypatch):
    """CountingMethod registered for one test only, its load counter at zero."""
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    monkeypatch.setattr(CountingMethod, "loads", 0)
    return register_method(CountingMethod())


def test_requests_through_the_core_load_the_method_once_even_concurrently(counting):
    context = pipelines.StudioContext(device="cpu")
    cache = context.pipelines
    content, style = gradient_image(), gradient_image(seed=5)
    results = []

    def request():
        results.append(
            pipelines.run(pipelines.StyleRequest(content, style, method="counting-test", seed=1), context=context)
        )

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert CountingMethod.loads == 1
    later = pipelines.run(pipelines.StyleRequest(content, style, method="counting-test", seed=1), context=context)
    assert CountingMethod.loads == 1 and later.metadata["timings"]["load_s"] == 0.0
    assert sum(r.metadata["timings"]["load_s"] > 0 for r in results) == 1
    assert cache.stats().hits == 4


def test_preload_fills_the_cache_so_the_first_request_loads_nothing(counting):
    context = pipelines.StudioContext(device="cpu")
    key = pipelines.preload("counting-test", context=context)
    assert context.pipelines.is_loaded(key) and CountingMethod.loads == 1
    result = pipelines.run(
        pipelines.StyleRequest(gradient_image(), gradient_image(seed=1), method="counting-test"), context=context
    )
    assert CountingMethod.loads == 1 and result.metadata["timings"]["load_s"] == 0.0


def test_memo_remembers_counts_and_drops_the_least_recently_used():
    from pipelines.core.memo import Memo

    memo: Memo[int] = Memo(size=2)
    computed = []

    def compute(value):
        return lambda: computed.append(value) or value * 10

    assert memo.get("a", compute(1)) == 10
    assert memo.get("b", compute(2)) == 20
    assert memo.get("a", compute(99)) == 10  # remembered: not computed again
    memo.get("c", compute(3))  # evicts b, the least recently used
    assert memo.get("b", compute(2)) == 20
    assert computed == [1, 2, 3, 2]
    assert (memo.hits, memo.misses, len(memo)) == (1, 4, 2)
    memo.clear()
    assert len(memo) == 0


def test_memo_keeps_one_answer_under_concurrent_use():
    import threading

    from pipelines.core.memo import Memo

    memo: Memo[int] = Memo(size=4)
    answers = []

    def worker(i):
        for key in "abcdefabc":
            answers.append((key, memo.get(key, lambda key=key: ord(key))))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(value == ord(key) for key, value in answers) and len(answers) == 72
    assert memo.hits + memo.misses == 72 and len(memo) == 4


def test_array_digest_tells_contents_shape_dtype_and_salt_apart():
    import numpy as np
    import torch

    from pipelines.core.memo import array_digest

    a = np.arange(12, dtype=np.float32)
    assert array_digest(a) == array_digest(a.copy()) == array_digest(torch.from_numpy(a.copy()))
    assert array_digest(a) != array_digest(a.reshape(3, 4))
    assert array_digest(a) != array_digest(a.astype(np.float64))
    assert array_digest(a) != array_digest(a, True)
    b = a.copy()
    b[5] += 1e-3
    assert array_digest(a) != array_digest(b)
    assert array_digest(torch.ones(3, dtype=torch.bfloat16)) != array_digest(torch.zeros(3, dtype=torch.bfloat16))
