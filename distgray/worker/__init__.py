"""The worker: connect, authenticate, convert tasks, reconnect."""
