"""Reading a v2 request whose tensors travel in the binary data extension, with BYTES kept as bytes.

Triton's clients (tritonclient, and the others in every language) send BYTES tensors after the JSON header
of the request body, each element as a 4-byte little-endian length and its bytes. KServe 0.21 reads those
elements back as UTF-8 text, which an encoded image file is not, and fails the request; mitp's data plane
reads them as the bytes they are. Everything else (JSON tensors, outputs, routes) is KServe's own.
"""

from __future__ import annotations

from typing import Any

import orjson
from kserve import InferInput, InferRequest
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import RequestedOutput


class BytesDataPlane(DataPlane):
    """KServe's data plane, with binary-extension requests read by `binary_request`."""

    def decode_inference_request(self, body: Any, headers: dict[str, str], model_name: str) -> InferRequest:
        if isinstance(body, bytes):
            length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
            if length is None or not length.isdigit() or int(length) > len(body):
                raise InvalidInput(f"a binary request needs a valid {INFERENCE_CONTENT_LENGTH_HEADER} header (the JSON part's length)")
            return binary_request(body, int(length), model_name)
        return super().decode_inference_request(body, headers, model_name)


def binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """The request in `body`: a JSON header of `json_length` bytes, then each binary input's bytes in turn."""
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"the request's JSON part cannot be read: {err}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("the request's JSON part holds no `inputs` list")
    inputs, offset = [], json_length
    for spec in header["inputs"]:
        if not isinstance(spec, dict) or not {"name", "shape", "datatype"} <= set(spec):
            raise InvalidInput("each input needs a name, a shape and a datatype")
        parameters = dict(spec.get("parameters") or {})
        tensor = InferInput(name=spec["name"], shape=spec["shape"], datatype=spec["datatype"], parameters=parameters)
        if "data" in spec:
            tensor.data = spec["data"]
        elif isinstance(parameters.get("binary_data_size"), int) and parameters["binary_data_size"] >= 0:
            end = offset + parameters.pop("binary_data_size")
            if end > len(body):
                raise InvalidInput(f"input `{tensor.name}`: its binary data runs past the end of the request")
            raw = body[offset:end]
            offset = end
            if tensor.datatype == "BYTES":
                tensor.data = bytes_elements(raw, tensor.name)
            else:
                tensor._raw_data = raw  # KServe reads fixed-size types from here itself
        else:
            raise InvalidInput(f"input `{tensor.name}` has neither `data` nor a binary_data_size")
        inputs.append(tensor)
    outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in header.get("outputs") or [] if isinstance(o, dict) and "name" in o]
    return InferRequest(
        model_name=model_name, infer_inputs=inputs, request_id=header.get("id"),
        parameters=header.get("parameters"), request_outputs=outputs or None,
    )


def bytes_elements(raw: bytes, name: str) -> list[bytes]:
    """A BYTES tensor's serialized elements: each a 4-byte little-endian length, then that many bytes."""
    elements, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InvalidInput(f"input `{name}`: its binary data ends inside an element's length")
        size = int.from_bytes(raw[i : i + 4], "little")
        i += 4
        if i + size > len(raw):
            raise InvalidInput(f"input `{name}`: an element of {size:,} bytes runs past the end of its data")
        elements.append(raw[i : i + size])
        i += size
    return elements
