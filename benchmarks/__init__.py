"""handlerbox benchmarks: small programs, one question each, JSON out plus a table."""
