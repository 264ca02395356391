"""The status page: ``create_app(board)`` over a small JobBoard, its JSON API, /metrics, and its server."""
