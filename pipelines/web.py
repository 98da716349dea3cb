"""The studio over plain HTTP: send a photo, get it back painted (the earlier prototype's "screamify").

``create_web_app(settings, stylize)`` returns a FastAPI app with three routes:

- ``POST /stylize``: either ``multipart/form-data`` (a ``content`` file, and a ``style`` file or a ``preset``
  name, plus any request parameter as a field: ``strength``, ``method``, ``steps``, ``seed``, ``max_side``,
  ``preserve_color``, ``options`` as JSON text), answered with the PNG itself; or ``application/json`` as the
  prototype sent it (``{"image": "<base64>", "preset": "scream", "strength": 0.8}``, or ``style_image`` instead
  of ``preset``), answered with ``{"image": "<base64 PNG>", "metadata": {...}, ...}``. ``?format=base64`` (or
  ``Accept: application/json``) asks for the JSON answer, ``?format=png`` for the PNG. Either way the PNG carries
  every parameter (``pipelines.read_metadata`` reads them).
- ``GET /presets``: the bundled paintings a request can name instead of sending a style file.
- ``GET /health``: liveness, never guarded.

Everything a client gets wrong is a JSON ``{"error": "..."}`` saying what to change: 400 malformed JSON or base64,
401 missing or wrong token, 413 too large, 415 not an image (or not one of the two body types), 422 a bad
parameter, 503 the method cannot run now; anything unexpected is a 500 without internals (it is logged).

Settings are one explicit ``WebSettings`` built by the front end that serves the app (``modal_app.py`` reads its
token from a Modal Secret); nothing here reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import io
import json
import logging
import math
import sysconfig
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from pipelines.backends import RemoteBackendError
from pipelines.core.errors import (
    GenerationCancelled,
    ImageInputError,
    InvalidRequestError,
    MethodUnavailableError,
    OutOfMemoryError,
    StudioError,
)
from pipelines.core.images import DEFAULT_MAX_SIDE, MAX_PIXELS, load_image
from pipelines.core.method import get_method, method_names
from pipelines.core.request import MAX_MAX_SIDE, MIN_MAX_SIDE, REQUEST_PARAMETERS, Parameter, StyleRequest, check_int
from pipelines.core.result import VERSION, StyleResult
from pipelines.core.studio import run
from pipelines.inst.library import slugify

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # per image, as the Gradio app
PRESET_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
ANSWER_FORMATS = ("png", "base64", "json")  # base64 and json are the same JSON answer
UNEXPECTED = "The studio failed unexpectedly (the error was logged). Try again; if it keeps failing, report it."

Stylize = Callable[[StyleRequest], StyleResult]


def bundled_styles_dir() -> Path:
    """The paintings shipped with the studio: the checkout's ``assets/style``, else where ``pip install .`` put
    them (``<prefix>/share/style-studio/assets/style``)."""
    candidates = [Path(__file__).resolve().parents[1] / "assets" / "style"]
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidates.append(Path(sysconfig.get_path("data", scheme)) / "share" / "style-studio" / "assets" / "style")
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


@dataclass(frozen=True)
class WebSettings:
    """What the web endpoint allows.

    Attributes:
        token: when set, ``/stylize`` and ``/presets`` need ``Authorization: Bearer <token>``.
        max_upload_bytes: the largest image file accepted (each one; the whole body may hold two, in base64).
        max_side: the working resolution's long side: the default, and the most a request may ask for.
        allowed_methods: the methods a request may name.
        default_method: the method when a request names none.
        presets_dir: the folder of paintings a request can name as ``preset`` (file name without extension).
    """

    token: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_side: int = DEFAULT_MAX_SIDE
    allowed_methods: tuple[str, ...] = ("fast",)
    default_method: str = "fast"
    presets_dir: Path = field(default_factory=bundled_styles_dir)

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", self.token or None)  # an empty secret must not mean "anyone"
        object.__setattr__(self, "allowed_methods", tuple(self.allowed_methods))
        object.__setattr__(self, "presets_dir", Path(self.presets_dir))
        unknown = [name for name in self.allowed_methods if name not in method_names()]
        if unknown or not self.allowed_methods:
            raise InvalidRequestError(
                f"allowed_methods must name methods from {', '.join(method_names())}; got {self.allowed_methods}."
            )
        if self.default_method not in self.allowed_methods:
            raise InvalidRequestError(f"default_method {self.default_method!r} is not in allowed_methods.")
        check_int("max_side", self.max_side, MIN_MAX_SIDE, MAX_MAX_SIDE)
        if self.max_upload_bytes <= 0:
            raise InvalidRequestError(f"max_upload_bytes must be positive; got {self.max_upload_bytes}.")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: two images in base64 (4/3 of their size) and the other fields."""
        return math.ceil(2 * self.max_upload_bytes * 4 / 3) + 64 * 1024


# ---- presets: the bundled paintings, by name ------------------------------------------------------------------


def find_presets(folder: Path) -> dict[str, Path]:
    """Preset name → file: each picture in ``folder``, named by the slug of its file name (``munch-the-scream``)."""
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PRESET_SUFFIXES and p.is_file())
    return {slugify(path.stem): path for path in files}


def resolve_preset(name: Any, presets: Mapping[str, Path]) -> str:
    """The preset called ``name``: its full name, or any ending of it after a dash that names one painting
    (``scream``, ``the-scream`` and ``munch-the-scream`` are the same; so are ``starry-night`` and
    ``van-gogh-starry-night``)."""
    listing = ", ".join(presets) or "none on this server"
    if not isinstance(name, str):
        raise InvalidRequestError(f"preset must be a name such as 'scream'; got {name!r}. Presets: {listing}.")
    slug = slugify(name) if any(c.isalnum() for c in name) else ""
    if slug in presets:
        return slug
    matches = [full for full in presets if slug and full.endswith("-" + slug)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidRequestError(f"preset {name!r} could mean {', '.join(matches)}; use the full name.")
    raise InvalidRequestError(
        f"Unknown preset {name!r}. Presets: {listing} (an ending that names one painting, e.g. 'scream', is enough)."
    )


# ---- the app ----------------------------------------------------------------------------------------------------


def create_web_app(settings: WebSettings, stylize: Stylize | None = None) -> FastAPI:
    """The FastAPI app serving ``settings``. ``stylize`` turns a checked ``StyleRequest`` (its images decoded
    PIL pictures) into a result; by default ``pipelines.run`` with the process's default context."""
    stylize = stylize or run
    presets = find_presets(settings.presets_dir)
    app = FastAPI(
        title="Style Studio",
        version=VERSION,
        description="Send a photo and a painting (or a preset's name); get the photo back in the painting's style.",
    )
    app.add_exception_handler(HTTPException, _http_error)
    guarded = [Depends(_token_check(settings.token))]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "methods": list(settings.allowed_methods), "default_method": settings.default_method}

    @app.get("/presets", dependencies=guarded)
    def list_presets() -> dict[str, Any]:
        """The presets a request can name instead of sending a style file."""
        return {"presets": list(presets)}

    @app.post(
        "/stylize",
        dependencies=guarded,
        response_class=Response,
        openapi_extra=_openapi_body(),
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    )
    async def stylize_endpoint(request: Request, answer_format: str | None = Query(None, alias="format")) -> Response:
        """Stylize ``content`` (``image`` in JSON) with a style file or a preset; the answer is the PNG (or JSON
        with the PNG in base64), every parameter inside."""
        started = time.perf_counter()
        try:
            upload = await _read_upload(request, settings)
            as_json = _wants_json(request, answer_format, upload.is_json)
            style_request, preset = await run_in_threadpool(_build_request, upload, settings, presets)
            result = await run_in_threadpool(stylize, style_request)
            answer = await run_in_threadpool(_answer, result, as_json, preset)
        except WebError as exc:
            return _error(exc.status, exc.message)
        except HTTPException as exc:  # Starlette's own: a multipart body it cannot parse
            return _error(exc.status_code, str(exc.detail))
        except StudioError as exc:
            return _error(status_for(exc), exc.message)
        except Exception:
            logger.exception("/stylize failed")
            return _error(500, UNEXPECTED)
        logger.info("%s in %.2f s", result.metadata.summary(), time.perf_counter() - started)
        return answer

    return app


class WebError(Exception):
    """A problem with the HTTP request itself, with the status that says so."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_for(exc: StudioError) -> int:
    """The HTTP status of a studio error: the client's request (422) or the server's state (503)."""
    if isinstance(exc, (InvalidRequestError, ImageInputError)):
        return 422
    if isinstance(exc, (MethodUnavailableError, OutOfMemoryError, RemoteBackendError, GenerationCancelled)):
        return 503
    return 500


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own errors (401 from the token check, 404, a multipart body it cannot parse) in the same shape."""
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), exc.headers)


# ---- the token ------------------------------------------------------------------------------------------------


def _token_check(token: str | None) -> Callable[[Request], None]:
    """A dependency refusing requests without ``Authorization: Bearer <token>`` (no check when token is None)."""
    expected = token.encode() if token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not given.strip():
            missing = "This endpoint needs a token: send the header Authorization: Bearer <token>."
            raise HTTPException(401, missing, challenge)
        if not hmac.compare_digest(given.strip().encode(), expected):  # constant time: no guessing byte by byte
            raise HTTPException(401, "The token is not valid. Check the Authorization: Bearer header.", challenge)

    return check


# ---- reading what the client sent ------------------------------------------------------------------------------


@dataclass
class Upload:
    """What a client sent, before any checking: raw image bytes and the other fields as given."""

    content: bytes | None
    style: bytes | None
    preset: Any
    parameters: dict[str, Any]
    is_json: bool


def _request_fields() -> dict[str, Parameter]:
    """The request parameters a body may carry (the images come as files or base64 fields of their own)."""
    return {p.name: p for p in REQUEST_PARAMETERS if p.kind != "image"}


async def _read_upload(request: Request, settings: WebSettings) -> Upload:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = media in ("multipart/form-data", "application/x-www-form-urlencoded")  # the latter: no file sent
    if not is_form and media != "application/json" and not media.endswith("+json"):
        raise WebError(
            415,
            f"Send multipart/form-data (a content file and a style file or preset) or application/json (a base64 "
            f"image); got {media or 'no Content-Type'}.",
        )
    body = await _read_body(request, settings)
    if is_form:
        return await _read_form(request, body)
    return _read_json(body)


async def _read_body(request: Request, settings: WebSettings) -> bytes:
    """The body, refused with 413 as soon as it is known to be too large (never read whole first)."""
    limit = settings.max_body_bytes
    too_large = WebError(
        413,
        f"The request is larger than {_megabytes(limit)}; each image may be at most "
        f"{_megabytes(settings.max_upload_bytes)}.",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(request: Request, body: bytes) -> Upload:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    fields = _request_fields()
    accepted = ["content", "style", "preset", *fields]
    values: dict[str, Any] = {}
    async with Request(request.scope, replay).form(max_files=2, max_fields=len(accepted)) as form:
        for name, value in form.multi_items():
            if name not in accepted:
                raise InvalidRequestError(f"Unknown field {name!r}. Fields: {', '.join(accepted)}.")
            if name in values:
                raise InvalidRequestError(f"The field {name!r} was sent twice; send it once.")
            is_file = isinstance(value, UploadFile)
            if is_file != (name in ("content", "style")):
                kind = "a file" if name in ("content", "style") else "a text field, not a file"
                raise InvalidRequestError(f"{name} must be {kind}.")
            values[name] = await value.read() if is_file else value
    parameters = {}
    for name, param in fields.items():
        if values.get(name, "").strip():
            parameters[name] = _from_text(param, values[name])
    return Upload(values.get("content"), values.get("style"), values.get("preset") or None, parameters, False)


def _from_text(param: Parameter, text: str) -> Any:
    """A form field's text as the parameter's type (the request then checks the range)."""
    text = text.strip()
    try:
        if param.kind in ("fraction", "int"):
            try:
                return int(text)
            except ValueError:
                return float(text)
        if param.kind == "bool":
            truth = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False}
            return truth[text.lower()]
        if param.kind == "options":
            options = json.loads(text)
            if not isinstance(options, dict):
                raise ValueError
            return options
    except (ValueError, KeyError):
        if param.kind == "bool":
            expected = "true or false"
        elif param.kind == "options":
            expected = 'a JSON object, e.g. {"eta": 0}'
        else:
            number = "a number" if param.kind == "fraction" else "a whole number"
            expected = f"{number} from {param.minimum:g} to {param.maximum:g}"
        raise InvalidRequestError(f"{param.name} must be {expected}; got {text!r}.") from None
    return text


def _read_json(body: bytes) -> Upload:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebError(400, f"The body is not valid JSON ({exc}). Send an object such as {_JSON_EXAMPLE}.") from None
    if not isinstance(data, dict):
        raise WebError(400, f"The JSON body must be an object such as {_JSON_EXAMPLE}.")
    fields = _request_fields()
    accepted = ["image", "style_image", "preset", *fields]
    unknown = [name for name in data if name not in accepted]
    if unknown:
        raise InvalidRequestError(f"Unknown field {unknown[0]!r}. Fields: {', '.join(accepted)}.")
    if data.get("image") is None:
        raise InvalidRequestError(f"image is missing: send the photo as base64, e.g. {_JSON_EXAMPLE}.")
    style = data.get("style_image")
    parameters = {name: data[name] for name in fields if data.get(name) is not None}
    return Upload(
        _from_base64(data["image"], "image"),
        None if style is None else _from_base64(style, "style_image"),
        data.get("preset"),
        parameters,
        True,
    )


_JSON_EXAMPLE = '{"image": "<base64>", "preset": "scream", "strength": 0.8}'


def _from_base64(value: Any, name: str) -> bytes:
    """Bytes from base64 text (line breaks and a ``data:image/...;base64,`` prefix are fine)."""
    if not isinstance(value, str):
        raise WebError(400, f"{name} must be the image file as a base64 string, not {type(value).__name__}.")
    text = value.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebError(400, f"{name} is not valid base64 ({exc}). Encode the image file's bytes as base64.") from None


def _wants_json(request: Request, answer_format: str | None, is_json: bool) -> bool:
    if answer_format is not None:
        if answer_format.lower() not in ANSWER_FORMATS:
            raise InvalidRequestError(f"format must be png, base64 or json; got {answer_format!r}.")
        return answer_format.lower() != "png"
    return is_json or "application/json" in request.headers.get("accept", "")


# ---- checking it: parameters first, then the images ------------------------------------------------------------


def _build_request(
    upload: Upload, settings: WebSettings, presets: Mapping[str, Path]
) -> tuple[StyleRequest, str | None]:
    """The checked request (images decoded with the studio's own hygiene) and the preset's full name, if any."""
    parameters = dict(upload.parameters)
    method = parameters.pop("method", None) or settings.default_method
    if method not in settings.allowed_methods:
        raise InvalidRequestError(f"method must be one of {', '.join(settings.allowed_methods)}; got {method!r}.")
    max_side = parameters.pop("max_side", None)
    if max_side is None:
        max_side = settings.max_side
    max_side = check_int("max_side", max_side, MIN_MAX_SIDE, settings.max_side)
    # The cheap checks first: the request's own validation, before anything is decoded.
    checked = StyleRequest(content=b"", style=None, method=method, max_side=max_side, **parameters)

    if upload.content is None:
        raise InvalidRequestError("content is missing: send the photo to restyle as the file field content.")
    preset = None
    if upload.style is not None and upload.preset is not None:
        raise InvalidRequestError("Send either a style image or a preset, not both.")
    if upload.preset is not None:
        preset = resolve_preset(upload.preset, presets)
    elif upload.style is None and get_method(method).uses_style_image:
        raise InvalidRequestError(f"Send a style image, or a preset: {', '.join(presets) or 'none on this server'}.")
    content = decode_image(upload.content, "content", max_side, settings.max_upload_bytes)
    style = None
    if preset is not None:
        style = load_image(presets[preset], role="style", max_side=max_side)
    elif upload.style is not None:
        style = decode_image(upload.style, "style", max_side, settings.max_upload_bytes)
    return dataclasses.replace(checked, content=content, style=style), preset


def decode_image(data: bytes, role: str, max_side: int, limit: int) -> Image.Image:
    """An uploaded image through the studio's image hygiene (orientation, modes, bombs, tiny pictures), fitted to
    ``max_side``; failures become 413 (too large), 415 (not an image) or 422 (damaged, too small)."""
    if len(data) > limit:
        raise WebError(413, f"The {role} image is {_megabytes(len(data))}; the limit is {_megabytes(limit)}.")
    try:
        return load_image(data, role=role, max_side=max_side)
    except ImageInputError as exc:
        raise WebError(_status_of_unreadable(data), exc.message) from None


def _status_of_unreadable(data: bytes) -> int:
    """Why an image was refused: 415 no format the studio reads, 413 too many pixels, 422 anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return 413
    except UnidentifiedImageError:
        return 415
    except Exception:
        return 422
    return 413 if width * height > MAX_PIXELS else 422


# ---- answering ------------------------------------------------------------------------------------------------


def _answer(result: StyleResult, as_json: bool, preset: str | None) -> Response:
    png = result.png_bytes()  # the parameters travel inside the PNG either way
    if not as_json:
        return Response(png, media_type="image/png", headers={"Content-Disposition": 'inline; filename="stylized.png"'})
    return JSONResponse(
        {
            "image": base64.b64encode(png).decode("ascii"),
            "metadata": result.metadata.to_dict(),
            "summary": result.metadata.summary(),
            "preset": preset,
        }
    )


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} kB"


def _openapi_body() -> dict[str, Any]:
    """The two body forms for ``/docs`` (the route reads the body itself, so FastAPI cannot infer them)."""
    types = {"fraction": "number", "int": "integer", "bool": "boolean", "options": "object", "method": "string"}
    fields = {p.name: {"type": types[p.kind], "description": p.help} for p in REQUEST_PARAMETERS if p.kind != "image"}
    preset = {"type": "string", "description": "a bundled painting by name (GET /presets), instead of a style"}
    binary = {"type": "string", "format": "binary"}
    encoded = {"type": "string", "format": "byte"}
    form = {"content": binary, "style": binary, "preset": preset, **fields, "options": {"type": "string"}}
    body = {"image": encoded, "style_image": encoded, "preset": preset, **fields}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form, "required": ["content"]}},
                "application/json": {"schema": {"type": "object", "properties": body, "required": ["image"]}},
            },
        }
    }
