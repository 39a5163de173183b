"""Polite, safe media downloading: the rules live here, the engine in ``connectors.fetch.engine``.

Keeping the rules pure lets the engine, the ``shoal fetch`` command and the dataflow share
one definition of what may be fetched, how fast, and where it lands.
"""

from shoal.fetch.policy import (
    FetchConfig,
    FetchResult,
    backoff_delay,
    budget_key,
    check_url,
    classify_ip,
    key_for,
    parse_retry_after,
    politeness_bound,
    sniff_type,
    storage_path,
)

__all__ = [
    "FetchConfig",
    "FetchResult",
    "backoff_delay",
    "budget_key",
    "check_url",
    "classify_ip",
    "key_for",
    "parse_retry_after",
    "politeness_bound",
    "sniff_type",
    "storage_path",
]
