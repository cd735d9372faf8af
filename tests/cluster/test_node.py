"""Node identity, components and the single-node guard (evota.cluster.node), and the settings
that refuse a cluster on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from evota.cluster import redis as cluster_redis
from evota.cluster.node import AlreadyRunning, Node, parse_components, single_node_lock
from evota.config import Settings


def test_components_parse_and_name_the_unknown_one() -> None:
    assert parse_components("ocpp, http") == {"ocpp", "http"}
    with pytest.raises(ValueError, match="'gateway'"):
        parse_components("ocpp,gateway")
    with pytest.raises(ValueError, match="at least one"):
        parse_components(" , ")


def test_each_start_is_a_new_incarnation() -> None:
    a, b = Node.start("n1"), Node.start("n1")
    assert a.name == b.name == "n1"
    assert a.key != b.key


def test_redis_on_sqlite_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="several nodes need PostgreSQL"):
        Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    ok = Settings(
        data_dir=tmp_path,
        database_url="postgresql+asyncpg://evota@127.0.0.1/evota",
        redis_url="redis://127.0.0.1:6379/0",
    )
    assert ok.redis_url is not None
    with pytest.raises(ValidationError, match="redis://"):
        Settings(
            data_dir=tmp_path,
            database_url="postgresql+asyncpg://evota@127.0.0.1/evota",
            redis_url="http://127.0.0.1:6379",
        )


def test_a_second_node_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "evota.db"
    first = single_node_lock(db)
    with pytest.raises(AlreadyRunning, match="several nodes need PostgreSQL"):
        single_node_lock(db)
    first.close()  # the first node ends: the next may start
    single_node_lock(db).close()


async def test_the_redis_fixture_is_a_real_empty_redis(redis_url: str) -> None:
    client: Redis = cluster_redis.connect(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set(cluster_redis.key("probe"), b"1")
        assert await client.get("evota:probe") == b"1"
    finally:
        await client.aclose()
