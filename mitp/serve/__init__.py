"""Serving bundles over the network: `mitp serve` (the `serve` extra; torch-free).

    batcher     dynamic batching: a bounded queue, one onnxruntime call per gathered batch
    connections a deadline on each request's headers
    model       one bundle as a KServe model: v2 tensors in and out, verified and warmed up before ready
    guard       the HTTP server's outermost layer: body limit and deadline, request counts, access log
    metrics     the Prometheus collectors beside KServe's own
    protocol    requests read and checked whole (one-line 400s), BYTES kept as bytes
    server      KServe's model server with mitp's host, limits and shutdown
"""

import sys

# KServe parses the process's command line when it is first imported; mitp's own options are not its.
_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve  # noqa: F401
finally:
    sys.argv = _argv
