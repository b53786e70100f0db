"""A pika consumer an operator closes (issue 22's Connections page), against the
broker on 127.0.0.1:$WEIR_AMQP_PORT:

    python closed_by_operator.py

Connects with a connection name, opens a channel with prefetch 7, consumes from
queue `held` and prints READY; then waits until the broker closes the connection
and prints `CLOSED <code> <text>` (exit 0), or prints what went wrong (exit 1).
Driven by crates/weir/tests/it/connections.rs. Holds against RabbitMQ 3.10 too,
closed from its management API.
"""
import os
import sys
import time

import pika
from pika.exceptions import ConnectionClosedByBroker

PORT = int(os.environ["WEIR_AMQP_PORT"])

params = pika.ConnectionParameters(
    "127.0.0.1",
    PORT,
    client_properties={"connection_name": "orders-worker"},
)
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.basic_qos(prefetch_count=7)
channel.queue_declare("held")
channel.basic_consume("held", lambda ch, method, props, body: None)
print("READY", flush=True)
deadline = time.monotonic() + 60
try:
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
except ConnectionClosedByBroker as closed:
    print(f"CLOSED {closed.reply_code} {closed.reply_text}", flush=True)
    sys.exit(0)
print("FAILED: the broker did not close the connection within 60 s", flush=True)
sys.exit(1)
