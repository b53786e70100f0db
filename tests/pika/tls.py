# pika over TLS (pika.SSLOptions), against weir's amqps listener.
#
# usage: tls.py PORT CA_FILE [CLIENT_CERT CLIENT_KEY]
# Trusts CA_FILE only, checks the server's name (localhost), presents the client
# certificate when given; publishes with confirms, gets the message back, prints OK.
# A refused handshake or connection exits 3 with the reason.
import ssl
import sys

import pika

port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
if len(sys.argv) > 4:
    context.load_cert_chain(sys.argv[3], sys.argv[4])
params = pika.ConnectionParameters(
    host="127.0.0.1",
    port=port,
    ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
    connection_attempts=1,
)
try:
    connection = pika.BlockingConnection(params)
except Exception as e:  # pika wraps the ssl error in its own types
    print(f"REFUSED {type(e).__name__}: {e}")
    sys.exit(3)
channel = connection.channel()
channel.confirm_delivery()
channel.queue_declare(queue="pika_tls", durable=True)
channel.basic_publish(exchange="", routing_key="pika_tls", body=b"over tls",
                      properties=pika.BasicProperties(delivery_mode=2))
method, _, body = channel.basic_get(queue="pika_tls", auto_ack=True)
assert method is not None and body == b"over tls", (method, body)
connection.close()
print("OK")
