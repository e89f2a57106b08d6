"""The deadline rule: an app's request timeout decides its execution timeout; no untrusted input."""

from __future__ import annotations

import math

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.validation import short

VALID_REQUEST_TIMEOUTS = (15, 20, 25, 30)
"""Request timeouts an app may declare, in seconds; 15 is the default."""


def execution_timeout(request_timeout: int | float | None = None,
                      override: float | None = None) -> float:
    """The execution timeout in seconds: 20 when the request timeout is unset or 15, 40 when
    it is 20, 25 or 30; any other request timeout is a ConfigError. A positive `override`
    (operators, tests, benchmarks) wins over the rule."""
    if request_timeout is None or request_timeout == 15:
        limit = 20.0
    elif request_timeout in (20, 25, 30):
        limit = 40.0
    else:
        raise ConfigError("request timeout must be 15 (default), 20, 25 or 30 seconds; "
                          f"got {short(request_timeout)}")
    if override is None:
        return limit
    if (isinstance(override, bool) or not isinstance(override, (int, float))
            or not math.isfinite(override) or override <= 0):
        raise ConfigError("timeout override must be a positive number of seconds; "
                          f"got {short(override)}")
    return float(override)
