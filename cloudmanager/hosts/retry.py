"""Where the host kinds' retry policy used to live: it is :mod:`cloudmanager.retry` now
(the node client, which is no host, uses it too); kept so that old imports work."""

from ..retry import RetryPolicy, retry_after

__all__ = ["RetryPolicy", "retry_after"]
