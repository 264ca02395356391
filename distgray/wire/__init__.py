"""The wire protocol, sans-IO: frames, fields, control messages, strip and file messages.

No sockets, clocks or threads; callers import ``distgray.wire.protocol`` (as ``P``). Layouts: docs/PROTOCOL.md.
"""
