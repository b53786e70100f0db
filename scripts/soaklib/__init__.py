"""The fault campaign of docs/reliability.md, as a package; `scripts/soak.py` is its
entry point (arguments, main) and `scripts/soak` the wrapper that builds and runs it.

Split by what each part owns, so that a behaviour has one file to point at:

    history.py       the clock (`now`) and the history.jsonl writer
    broker.py        the `weir serve` process: start, kill -9, exits, RSS, log tail
    http_helpers.py  one HTTP request to the broker's API
    rawamqp.py       a raw AMQP 0-9-1 client (hostile frames, crashing consumers)
    topology.py      the queues, exchanges and bindings the load uses
    context.py       `Ctx`, what every campaign thread gets; the body format
    publishers.py    load: AMQP publishers with confirms, HTTP senders
    consumers.py     load: pika, raw AMQP and HTTP consumers
    faults.py        kill -9 schedule, disk full / alarm, probes, RSS samples
    hostile.py       malformed and hostile AMQP and HTTP input
    checker.py       the history checker (the rules)
    report.py        the summary text
    selftest.py      the checker against planted violations
    campaign.py      one run: set-up, load plan, faults, drain, check, exit code

Each module imports only modules above it in this list. The checker reads only the
history and topology, so `--check-only` and `--self-test` need neither pika nor a
broker: the package is standard library only, and pika is imported inside the
functions that use it.
"""
