"""GET /metrics: engine gauges, token counters and histograms in Prometheus text.

Each app owns its `CollectorRegistry` (several apps live in one test process). Counters are
totals the engine keeps, so they are read, not incremented here; the histograms are fed
from `EngineStats.batch_sizes` / `time_to_first_token`, which drain on each read.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from glm_api.engine.protocol import EngineClient, EngineStats

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _TokenTotals(Collector):
    """Counters whose values are the engine's own running totals."""

    def __init__(self) -> None:
        self.stats = EngineStats()

    def collect(self) -> Iterator[Metric]:
        prompt = CounterMetricFamily("glm_api_prompt_tokens", "Prompt tokens processed")
        prompt.add_metric([], self.stats.num_prompt_tokens_total)
        generated = CounterMetricFamily("glm_api_generation_tokens", "Tokens generated")
        generated.add_metric([], self.stats.num_generation_tokens_total)
        steps = CounterMetricFamily("glm_api_engine_steps", "Engine steps run")
        steps.add_metric([], self.stats.num_steps_total)
        yield from (prompt, generated, steps)


class Metrics:
    def __init__(self, engine: EngineClient | None):
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.running = Gauge("glm_api_requests_running", "Requests being decoded", registry=r)
        self.waiting = Gauge("glm_api_requests_waiting", "Requests queued", registry=r)
        self.kv_usage = Gauge("glm_api_kv_cache_usage_ratio", "KV cache in use, 0..1", registry=r)
        self.batch_size = Histogram(
            "glm_api_batch_size", "Requests per engine step", buckets=BATCH_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "glm_api_time_to_first_token_seconds",
            "Seconds from arrival to the first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.totals = _TokenTotals()
        r.register(self.totals)

    def render(self) -> bytes:
        if self.engine is not None:
            self._update(self.engine.stats())
        return generate_latest(self.registry)

    def _update(self, stats: EngineStats) -> None:
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
        self.kv_usage.set(stats.kv_cache_usage)
        for size in stats.batch_sizes:
            self.batch_size.observe(size)
        for seconds in stats.time_to_first_token:
            self.ttft.observe(seconds)
        self.totals.stats = stats
