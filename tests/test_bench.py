"""The benchmark's own arithmetic: what it counts must be right before its figures mean anything.
(Timings themselves are not asserted: machines are noisy; the recorded figures live in bench/results.)"""

import pytest
from artfusion_tiny import tiny_pipeline
from conftest import gradient_image

from bench.artfusion import denoiser_flops, gpu_peak_tflops


def test_denoiser_flops_scale_with_batch_and_grow_faster_than_the_pixels():
    unet = tiny_pipeline().unet
    one = denoiser_flops(unet, 1, (8, 8))
    assert one > 0
    assert denoiser_flops(unet, 3, (8, 8)) == 3 * one  # the guidance batch of 3 costs three pictures
    # twice the side: 4× for convolutions, 16× for attention scores, so more than 4× overall
    assert denoiser_flops(unet, 1, (16, 16)) > 4 * one
    # and the counted model was a meta copy: the real weights are untouched and still on the CPU
    assert next(unet.parameters()).device.type == "cpu"


def test_gpu_peaks_come_from_the_data_sheet_by_the_name_torch_reports():
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == pytest.approx(756.0)
    assert gpu_peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert gpu_peak_tflops("Some Future GPU") is None  # unknown: no fraction is claimed


def test_fast_engine_benchmark_runs_every_variant_on_the_studio_path(studio_context):
    from bench.fast_engine import BASELINE, measure
    from pipelines.core.studio import loaded_model

    engine, _ = loaded_model("fast", studio_context)  # the session's engine: count this benchmark's hits only
    hits_before = engine.vectors.hits
    content, style = gradient_image(128, 96), gradient_image(96, 96, seed=3)
    times = measure(content, style, strength=0.7, repeats=2, context=studio_context)
    assert set(times) == {
        BASELINE,
        "studio, new pair (nothing remembered)",
        "studio, same pair again",
        "studio, new content in a seen style",
        "studio, from files",
    }
    assert all(len(samples) == 2 and min(samples) > 0 for samples in times.values())
    assert engine.vectors.hits > hits_before  # the "seen" variants really were served from the memo
