"""The only socket code: framed channels (``recv_into``), the HMAC handshake, and shared memory for
pixels by reference.
"""
