"""Prometheus metrics of one engine, with vLLM's names under the `kernelforge:` prefix.

Each engine gets its own `CollectorRegistry` (several engines can live in one process,
as in the tests); the server exports `engine.metrics.registry` at `/metrics`. Counters
are declared without the `_total` suffix, which prometheus_client appends on export, so
`prompt_tokens` is scraped as `kernelforge:prompt_tokens_total`, as in vLLM.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "kernelforge:"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                    50.0, 60.0, 120.0, 240.0, 480.0, 960.0)


class EngineMetrics:
    """The engine's gauges, counters and histograms, labelled with the model name."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        labels = ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=self.registry).labels(model_name)

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=self.registry).labels(model_name)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets,
                             registry=self.registry).labels(model_name)

        self.num_requests_running = gauge("num_requests_running", "Requests with a sequence in the model's batch.")
        self.num_requests_waiting = gauge("num_requests_waiting", "Requests waiting to be processed (queued or preempted).")
        self.kv_cache_usage_perc = gauge("kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.")
        self.gpu_cache_usage_perc = gauge("gpu_cache_usage_perc", "Alias of kv_cache_usage_perc (vLLM v0 name).")
        self.num_preemptions = counter("num_preemptions", "Cumulative number of preemptions.")
        self.prefix_cache_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_cache_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.prompt_tokens = counter("prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Number of generation tokens processed.")
        self._request_success = Counter(PREFIX + "request_success", "Count of successfully processed requests.",
                                        ["model_name", "finished_reason"], registry=self.registry)
        self.time_to_first_token = histogram("time_to_first_token_seconds", "Time to first token in seconds.",
                                             _LATENCY_BUCKETS)
        self.inter_token_latency = histogram("inter_token_latency_seconds", "Time between output tokens.",
                                             _LATENCY_BUCKETS)
        self.e2e_request_latency = histogram("e2e_request_latency_seconds", "End-to-end request latency.",
                                             _REQUEST_BUCKETS)
        self._model_name = model_name

    def request_success(self, finished_reason: str) -> None:
        self._request_success.labels(self._model_name, finished_reason).inc()

    def set_queue(self, running: int, waiting: int, kv_usage: float) -> None:
        self.num_requests_running.set(running)
        self.num_requests_waiting.set(waiting)
        self.kv_cache_usage_perc.set(kv_usage)
        self.gpu_cache_usage_perc.set(kv_usage)
