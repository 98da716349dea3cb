"""The classical measures, on numpy arrays: SSIM, edge F1, colour histograms. No network, no weights.

OpenCV is imported on first use (``import pipelines`` stays quick). Every function is deterministic, so the
style picture's histogram can be remembered by its pixel digest (``pipelines.scores.picture``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# SSIM as Wang et al. (2004) define it: an 11-tap Gaussian window with σ 1.5, K1 = 0.01, K2 = 0.03, on 8-bit values.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2

# Canny on a lightly smoothed luminance (σ 1 tames JPEG noise and paper grain); an edge is matched when the other
# picture has one within EDGE_TOLERANCE px, so a line that moved by a pixel still counts.
EDGE_BLUR_SIGMA = 1.0
CANNY_LOW, CANNY_HIGH = 100, 200
EDGE_TOLERANCE = 2

# Colour histograms: 8 bins per channel (512 colours) on a copy at most 256 px on its long side, which holds the
# same proportions as the full picture and costs about a millisecond.
HISTOGRAM_BINS = 8
HISTOGRAM_SIDE = 256


def luminance(image: Image.Image) -> np.ndarray:
    """ITU-R 601 luma (Pillow's ``L``) as float32 in 0 … 255 (float32 keeps SSIM's variances exact to about 0.01,
    far below its constants, at two thirds of float64's cost)."""
    return np.asarray(image.convert("L"), dtype=np.float32)


def same_size(content: Image.Image, result: Image.Image) -> Image.Image:
    """The content at the result's size (methods may return another size; scores compare pixel to pixel)."""
    if content.size == result.size:
        return content
    return content.resize(result.size, Image.Resampling.LANCZOS)


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """Mean structural similarity of two same-shaped greyscale arrays in 0 … 255 (1.0 for identical arrays).

    The local statistics come from Gaussian filtering; the mean skips the half-window border where the window
    would reach past the picture (as scikit-image does), unless the picture is too small to have an inside.
    """
    import cv2

    if first.shape != second.shape:
        raise ValueError(f"SSIM compares same-sized pictures; got {first.shape} and {second.shape}.")

    def blur(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mean_a, mean_b = blur(first), blur(second)
    var_a = blur(first * first) - mean_a * mean_a
    var_b = blur(second * second) - mean_b * mean_b
    covariance = blur(first * second) - mean_a * mean_b
    numerator = (2 * mean_a * mean_b + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_a * mean_a + mean_b * mean_b + SSIM_C1) * (var_a + var_b + SSIM_C2)
    similarity = numerator / denominator
    border = SSIM_WINDOW // 2
    if min(similarity.shape) > 2 * border:
        similarity = similarity[border:-border, border:-border]
    return float(similarity.mean())


def edge_map(grey: np.ndarray) -> np.ndarray:
    """Canny edges (a boolean array) of a greyscale array in 0 … 255."""
    import cv2

    pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    smoothed = cv2.GaussianBlur(pixels, (0, 0), EDGE_BLUR_SIGMA)
    return cv2.Canny(smoothed, CANNY_LOW, CANNY_HIGH) > 0


def edge_f1(reference: np.ndarray, candidate: np.ndarray, tolerance: int = EDGE_TOLERANCE) -> float:
    """F1 of ``candidate``'s edge pixels against ``reference``'s (boolean arrays of one shape), each side matching
    the other within ``tolerance`` px. Two pictures without any edge agree (1.0); one without edges scores 0."""
    import cv2

    if reference.shape != candidate.shape:
        raise ValueError(f"Edge maps must have one shape; got {reference.shape} and {candidate.shape}.")
    reference_count, candidate_count = int(reference.sum()), int(candidate.sum())
    if reference_count == 0 or candidate_count == 0:
        return 1.0 if reference_count == candidate_count else 0.0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_reference = cv2.dilate(reference.astype(np.uint8), disc) > 0
    near_candidate = cv2.dilate(candidate.astype(np.uint8), disc) > 0
    precision = float((candidate & near_reference).sum()) / candidate_count  # new edges that belong to the photo
    recall = float((reference & near_candidate).sum()) / reference_count  # the photo's edges that survived
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def color_histogram(image: Image.Image) -> np.ndarray:
    """The joint RGB histogram (``HISTOGRAM_BINS``³ bins, summing to 1) of an RGB picture."""
    small = image.convert("RGB")
    if max(small.size) > HISTOGRAM_SIDE:
        small = small.copy()
        small.thumbnail((HISTOGRAM_SIDE, HISTOGRAM_SIDE), Image.Resampling.BILINEAR)
    bins = np.asarray(small, dtype=np.int64).reshape(-1, 3) * HISTOGRAM_BINS // 256
    index = (bins[:, 0] * HISTOGRAM_BINS + bins[:, 1]) * HISTOGRAM_BINS + bins[:, 2]
    counts = np.bincount(index, minlength=HISTOGRAM_BINS**3).astype(np.float64)
    return counts / counts.sum()


def hellinger_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Hellinger distance of two histograms that each sum to 1: 0 for the same, 1 for no overlap."""
    overlap = float(np.sqrt(first * second).sum())
    return float(np.sqrt(max(0.0, 1.0 - overlap)))


def cosine_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """Cosine similarity of two vectors (flattened); 0 when either is all zeros."""
    a, b = np.ravel(first).astype(np.float64), np.ravel(second).astype(np.float64)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 0.0
    return float(np.clip(np.dot(a, b) / norms, -1.0, 1.0))
