"""`mitp serve`: bundles behind the Open Inference Protocol, called with an independent v2 client (tritonclient).

The batcher and the binary reader are tested in-process; the server runs as `mitp serve` in its own process
on a loopback port, with the tiny trained bundles, as an app would meet it."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("kserve")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException, serialize_byte_tensor  # noqa: E402

from mitp.cli import app  # noqa: E402
from mitp.serve.batcher import DynamicBatcher, Overloaded  # noqa: E402

IDS = np.zeros((1, 77), np.int64)


def _rows(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 3, 2, 2), value, np.float32)  # (n, 3, H, W)


def _first_pixel(pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return pixels[:, :1, 0, 0].copy()  # (B, 1): each row's own value, so a mix-up shows


async def _ask(batcher: DynamicBatcher, pixels: np.ndarray) -> np.ndarray:
    """One request as the served model makes it: admitted, then queued."""
    n = len(pixels)
    with batcher.admitted(n):
        return await batcher.infer(pixels, np.repeat(IDS, n, 0), np.repeat(IDS, n, 0))


# ---------------------------------------------------------------------------------------------------
# the batcher and the binary reader, in-process


def test_concurrent_requests_are_gathered_into_one_call_and_each_gets_its_own_rows():
    calls = []

    def run(pixels, ids, mask):
        calls.append(len(pixels))
        return _first_pixel(pixels, ids, mask)

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=8, max_delay=0.2, max_queue=16)
        batcher.start()
        sizes = [1, 3, 2, 1]
        outs = await asyncio.gather(*[_ask(batcher, _rows(k, n)) for k, n in enumerate(sizes)])
        await batcher.stop()
        return sizes, outs

    sizes, outs = asyncio.run(main())
    assert calls == [7]  # one call: 7 rows, fewer than 8, gathered within the delay
    for k, (n, out) in enumerate(zip(sizes, outs, strict=True)):
        assert out.shape == (n, 1) and (out == k).all()


def test_a_full_batch_runs_at_once_and_a_full_queue_refuses_without_waiting():
    release, calls = threading.Event(), []

    def run(pixels, ids, mask):
        calls.append(len(pixels))
        release.wait(5)
        return _first_pixel(pixels, ids, mask)

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=2, max_delay=10.0, max_queue=6)
        batcher.start()
        first = asyncio.ensure_future(_ask(batcher, _rows(1, 2)))
        await asyncio.sleep(0.2)  # a full batch does not wait out the 10 s delay: it is running
        with pytest.raises(Overloaded, match="at capacity"):
            await _ask(batcher, _rows(2, 5))  # 2 rows running: 5 more would be 7 of 6
        queued = asyncio.ensure_future(_ask(batcher, _rows(2, 4)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="at capacity"):
            await _ask(batcher, _rows(3))  # 6 rows in progress of 6
        refused_after = time.monotonic() - started
        release.set()
        results = await asyncio.gather(first, queued)
        await batcher.stop()
        return results, refused_after

    (first, queued), refused_after = asyncio.run(main())
    assert calls == [2, 4]  # running rows count against the capacity; the larger request ran alone, after
    assert refused_after < 0.05
    assert (first == 1).all() and (queued == 2).all()


def test_a_failing_model_call_fails_its_own_batch_and_the_next_batch_runs():
    def run(pixels, ids, mask):
        if (pixels == 9).any():
            raise RuntimeError("onnxruntime failed")
        return _first_pixel(pixels, ids, mask)

    async def main():
        batcher = DynamicBatcher(run, max_batch_size=1, max_delay=0.0, max_queue=4)
        batcher.start()
        results = await asyncio.gather(_ask(batcher, _rows(9)), _ask(batcher, _rows(5)), return_exceptions=True)
        await batcher.stop()
        return results

    failed, good = asyncio.run(main())
    assert isinstance(failed, RuntimeError) and (good == 5).all()


def test_binary_bytes_elements_come_back_exactly_as_sent():
    from kserve.errors import InvalidInput

    from mitp.serve.protocol import bytes_elements

    elements = [b"\xff\xd8\xff\xe0 not utf-8", b"", "caf\u00e9 \u2603".encode()]
    raw = serialize_byte_tensor(np.array(elements, dtype=object)).item()
    assert bytes_elements(raw, "image", 3) == elements
    with pytest.raises(InvalidInput, match="runs past the end"):
        bytes_elements(raw[:-1], "image", 3)
    with pytest.raises(InvalidInput, match="inside an element's length"):
        bytes_elements(raw + b"\x01\x00", "image", 4)
    with pytest.raises(InvalidInput, match="more elements than its shape says"):
        bytes_elements(raw + b"\x00" * 4 * 10**6, "image", 4)  # a million empty elements: read no further than 4


# ---------------------------------------------------------------------------------------------------
# the server, in its own process


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, concurrency: int = 1) -> httpclient.InferenceServerClient:
        """tritonclient's HTTP client; `concurrency` connections for its async_infer (gevent, one thread)."""
        return httpclient.InferenceServerClient(self.url, concurrency=concurrency, connection_timeout=30, network_timeout=30)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(bundles: list[Path], names: list[str], log: Path, *options: str) -> Served:
    port = _free_port()
    command = [sys.executable, "-m", "mitp.cli", "serve", *map(str, bundles), *[a for n in names for a in ("--name", n)], "--port", str(port), *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "KSERVE"))}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)
    served = Served(f"127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mitp serve exited {process.returncode}:\n{served.stderr()[-3000:]}")
        try:
            if served.client().is_server_ready():
                return served
        except Exception:  # not listening yet
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"mitp serve did not get ready:\n{served.stderr()[-3000:]}")


def _stop(served: Served) -> int:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
    return served.process.wait(60)


def _broken_copy(bundle: Path, into: Path) -> Path:
    """The bundle with one expected logit of its test vectors moved: its verification must fail."""
    broken = into / "broken"
    shutil.copytree(bundle, broken)
    vectors_file = broken / "test_vectors" / "vectors.json"
    vectors = json.loads(vectors_file.read_text())
    vectors["vectors"][0]["logits"]["fp32"][0] += 1.0
    vectors_file.write_text(json.dumps(vectors))
    return broken


def _pairs(trained: Path, count: int) -> tuple[list[Path], list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(trained / "food" / "test.parquet").to_pydict()
    return [trained / "food" / p for p in table["image"][:count]], table["text"][:count]


def _inputs(images: list[bytes], texts: list[bytes], binary: bool = True) -> list:
    image = httpclient.InferInput("image", [len(images)], "BYTES")
    image.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return [image, text]


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    bundles = [trained / "bundle", trained / "other-bundle", _broken_copy(trained / "bundle", root)]
    options = ("--max-batch-size", "8", "--max-delay-ms", "50", "--max-body-mb", "1", "--read-timeout", "2")
    server = _start(bundles, ["food", "food-other", "broken"], root / "server.log", *options)
    yield server
    assert _stop(server) == 0, server.stderr()[-3000:]


def test_every_route_answers_and_a_bundle_that_fails_verification_is_not_served(served):
    client = served.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("food") and client.is_model_ready("food-other")
    metadata = client.get_model_metadata("food")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("image", "BYTES", [-1]), ("text", "BYTES", [-1])]
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [("logits", "FP32"), ("probabilities", "FP32"), ("label", "BYTES")]
    assert metadata["outputs"][0]["shape"][1] > 1  # K classes
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("broken")
    assert "not serving broken" in served.stderr() and "fails verification" in served.stderr()
    assert _post(served, "/v2/repository/models/food/unload", b"", {})[0] == 404  # nobody unloads a model over the network
    assert client.is_model_ready("food")


def test_served_outputs_equal_mitp_predict_on_the_same_pairs(served, trained):
    from mitp.runtime.predict import Predictor

    images, texts = _pairs(trained, 3)
    result = served.client().infer("food", _inputs([p.read_bytes() for p in images], [t.encode() for t in texts]))
    logits, probabilities, labels = result.as_numpy("logits"), result.as_numpy("probabilities"), result.as_numpy("label")
    predictor = Predictor(trained / "bundle", "cpu")
    pixels = np.stack([predictor.preprocess(p) for p in images])
    ids, mask, _ = predictor.tokenize(texts)
    assert logits.dtype == np.float32 and np.abs(logits - predictor.logits(pixels, ids, mask)).max() <= 1e-5
    for i, (image, text) in enumerate(zip(images, texts, strict=True)):
        cli = CliRunner().invoke(app, ["predict", str(image), text, "--model", str(trained / "bundle"), "--json", "--provider", "cpu"])
        assert cli.exit_code == 0, cli.output
        expected = json.loads(cli.stdout)
        assert labels[i].decode() == "|".join(expected["labels"])
        assert max(abs(probabilities[i][k] - expected["scores"][label]) for k, label in enumerate(predictor.info.labels)) <= 1e-5


def test_a_json_body_carries_captions_as_text_and_images_as_base64(served, trained):
    images, texts = _pairs(trained, 1)
    body = json.dumps({"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(images[0].read_bytes()).decode()]},
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[0]]},
    ]})
    status, answer = _post(served, "/v2/models/food/infer", body.encode(), {"content-type": "application/json"})
    assert status == 200, answer
    binary = served.client().infer("food", _inputs([images[0].read_bytes()], [texts[0].encode()]))
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    assert np.abs(np.array(outputs["logits"]["data"]) - binary.as_numpy("logits").reshape(-1)).max() <= 1e-6


def test_one_bad_element_fails_its_own_request_with_a_400_never_the_batch_it_joins(served, trained):
    images, texts = _pairs(trained, 3)
    data = [p.read_bytes() for p in images]
    client = served.client(concurrency=5)
    bad_requests = {
        "text[1]: the caption is empty": _inputs(data, [b"ok", b"   ", b"fine"]),
        "text[0]: the caption is not valid UTF-8": _inputs(data[:1], [b"\xff\xfe caption"]),
        "cannot decode image[2]": _inputs([*data[:2], b"not an image"], [t.encode() for t in texts]),
        "`image` and `text` must hold the same number": _inputs(data[:2], [t.encode() for t in texts]),
    }
    # sent together, they fall in one batching window
    good = client.async_infer("food", _inputs(data, [t.encode() for t in texts]))
    bad = {reason: client.async_infer("food", inputs) for reason, inputs in bad_requests.items()}
    assert good.get_result().as_numpy("logits").shape[0] == 3
    for reason, request in bad.items():
        with pytest.raises(InferenceServerException) as caught:
            request.get_result()
        assert caught.value.status() == "400" and reason in caught.value.message(), caught.value.message()
        assert "\n" not in caught.value.message()
    assert client.is_server_ready()
    assert "Traceback" not in served.stderr()


def test_a_body_over_the_limit_is_refused_before_it_is_read(served):
    connection = http.client.HTTPConnection(*served.url.split(":"), timeout=30)
    connection.putrequest("POST", "/v2/models/food/infer")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(200 * 2**20))  # 200 MB announced, none sent
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"limit of 1,048,576 bytes" in response.read()
    chunked = b"x" * (2 * 2**20)  # no Content-Length: refused once past the limit
    status, answer = _post(served, "/v2/models/food/infer", chunked, {"content-type": "application/json", "transfer-encoding": "chunked"}, chunk=True)
    assert status == 413, answer


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none of them."""
    chunks = [b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0]), b"IDAT"]
    return b"\x89PNG\r\n\x1a\n" + b"".join((len(c) - 4).to_bytes(4, "big") + c + zlib.crc32(c).to_bytes(4, "big") for c in chunks)


def _json_request(*inputs: dict, **top: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def _text(data: list, **fields: object) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": [len(data)], "data": data, **fields}


def test_every_malformed_request_is_a_one_line_400_that_does_not_echo_the_body(served, trained):
    image = base64.b64encode(_pairs(trained, 1)[0][0].read_bytes()).decode()
    picture = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [image]}
    huge_name = "x" * 500_000
    cases = {
        "inputs.0.shape": _json_request({**_text(["a"]), "shape": None}, picture),
        "inputs.0.parameters": _json_request(_text(["a"], parameters="x"), picture),
        "inputs.0.name": _json_request({**_text(["a"]), "name": 5}, picture),
        "inputs.0.datatype": _json_request({**_text(["a"]), "datatype": None}, picture),
        "id: Input should be a valid string": _json_request(_text(["a"]), picture, id={"x": 1}),
        "text[0] must be a string; got null": _json_request(_text([None]), picture),
        "text[0] must be a string; got int": _json_request(_text([5]), picture),
        "named once each": _json_request(_text(["a"]), _text(["b"]), picture),
        "has shape [3] (3 elements) but holds 1": _json_request({**_text(["a"]), "shape": [3]}, picture),
        "this server reads at most 256": _json_request({**_text([""] * 300)}, picture),
        "the request's JSON cannot be read": b'{"inputs": [{"name": "text", "data": ["\\ud800"]}',
        "not a v2 inference request": _json_request({**_text(["a"]), "name": huge_name}, picture),
        "text[0]: the caption is empty once cleaned": _json_request(_text(["\u200b\u0000 \u200e"]), picture),
        "image[0] is too large to decode safely: 400,000,000 pixels": _json_request(_text(["a"]), {**picture, "data": [base64.b64encode(_png_header(20_000, 20_000)).decode()]}),
        "cannot decode image[0]: not an image file": _json_request(_text(["a"]), {**picture, "data": [base64.b64encode(b"GIF89a? no").decode()]}),
    }
    for expected, body in cases.items():
        status, answer = _post(served, "/v2/models/food/infer", body, {"content-type": "application/json"})
        assert status == 400 and expected in answer and "\n" not in answer.strip(), (expected, status, answer[:500])
        assert len(answer) < 1000 and huge_name not in answer  # the reason, never the body
    # a binary request whose data holds 200,000 empty captions: read no further than its shape
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 4 * 200_000}}]}).encode()
    status, answer = _post(served, "/v2/models/food/infer", header + bytes(4 * 200_000), {"inference-header-content-length": str(len(header))})
    assert status == 400 and "more elements than its shape says" in answer, answer
    status, answer = _post(served, "/v2/models/food/infer", header, {"inference-header-content-length": "0" * 4400 + "1"})
    assert status == 400 and "Inference-Header-Content-Length must be" in answer, answer
    status, answer = _post(served, "/v2/models//infer", b"{}", {})
    assert status == 404 and json.loads(answer).keys() == {"error"}, answer
    assert _post(served, "/v2/models/food/versions/1/infer", _json_request(_text(["a"]), picture), {})[0] == 404
    assert served.client().is_server_ready()
    assert "Traceback" not in served.stderr()


def test_headers_or_a_body_that_trickle_in_are_cut_off_at_the_read_deadline(served):
    host, port = served.url.split(":")
    silent, partial, slow_body = (socket.create_connection((host, int(port)), timeout=15) for _ in range(3))
    partial.sendall(b"POST /v2/models/food/infer HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the headers
    slow_body.sendall(b"POST /v2/models/food/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    started = time.monotonic()
    assert silent.recv(100) == b"" and partial.recv(100) == b""  # closed by the server (--read-timeout 2)
    assert slow_body.recv(200).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 12
    for connection in (silent, partial, slow_body):
        connection.close()
    assert served.client().is_server_ready()


def test_batching_gathers_clients_and_the_metrics_count_requests_queue_and_batches(served, trained):
    images, texts = _pairs(trained, 1)
    inputs = _inputs([images[0].read_bytes()], [texts[0].encode()])
    client = served.client(concurrency=8)
    results = [r.get_result() for r in [client.async_infer("food-other", inputs) for _ in range(8)]]
    assert all(r.as_numpy("logits").shape[0] == 1 for r in results)
    with pytest.raises(InferenceServerException):
        served.client().infer("food-other", _inputs([images[0].read_bytes()], [b""]))
    metrics = _get(served, "/metrics")
    assert _metric(metrics, 'mitp_requests_total{code="200",model="food-other"}') >= 8
    assert _metric(metrics, 'mitp_requests_total{code="400",model="food-other"}') >= 1
    calls = _metric(metrics, 'mitp_batch_rows_count{model="food-other"}')
    assert 1 <= calls < 8  # eight one-row clients in fewer than eight model calls
    assert _metric(metrics, 'mitp_batch_rows_sum{model="food-other"}') == 8
    assert _metric(metrics, 'mitp_queue_seconds_count{model="food-other"}') == calls
    assert _metric(metrics, 'mitp_inference_seconds_count{model="food-other"}') == calls
    log = served.stderr()
    assert "POST /v2/models/food-other/infer 200" in log and texts[0] not in log  # an access line, never the caption


def test_a_full_queue_answers_503_at_once_and_sigterm_finishes_the_requests_in_flight(trained, tmp_path):
    images, texts = _pairs(trained, 3)
    data, captions = [p.read_bytes() for p in images], [t.encode() for t in texts]
    # a batch of 8 rows, gathered for up to 3 s: two 3-row requests wait in the queue of 8, a third is refused
    server = _start([trained / "bundle"], ["food"], tmp_path / "server.log", "--max-batch-size", "8", "--max-queue", "8", "--max-delay-ms", "3000")
    try:
        client = server.client(concurrency=2)
        waiting = [client.async_infer("food", _inputs(data, captions)) for _ in range(2)]
        time.sleep(0.8)
        started = time.monotonic()
        status, answer, headers = _post_v2(server, data, captions)
        assert status == 503 and "at capacity" in answer and headers.get("retry-after") == "1"
        assert time.monotonic() - started < 1.0
        server.process.send_signal(signal.SIGTERM)  # both requests are still queued, in flight
        assert all(r.get_result().as_numpy("logits").shape[0] == 3 for r in waiting)
        assert server.process.wait(60) == 0, server.stderr()[-3000:]
    finally:
        _stop(server)


def test_nothing_to_serve_and_clashing_names_are_one_line_each(trained, tmp_path):
    broken = _broken_copy(trained / "bundle", tmp_path)
    result = CliRunner().invoke(app, ["serve", str(broken)])
    assert result.exit_code != 0 and "no bundle could be served" in result.output and "fails verification" in result.output
    result = CliRunner().invoke(app, ["serve", str(trained / "bundle"), str(trained / "bundle")])
    assert result.exit_code != 0 and "give each a --name" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        misuse = {
            "gRPC is not served yet": ["--grpc-port", "9001"],
            "the port is in use": ["--port", str(taken.getsockname()[1])],
            "--host is empty": ["--host", ""],
            "not an address or a name of this machine": ["--host", "no-such-host.invalid"],
            "--max-body-mb": ["--max-body-mb", "nan"],
            "--max-batch-size": ["--max-batch-size", "100000"],
            "--max-delay-ms": ["--max-delay-ms", "inf"],
        }
        for expected, options in misuse.items():
            result = CliRunner().invoke(app, ["serve", str(trained / "bundle"), *options])
            assert result.exit_code != 0 and expected in result.output, (options, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), (options, result.exception)


# ---------------------------------------------------------------------------------------------------
# raw HTTP, for what a v2 client cannot send


def _post(served: Served, path: str, body: bytes, headers: dict[str, str], chunk: bool = False) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*served.url.split(":"), timeout=30)
    try:
        connection.request("POST", path, body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunk else body, headers=headers, encode_chunked=chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (413) and closed before the whole body was sent: its answer is still there to read
    response = connection.getresponse()
    return response.status, response.read().decode(errors="replace")


def _post_v2(served: Served, images: list[bytes], texts: list[bytes]) -> tuple[int, str, dict[str, str]]:
    """A binary-extension request, with its response headers."""
    request_body, json_size = httpclient.InferenceServerClient.generate_request_body(_inputs(images, texts))
    connection = http.client.HTTPConnection(*served.url.split(":"), timeout=30)
    connection.request("POST", "/v2/models/food/infer", body=request_body, headers={"Inference-Header-Content-Length": str(json_size)})
    response = connection.getresponse()
    return response.status, response.read().decode(errors="replace"), {k.lower(): v for k, v in response.getheaders()}


def _get(served: Served, path: str) -> str:
    connection = http.client.HTTPConnection(*served.url.split(":"), timeout=30)
    connection.request("GET", path)
    return connection.getresponse().read().decode()


def _metric(text: str, series: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " ")]
    assert values, f"{series} not in /metrics"
    return values[0]
