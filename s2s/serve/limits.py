"""What one request to ``s2s serve`` may hold, and the refusals of what it may not: every refusal is an HTTP status
and a one-line message that names the field (``texts[3]: 2,400 characters, more than the limit of 2,000``)."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32  # items (texts, images, generated texts) per batch
    max_wait: float = 0.03  # seconds a batch stays open for more requests
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text (and per generation prompt)
    max_images: int = 8  # images per request
    max_image_bytes: int = 5_000_000  # bytes per image file
    max_pixels: int = 25_000_000  # width × height per image
    max_generate: int = 2000  # tokens per generated text
    timeout: float = 30.0  # seconds to answer a request

    @property
    def max_body(self) -> int:
        """Bytes per request body: the largest request the other limits allow (a JSON string may spend six bytes
        on a character, base64 four on three bytes), and room for the options."""
        texts = self.max_texts * self.max_chars * 6
        images = self.max_images * (self.max_image_bytes * 4 // 3 + 100)
        return max(texts, images) + 65_536


class Refused(HTTPException):
    """A request the server will not answer. An HTTPException, so that a refusal raised while FastAPI reads the
    body (the body limit) reaches the error handler as it is."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_texts(texts: list[str], limits: Limits, field: str = "texts") -> None:
    if len(texts) > limits.max_texts:
        raise Refused(413, f"{field}: {len(texts):,} texts, more than the limit of {limits.max_texts:,} per request")
    for number, text in enumerate(texts):
        check_chars(text, limits, f"{field}[{number}]")
        if not text.strip():
            raise Refused(422, f"{field}[{number}]: empty")


def check_chars(text: str, limits: Limits, field: str) -> None:
    if len(text) > limits.max_chars:
        raise Refused(413, f"{field}: {len(text):,} characters, more than the limit of {limits.max_chars:,}")


def decode_images(images: list[str], limits: Limits) -> list[Image.Image]:
    """Base64 image files (a ``data:image/...;base64,`` URL prefix allowed) → RGB pictures, each checked against
    the byte and pixel limits before it is decoded."""
    if len(images) > limits.max_images:
        raise Refused(413, f"images: {len(images):,} images, more than the limit of {limits.max_images:,} per request")
    return [decode_image(data, limits, f"images[{number}]") for number, data in enumerate(images)]


def decode_image(data: str, limits: Limits, field: str) -> Image.Image:
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limits.max_image_bytes + 3:  # refused before decoding
        raise Refused(413, f"{field}: more than the limit of {limits.max_image_bytes:,} bytes per image")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(422, f"{field}: not base64 (send the image file's bytes in base64)") from None
    if len(raw) > limits.max_image_bytes:
        raise Refused(413, f"{field}: {len(raw):,} bytes, more than the limit of {limits.max_image_bytes:,}")
    try:
        with Image.open(io.BytesIO(raw)) as image:  # reads the header only: the size is known before decoding
            width, height = image.size
            if width * height > limits.max_pixels:
                raise Refused(413, f"{field}: {width}×{height} pixels, more than the limit of {limits.max_pixels:,}")
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise Refused(422, f"{field}: not an image file") from None
    except Image.DecompressionBombError:  # PIL's own guard, met when the header alone is enormous
        raise Refused(413, f"{field}: more than the limit of {limits.max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise Refused(422, f"{field}: unreadable image ({str(error).splitlines()[0]})") from None
