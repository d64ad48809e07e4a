"""Counters, gauges and histograms for the request path, updated without locks.

A `prometheus_client` child takes a lock on every update, and a histogram
walks its buckets in Python and checks exemplars: about 1.2 us per observe,
and a served request makes seven updates (measured on the inference path with
an instant backend: 24.2 us per request, 19.4 us without the engine's four).
On a `grpc.aio` server the request path runs on one thread, the event loop's,
so these keep plain numbers and answer `prometheus_client`'s registry through
`collect()` at scrape time. Names, labels, buckets and exposition are those a
`prometheus_client` metric with the same arguments would have, less the
`_created` series.

Update them only from the event loop's thread. The scrape runs on the metrics
endpoint's thread and may read one child's count a step ahead of its sum;
a monitoring scrape tolerates that, a lost update would not be (and cannot
happen with one writing thread).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_Child = TypeVar("_Child")
_FamilyT = TypeVar("_FamilyT", CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
_ScalarFamily = TypeVar("_ScalarFamily", CounterMetricFamily, GaugeMetricFamily)


class LoopMetric(Collector, Generic[_Child, _FamilyT]):
    """Children by label values, registered in `registry` as one collector."""

    #: A suffix the exposition adds itself, dropped from a name given with it.
    _added_suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name.removesuffix(self._added_suffix) if self._added_suffix else name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        if not self._labelnames:
            self._children[()] = self._new_child()
        registry.register(self)

    def labels(self, *values: str) -> _Child:
        """The child for these label values (made on first use)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
            child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> _FamilyT:
        raise NotImplementedError


class _Count:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _ScalarMetric(LoopMetric[_Count, _ScalarFamily]):
    """A metric whose children each hold one number."""

    def _new_child(self) -> _Count:
        return _Count()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class LoopCounter(_ScalarMetric[CounterMetricFamily]):
    """A counter (exposed as `<name>_total`); children have `inc(amount=1)`."""

    _added_suffix = "_total"

    def inc(self, amount: float = 1.0) -> None:
        """For a counter without labels."""
        self._children[()].inc(amount)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)


class LoopGauge(_ScalarMetric[GaugeMetricFamily]):
    """A gauge; it and its children have `inc`, `dec` and `set`."""

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._children[()].dec(amount)

    def set(self, value: float) -> None:
        self._children[()].set(value)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._documentation, labels=self._labelnames)


class _Buckets:
    """One histogram child: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1  # le: amount <= bound
        self.sum += amount


class LoopHistogram(LoopMetric[_Buckets, HistogramMetricFamily]):
    """A histogram with fixed upper bounds (`le`, +Inf added); children have `observe`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing, got {buckets}")
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry=registry)

    def observe(self, amount: float) -> None:
        self._children[()].observe(amount)

    def _new_child(self) -> _Buckets:
        return _Buckets(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            total_sum = child.sum
            cumulative, running = [], 0
            for le, count in zip(self._le, list(child.counts), strict=True):
                running += count
                cumulative.append((le, running))
            family.add_metric(values, cumulative, total_sum)
        yield family
