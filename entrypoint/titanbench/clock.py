"""Wall-clock time as titanbench writes it: UTC, to the second (records, manifests, run ids)."""

from datetime import datetime, timezone


def utc_now() -> str:
    """An ISO 8601 timestamp for records: `2025-06-13T10:00:00+00:00`."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_id_now() -> str:
    """The default run id: `20250613T100000Z` (sorts by time, one path component)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
