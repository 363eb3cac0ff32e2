"""berth's wire: the msgpack protocol, the broker, the client library and subscriptions."""
