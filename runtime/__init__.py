"""handlerbox.runtime: apps, pooled sandboxed workers, deadlines, the Engine and the CLI.

The public API is re-exported by `handlerbox` itself. Nothing is imported here: worker
processes import `handlerbox.runtime.worker` and must never load pydantic.
"""
