"""Services the host performs for handlers (host calls): key-value store, request templates,
schedules, webhook targets; and the installations they are scoped to.

Each service is a small module with one interface and its backends beside it. A service
never trusts what a handler sends: the engine checks each call frame's shape
(runtime.hostcalls) before a service sees it, and the service checks the arguments' values and
its own limits. Scope (which installation a call acts for) comes from the worker's binding in
the host, never from the frame.
"""
