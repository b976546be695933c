"""Reading a v2 inference request: the JSON header checked whole, BYTES elements kept as bytes.

A request is a JSON object, or (the binary data extension, which Triton's clients in every language send)
a JSON header of `Inference-Header-Content-Length` bytes followed by each binary input's data, a BYTES
element being a 4-byte little-endian length and its bytes. mitp reads both here, in one place, so that
every malformed request is a 400 with one line that says what is wrong (never a traceback, never the body
echoed back), and so that the work a request can cause is bounded before it is done: at most
`max_elements` elements per input are read. KServe 0.21 reads binary BYTES back as UTF-8 text, which an
encoded image file is not; here they stay bytes. Outputs, routes and metadata are KServe's own.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import RequestedOutput
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_INPUTS = 16  # a mitp model takes two; a few more only to say which are unknown


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Tensor(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    datatype: Annotated[str, Field(min_length=1, max_length=16)]
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=8)]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class _Output(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    parameters: dict[str, Any] | None = None


class _Header(_Strict):
    id: Annotated[str, Field(max_length=256)] | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[_Tensor], Field(min_length=1, max_length=MAX_INPUTS)]
    outputs: Annotated[list[_Output], Field(max_length=MAX_INPUTS)] | None = None


def parse_request(body: bytes, json_length: str | None, model_name: str, max_elements: int) -> InferRequest:
    """The request in `body`, or InvalidInput saying what is wrong with it. `json_length` is the
    Inference-Header-Content-Length header (None for a plain JSON body)."""
    end = _json_end(body, json_length)
    header = _header(body[:end])
    names = [t.name for t in header.inputs]
    if len(set(names)) < len(names):
        raise InvalidInput(f"inputs must be named once each; got {', '.join(names)}")
    inputs, offset = [], end
    for spec in header.inputs:
        elements, offset = _elements(spec, body, offset, end, max_elements)
        parameters = {k: v for k, v in (spec.parameters or {}).items() if k != "binary_data_size"}
        inputs.append(InferInput(name=spec.name, shape=spec.shape, datatype=spec.datatype, data=elements, parameters=parameters))
    if offset != len(body):
        raise InvalidInput(f"the request holds {len(body) - offset:,} bytes after its inputs' data")
    outputs = [RequestedOutput(name=o.name, parameters=o.parameters) for o in header.outputs or []]
    return InferRequest(model_name=model_name, infer_inputs=inputs, request_id=header.id, parameters=header.parameters, request_outputs=outputs or None)


def _json_end(body: bytes, json_length: str | None) -> int:
    if json_length is None:
        return len(body)
    if len(json_length) > 20 or not json_length.isascii() or not json_length.isdigit() or int(json_length) > len(body):
        raise InvalidInput("Inference-Header-Content-Length must be the length of the request's JSON part, within the body")
    return int(json_length)


def _header(raw: bytes) -> _Header:
    try:
        return _Header.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"the request's JSON cannot be read: {err}") from None
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the request"
        raise InvalidInput(f"the request's JSON is not a v2 inference request: {where}: {first['msg']}") from None


def _elements(spec: _Tensor, body: bytes, offset: int, json_end: int, max_elements: int) -> tuple[list[Any], int]:
    """One input's elements (JSON values, or bytes from the binary data), and where its data ended."""
    declared = math.prod(spec.shape)
    if declared > max_elements:
        raise InvalidInput(f"input `{spec.name}` has {declared:,} elements; this server reads at most {max_elements:,} per request")
    if spec.data is not None:
        elements = spec.data
    else:
        size = (spec.parameters or {}).get("binary_data_size")
        if json_end == len(body) or type(size) is not int or size < 0:
            raise InvalidInput(f"input `{spec.name}` has neither `data` nor a binary_data_size within a binary request")
        if offset + size > len(body):
            raise InvalidInput(f"input `{spec.name}`: its binary data runs past the end of the request")
        if spec.datatype.upper() != "BYTES":
            raise InvalidInput(f"input `{spec.name}` must be BYTES; got {spec.datatype}")
        elements = bytes_elements(body[offset : offset + size], spec.name, declared)
        offset += size
    if len(elements) != declared:
        raise InvalidInput(f"input `{spec.name}` has shape {spec.shape} ({declared:,} elements) but holds {len(elements):,}")
    return elements, offset


def bytes_elements(raw: bytes, name: str, max_elements: int) -> list[bytes]:
    """A BYTES tensor's serialized elements (each a 4-byte little-endian length, then that many bytes),
    read no further than `max_elements`."""
    elements: list[bytes] = []
    i = 0
    while i < len(raw):
        if len(elements) == max_elements:
            raise InvalidInput(f"input `{name}` holds more elements than its shape says ({max_elements:,})")
        if i + 4 > len(raw):
            raise InvalidInput(f"input `{name}`: its binary data ends inside an element's length")
        size = int.from_bytes(raw[i : i + 4], "little")
        i += 4
        if i + size > len(raw):
            raise InvalidInput(f"input `{name}`: an element of {size:,} bytes runs past the end of its data")
        elements.append(raw[i : i + size])
        i += size
    return elements
