"""When a schedule's slots fall: croniter for cron expressions, a fixed grid for intervals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

# Counting the slots a long downtime missed stops here: the count is then "at least".
MAX_COUNTED = 10_000


@dataclass(frozen=True)
class Due:
    """The slots from a schedule's next one up to now: how many, the last, the one before."""

    count: int
    last: datetime
    before_last: datetime | None
    capped: bool = False


@dataclass(frozen=True)
class Timing:
    cron: str = ""
    timezone: str = "UTC"
    every_s: int | None = None

    def first_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment` (a new or resumed schedule's next one).

        An interval's grid starts at `moment`: its first slot is one interval later.
        """
        if self.every_s is not None:
            return moment + timedelta(seconds=self.every_s)
        return self._cron_next(moment)

    def following(self, slot: datetime, now: datetime) -> datetime:
        """The first slot after `now` on the grid `slot` is on."""
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            behind = max(0, int((now - slot) / step))
            found = slot + behind * step
            while found <= now:
                found += step
            return found
        return self._cron_next(now)

    def due(self, first: datetime, now: datetime) -> Due:
        """The slots from `first` (itself a slot, due: `first <= now`) up to `now`."""
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            count = int((now - first) / step) + 1
            last = first + (count - 1) * step
            return Due(count, last, last - step if count > 1 else None)
        count, last, before = 1, first, None
        walker = croniter(self.cron, first.astimezone(self._zone()))
        while count < MAX_COUNTED:
            slot = walker.get_next(datetime).astimezone(UTC)
            if slot > now:
                return Due(count, last, before)
            count, last, before = count + 1, slot, last
        return Due(count, last, before, capped=True)

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    def _cron_next(self, moment: datetime) -> datetime:
        # croniter steps in the schedule's own zone (so "0 2 * * *" is 02:00 there, across
        # daylight saving changes); the slot is kept in UTC.
        found: datetime = croniter(self.cron, moment.astimezone(self._zone())).get_next(datetime)
        return found.astimezone(UTC)
