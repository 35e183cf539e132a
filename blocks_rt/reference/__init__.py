"""The reference business services: an example backend (wallets, investments, rewards) that publishes to the bus.

Not part of the gateway's runtime contract: `serve` and `demo` use it so the gateway has something to show with
no configuration; a real deployment's backend publishes through the publish API or the outbox instead.
"""
