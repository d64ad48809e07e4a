"""The lock-free request-path metrics expose exactly what prometheus_client's would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.runtime.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 10)


def _exposition(registry: CollectorRegistry) -> list[str]:
    """The scrape text without the `_created` series (timestamps; not kept here)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def _feed(counter, gauge, histogram) -> None:
    for method, code in (("/a", "OK"), ("/a", "OK"), ("/b", "NOT_FOUND")):
        counter.labels(method, code).inc()
    counter.labels("/b", "NOT_FOUND").inc(2.5)
    gauge.inc()
    gauge.inc(3)
    gauge.dec()
    # on a bound (le is inclusive), between bounds, above the last one, and zero
    for value in (0.001, 0.0005, 0.05, 0.1, 7, 12, 0.0):
        histogram.labels("/a").observe(value)
    histogram.labels("/b").observe(0.2)


def test_exposition_matches_prometheus_client():
    reference, ours = CollectorRegistry(), CollectorRegistry()
    _feed(
        Counter("rpc_requests", "RPCs.", ["method", "code"], registry=reference),
        Gauge("rpc_in_flight", "In flight.", registry=reference),
        Histogram("rpc_seconds", "Time.", ["method"], buckets=BUCKETS, registry=reference),
    )
    _feed(
        LoopCounter("rpc_requests", "RPCs.", ["method", "code"], registry=ours),
        LoopGauge("rpc_in_flight", "In flight.", registry=ours),
        LoopHistogram("rpc_seconds", "Time.", ["method"], buckets=BUCKETS, registry=ours),
    )
    assert _exposition(ours) == _exposition(reference)
    assert ours.get_sample_value("rpc_seconds_bucket", {"method": "/a", "le": "0.001"}) == 3
    assert ours.get_sample_value("rpc_requests_total", {"method": "/b", "code": "NOT_FOUND"}) == 3.5


def test_wrong_label_count_and_unsorted_buckets_are_refused():
    registry = CollectorRegistry()
    counter = LoopCounter("calls", "Calls.", ["method"], registry=registry)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("/a", "extra")
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "H.", buckets=(1, 0.5), registry=registry)


def test_a_name_already_taken_in_the_registry_is_refused():
    registry = CollectorRegistry()
    Counter("calls", "Calls.", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        LoopCounter("calls", "Calls.", registry=registry)
