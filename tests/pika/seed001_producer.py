# Seed 001's producer, unmodified except for the address (the broker's test port).
import os
# Producer - Sends messages to queue
import pika
import json
connection = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', int(os.environ['WEIR_AMQP_PORT'])))
channel = connection.channel()
# Declare a durable queue (survives broker restart)
channel.queue_declare(queue='order_queue', durable=True)
def send_order(order):
    message = json.dumps(order)
    channel.basic_publish(
        exchange='',
        routing_key='order_queue',
        body=message,
        properties=pika.BasicProperties(
            delivery_mode=2, # Make message persistent
        )
    )
    print(f"Sent order: {order['id']}")
# Send sample orders
send_order({"id": "order_123", "user": "john", "total": 99.99})
send_order({"id": "order_124", "user": "jane", "total": 149.50})
