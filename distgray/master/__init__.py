"""The built-in cluster: the books and every state change (``cluster``), the threads and sockets that
carry them out (``server``), and what the page and the report read of them.
"""
