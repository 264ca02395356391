"""An image or a folder from source to sink through an engine: the queue and history (the page's
board), one conversion end to end, batches, reports.
"""
