"""What one run of the dataflow needs to know.

The user's settings are the ``[flow]`` and ``[media]`` sections of ``shoal.options`` as they
are: the dataflow reads them where it acts (``cfg.flow.lateness``, ``cfg.media.throttle`` via
``cfg.fetch``), so a setting declared there reaches the flow without any mapping in between.
The other fields are what only this run knows (replay bounds, the collectors' end, the
sealed-hour callback) or knobs for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from threading import Event

from connectors.kafka.publisher import POSTS_TOPIC
from shoal.fetch.policy import FetchConfig, fetch_config
from shoal.merge import HourSummary
from shoal.options import FlowSettings, MediaSettings


@dataclass
class FlowConfig:
    data_dir: Path
    brokers: str
    flow: FlowSettings = field(default_factory=FlowSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    fetch: FetchConfig | None = None  # the engine's; made from ``media`` when not given
    topic: str = POSTS_TOPIC  # [kafka] topic
    deadletter_topic: bool = True  # [kafka] deadletter_topic
    producers_done: Event | None = None
    flush_interval: float = 1.0
    chunk_rows: int = 50_000
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    from_time: datetime | None = None
    until_time: datetime | None = None
    partitions: int = 0  # of the topic; filled in by build_flow
    cluster_workers: int = 1  # workers of every process of the cluster; filled in by run
    stage_keys: dict[int, str] = field(default_factory=dict)  # per partition; by build_flow
    on_sealed: Callable[[HourSummary], None] | None = None
    # A sealed hour is redone at most this often (late posts, fetched media), and never
    # sooner than ten times the CPU its last seal took (flows.seal.RESEAL_COST_FACTOR).
    reseal_interval: float = 10.0
    # Posts the stage remembers per partition to spot copies it already wrote (an
    # optimisation, flows.stage): about 200 bytes each, so memory does not grow with the
    # stream's rate times its open hours.
    seen_posts: int = 100_000

    def __post_init__(self) -> None:
        if self.fetch is None:
            self.fetch = fetch_config(self.media)
