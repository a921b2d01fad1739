"""The session manager: one aioboto3 session, long-lived pooled DynamoDB and S3 clients.

Clients are opened once (creating one costs 1.4 to 74 ms) and share an aiohttp
connection pool each, sized by ``StoreConfig.max_pool_connections``.
"""

from __future__ import annotations

import platform
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aioboto3
import aiobotocore
import botocore
from aiobotocore.config import AioConfig

from ..._config import StoreConfig
from .errors import translate_errors
from .wire import fast_dynamodb

__all__ = ["AwsClients", "client_config", "open_clients"]

# AWS closes idle connections after about 20 s; a pooled connection idle for longer
# than this is dropped by the client first, so a request never meets a dead socket.
KEEPALIVE_SECONDS = 12
USER_AGENT_EXTRA = "eventstore-async/0.1"
# botocore rebuilds its User-Agent string (platform, features used, config) twice per
# call unless one is configured: a fixed one saves ~20% of an append's CPU (measured,
# README "Benchmarks"), on the stock client and on every S3 call too.
USER_AGENT = (
    f"aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__} "
    f"lang/python#{platform.python_version()} md/pyimpl#{platform.python_implementation()}"
)


@dataclass(frozen=True, slots=True)
class AwsClients:
    dynamodb: Any
    s3: Any


def client_config(config: StoreConfig, *, s3: bool = False) -> AioConfig:
    """The botocore settings of every client, all explicit."""
    options: dict[str, Any] = {
        "region_name": config.region_name,
        "max_pool_connections": config.max_pool_connections,
        "connect_timeout": config.connect_timeout,
        "read_timeout": config.read_timeout,
        # "standard" retries throttling and transient errors with backoff; a request
        # is re-sent unchanged, so a retried TransactWriteItems keeps its token.
        "retries": {"mode": "standard", "total_max_attempts": config.max_attempts},
        "tcp_keepalive": True,
        "user_agent": USER_AGENT,
        "user_agent_extra": USER_AGENT_EXTRA,
        # Requests are built by this library from validated input; botocore's own
        # validation would cost ~30 us a call.
        "parameter_validation": False,
        "connector_args": {"keepalive_timeout": KEEPALIVE_SECONDS},
    }
    if s3:
        # Path-style works with every endpoint (virtual hosts fail on 127.0.0.1).
        options["s3"] = {"addressing_style": "path"}
    return AioConfig(**options)


def _client_kwargs(config: StoreConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"verify": config.verify_tls}
    if config.endpoint_url is not None:
        kwargs["endpoint_url"] = config.endpoint_url
    return kwargs


async def open_clients(config: StoreConfig, stack: AsyncExitStack) -> AwsClients:
    """Open both clients; the stack closes them."""
    session = aioboto3.Session(
        aws_access_key_id=config.aws_access_key_id,
        aws_secret_access_key=config.aws_secret_access_key,
        aws_session_token=config.aws_session_token,
        region_name=config.region_name,
    )
    kwargs = _client_kwargs(config)
    with translate_errors("CreateClient"):
        dynamodb = await stack.enter_async_context(
            session.client("dynamodb", config=client_config(config), **kwargs)
        )
        s3 = await stack.enter_async_context(
            session.client("s3", config=client_config(config, s3=True), **kwargs)
        )
        if config.fast_path:
            dynamodb = await fast_dynamodb(dynamodb, stack)
    return AwsClients(dynamodb=dynamodb, s3=s3)
