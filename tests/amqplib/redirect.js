// Preloaded (node -r) by scripts/amqplib-suite. amqplib's tests connect to the
// broker at the default address, localhost:5672 (`connect()` with no URL, or
// 'amqp://localhost'); only channel_api.test.js reads a URL from the environment.
// This sends every connection to port 5672 to AMQP_TEST_PORT instead, so the suite
// runs unmodified against a broker on a free port. Other ports (the suite's own
// fake servers, refused ports) are left alone.
'use strict';
const net = require('node:net');
const port = Number(process.env.AMQP_TEST_PORT);
if (!Number.isInteger(port) || port <= 0) throw new Error('AMQP_TEST_PORT is not set');
const connect = net.connect;
function redirected(options, ...rest) {
  if (options && typeof options === 'object' && Number(options.port) === 5672) {
    options = { ...options, port };
  }
  return connect.call(this, options, ...rest);
}
net.connect = redirected;
net.createConnection = redirected;
