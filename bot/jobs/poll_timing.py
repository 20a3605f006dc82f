"""When to poll a task: learnt from how long this kind of task took recently.

A follower that polls on a fixed schedule notices a finished task up to one poll interval
late, and polls more the longer the model takes. Here each *class* of task (provider key,
model, output size, references) keeps what its recent tasks showed: "not ready when polled at
`lo`, ready when polled at `hi`" (seconds since the submit's answer; interval-censored, as a
poll only ever tells whether the task has ended yet). From these:

* ``early``, the earliest recent `hi` (a time by which some recent task was surely ready), and
* ``late``, the latest recent `lo` (a time at which some recent task was surely not ready).

For a model whose latency is nearly fixed, ``late < early`` and the true time lies between: new
jobs place their first poll at a different point of that gap each (a low-discrepancy sequence,
so one wave of concurrent jobs narrows it many times over), and once it is tight every job
polls once, at ``early``. For a noisy one ``early <= late`` spans the spread: the first poll
goes at ``early`` and two follow-ups cover the spread. Past the plan the follower falls back
to the usual growing schedule (bot/jobs/following.py), which also covers a model that became
slower; every few jobs a probe polls a little before ``early`` so that a model that became
faster is noticed (a ready probe moves ``early`` down, and the next probe goes twice as far).

Per process, in memory, bounded: two small rings per class and a bounded number of classes
(the least recently used is forgotten). A class with no history gets no plan: the caller
polls as it always did.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bot.jobs.models import Job

_T = TypeVar("_T")

# Recent samples kept per class (each ring); older ones are overwritten: recent samples win.
RING = 12
# A lower bound older than this many observations of its class no longer counts.
LOWER_BOUND_AGE = 2 * RING
# Classes remembered per process; the least recently used one is forgotten first.
MAX_CLASSES = 64
# Below this gap between "surely not ready" and "surely ready" the timing is known.
TIGHT = 0.04
# Spacing of the follow-up polls after the first one.
FOLLOW_UP_MIN = 0.05
FOLLOW_UP_MAX = 1.0
# Every PROBE_EVERY-th job of a settled class polls first PROBE_MIN before `early`; while
# probes keep finding the task ready, every other job probes, four times as far each time.
PROBE_EVERY = 8
PROBE_MIN = 0.03
# The golden ratio's fractional part: successive multiples spread evenly over (0, 1).
_SPREAD = 0.6180339887498949


@dataclass(frozen=True, slots=True)
class PollPlan:
    """The polls to make, in seconds since the submit's answer (increasing); after the last
    one the caller continues with its usual growing schedule."""

    offsets: tuple[float, ...]
    # How far before `early` the first poll looks for a model that became faster (0: it
    # does not).
    probe: float = 0.0


class ClassTiming:
    """What one class of task showed recently. Pure: no clock, no I/O."""

    __slots__ = ("_his", "_jobs", "_lo_count", "_lo_seen", "_los", "_probe_reach", "_seen")

    def __init__(self) -> None:
        self._his: list[float] = []  # ring of `hi` (a poll that saw the task ready)
        self._los: list[float] = []  # ring of `lo` (the last poll that saw it not ready)
        self._lo_seen: list[int] = []  # the observation number of each `lo`
        self._lo_count = 0  # lower bounds so far
        self._seen = 0  # observations so far
        self._jobs = 0  # plans given so far
        self._probe_reach = PROBE_MIN

    def early(self) -> float | None:
        return min(self._his) if self._his else None

    def late(self) -> float | None:
        oldest = self._seen - LOWER_BOUND_AGE
        los = [lo for lo, seen in zip(self._los, self._lo_seen, strict=True) if seen > oldest]
        return max(los) if los else None

    def plan(self) -> PollPlan | None:
        early = self.early()
        if early is None:
            return None  # no history: the caller polls as it always did
        self._jobs += 1
        late = self.late()
        if late is not None and late >= early:
            # Noisy: recent tasks ended anywhere from `early` to `late` (and beyond).
            step = min(FOLLOW_UP_MAX, max(FOLLOW_UP_MIN, (late - early) / 2))
            return PollPlan((early, early + step, early + 2 * step))
        if late is not None and early - late > TIGHT:
            # Nearly fixed but not yet known closely: look at a new point of the gap.
            fraction = (self._jobs * _SPREAD) % 1.0
            probe = late + (early - late) * max(0.05, fraction)
            return PollPlan((probe, early, early + FOLLOW_UP_MIN))
        every = PROBE_EVERY if self._probe_reach <= PROBE_MIN else 2
        reach = min(self._probe_reach, early / 2)  # never before half the known time
        if self._jobs % every == 0 and reach >= PROBE_MIN / 2:
            return PollPlan((early - reach, early, early + FOLLOW_UP_MIN), probe=reach)
        return PollPlan((early, early + FOLLOW_UP_MIN, early + 2 * FOLLOW_UP_MIN))

    def observe(self, lo: float | None, hi: float, *, probe: float = 0.0) -> None:
        """A task of this class was not ready when polled at `lo` (None: no poll saw it
        unfinished) and ready when polled at `hi`; `probe`: its plan's."""
        slot = self._seen % RING
        self._seen += 1
        _put(self._his, slot, hi)
        if lo is not None:
            index = self._lo_count % RING
            self._lo_count += 1
            _put(self._los, index, lo)
            _put(self._lo_seen, index, self._seen)
        if probe and lo is None:
            # A ready probe: the model became faster. Lower bounds past it are stale, and it
            # may be faster still, so the next probe looks further.
            for index, stale in enumerate(self._los):
                if stale >= hi:
                    self._lo_seen[index] = -LOWER_BOUND_AGE
            self._probe_reach = max(self._probe_reach, probe * 4)
        elif probe:
            self._probe_reach = PROBE_MIN


def _put(ring: list[_T], index: int, value: _T) -> None:
    if index < len(ring):
        ring[index] = value
    else:
        ring.append(value)


class PollTiming:
    """The timing of every class this process has seen recently."""

    def __init__(self, max_classes: int = MAX_CLASSES) -> None:
        self._classes: OrderedDict[Hashable, ClassTiming] = OrderedDict()
        self._max_classes = max_classes

    def __len__(self) -> int:
        return len(self._classes)

    def plan(self, key: Hashable) -> PollPlan | None:
        timing = self._classes.get(key)
        if timing is None:
            return None
        self._classes.move_to_end(key)
        return timing.plan()

    def observe(self, key: Hashable, lo: float | None, hi: float, *, probe: float = 0.0) -> None:
        timing = self._classes.get(key)
        if timing is None:
            timing = self._classes[key] = ClassTiming()
            while len(self._classes) > self._max_classes:
                self._classes.popitem(last=False)
        else:
            self._classes.move_to_end(key)
        timing.observe(lo, hi, probe=probe)


def timing_class(job: Job) -> Hashable:
    """The tasks expected to take about as long as `job`'s: same key (its account's queue and
    hardware), model, output size (in half-megapixel steps; the model's default size counts
    apart), references and images."""
    width, height = job.params.width, job.params.height
    size = 0 if width is None or height is None else max(1, round(width * height / 500_000))
    images = job.params.options.get("num_images") or 1
    return (job.provider_key or job.provider, job.variant, size, job.reference_count, images)
