"""The queues, exchanges and bindings the load uses.

One place, because two parts read them: the campaign declares them and routes its
publishers by them (campaign.py), and the checker falls back on them for a history
that does not list them (checker.py). `DEAD_LETTER` maps a queue to its dead-letter
queue; `UNTRACKED` queues are not followed message by message.
"""

# Queues and exchanges the load uses. `route` maps a publish to the queues it must reach.
QUEUES = {
    "soak.work": {},
    "soak.fan.a": {},
    "soak.fan.b": {},
    "soak.fan.c": {},
    "soak.top.all": {},
    "soak.top.even": {},
    "soak.dl": {"dead_letter_queue": "soak.dl.dead"},
    "soak.dl.dead": {},
    "soak.group": {},
    "soak.slow": {},
}
DEAD_LETTER = {"soak.dl": "soak.dl.dead"}
EXCHANGES = {"soak.fanout": "fanout", "soak.topic": "topic"}
BINDINGS = [
    ("soak.fanout", "soak.fan.a", ""),
    ("soak.fanout", "soak.fan.b", ""),
    ("soak.fanout", "soak.fan.c", ""),
    ("soak.topic", "soak.top.all", "#"),
    ("soak.topic", "soak.top.even", "*.even"),
]
FAN_QUEUES = ["soak.fan.a", "soak.fan.b", "soak.fan.c"]
# Queues whose messages are not followed one by one (the non-reading consumer's backlog:
# it consumes with auto-ack, so the broker may drop what it sent).
UNTRACKED = {"soak.slow"}
