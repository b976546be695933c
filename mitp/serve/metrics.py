"""Prometheus metrics of the served models, beside KServe's own, at `/metrics` on the serving port.

    mitp_requests_total{model, code}        every request to a model's routes, by HTTP status
    mitp_queue_seconds{model}               how long a batch's oldest request waited for the model
    mitp_batch_rows{model}                  rows per onnxruntime call (how well batching gathers)
    mitp_inference_seconds{model}           one onnxruntime call
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """The collectors, registered once per registry (KServe's /metrics reads the default one)."""

    _by_registry: dict[int, ServeMetrics] = {}

    def __new__(cls, registry: CollectorRegistry = REGISTRY) -> ServeMetrics:
        if id(registry) not in cls._by_registry:
            metrics = super().__new__(cls)
            metrics.requests = Counter("mitp_requests", "Requests to a model's routes, by HTTP status", ["model", "code"], registry=registry)
            metrics.queue = Histogram("mitp_queue_seconds", "Wait of a batch's oldest request", ["model"], buckets=SECONDS_BUCKETS, registry=registry)
            metrics.batch = Histogram("mitp_batch_rows", "Rows per onnxruntime call", ["model"], buckets=BATCH_BUCKETS, registry=registry)
            metrics.inference = Histogram("mitp_inference_seconds", "One onnxruntime call", ["model"], buckets=SECONDS_BUCKETS, registry=registry)
            cls._by_registry[id(registry)] = metrics
        return cls._by_registry[id(registry)]

    requests: Counter
    queue: Histogram
    batch: Histogram
    inference: Histogram

    def observer(self, model: str) -> Callable[[float, int, float], None]:
        """What the batcher calls after each model call: (seconds queued, rows, seconds in the model)."""
        queue, batch, inference = self.queue.labels(model), self.batch.labels(model), self.inference.labels(model)

        def observe(queued: float, rows: int, seconds: float) -> None:
            queue.observe(queued)
            batch.observe(rows)
            inference.observe(seconds)

        return observe
