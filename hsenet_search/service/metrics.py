"""Prometheus metrics of one app: requests, latency per endpoint, and where the work time goes."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """A private registry (one per app, so tests and several apps in one process do not collide)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hsenet_requests", "HTTP requests", ("endpoint", "method", "status"), registry=self.registry
        )
        self.latency = Histogram(
            "hsenet_request_seconds",
            "Request latency",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.work = Histogram(
            "hsenet_work_seconds",
            "Time inside the worker pool by stage (encode_text, encode_volume, faiss, render, draft, upload)",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "hsenet_rejected", "Requests answered 503 because the pool was full", registry=self.registry
        )
        self.in_flight = Gauge(
            "hsenet_jobs_in_flight", "Jobs running or waiting in the worker pool", registry=self.registry
        )

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.work.labels(stage).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)
