"""The broker on Redis: one server or a Redis Cluster (history, delivery, presence and idempotency records on
one set of connections, `client.RedisShards`)."""
