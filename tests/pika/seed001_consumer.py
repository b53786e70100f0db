# Seed 001's consumer, unmodified except for the address (the broker's test port).
import os
# Consumer - Processes messages from queue
import pika
import json
import time
connection = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', int(os.environ['WEIR_AMQP_PORT'])))
channel = connection.channel()
channel.queue_declare(queue='order_queue', durable=True)
def process_order(ch, method, properties, body):
    order = json.loads(body)
    print(f"Processing order: {order['id']}", flush=True)
    # Simulate processing time
    time.sleep(2)
    # Acknowledge message after successful processing
    ch.basic_ack(delivery_tag=method.delivery_tag)
    print(f"Completed order: {order['id']}", flush=True)
# Fetch one message at a time (fair dispatch)
channel.basic_qos(prefetch_count=1)
# Start consuming
channel.basic_consume(queue='order_queue', on_message_callback=process_order)
print("Waiting for orders...", flush=True)
channel.start_consuming()
