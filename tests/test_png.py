import pytest
from conftest import gradient_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines import ImageInputError, read_png_metadata
from pipelines.core.png import encode_png

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=8))
def test_metadata_round_trips_through_png_bytes(metadata):
    assert read_png_metadata(encode_png(gradient_image(40, 40), metadata)) == metadata


def test_metadata_survives_a_file_and_the_pixels_are_untouched(tmp_path):
    image = gradient_image()
    metadata = {"method": "fast", "strength": 0.7, "seed": 3, "note": "ünïcode ✓"}
    path = tmp_path / "result.png"
    path.write_bytes(encode_png(image, metadata))
    assert read_png_metadata(path) == metadata
    assert Image.open(path).convert("RGB").tobytes() == image.tobytes()


def test_png_without_metadata_says_so(tmp_path):
    path = tmp_path / "plain.png"
    gradient_image().save(path)
    with pytest.raises(ImageInputError, match="no style-studio parameters"):
        read_png_metadata(path)
