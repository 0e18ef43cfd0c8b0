"""``multipart/form-data`` bodies (file uploads), read with the standard library's MIME
parser: one upload route does not justify a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP


@dataclass(slots=True, frozen=True)
class FormPart:
    data: bytes
    filename: str | None  # set on a file part


def parse_form(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The parts of a form by name; a ValueError says what is wrong with the body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError(
            f"send the file as multipart/form-data (fields file and purpose), "
            f"not {content_type or 'no content type'}"
        )
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ValueError("the multipart body is malformed (its boundary is missing or broken)")
    parts: dict[str, FormPart] = {}
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            data = part.get_payload(decode=True)
            parts[name] = FormPart(data if isinstance(data, bytes) else b"", part.get_filename())
    return parts
