// Sends log lines to a Loki push endpoint with winston-loki: once winston has handed every line
// to the transport's batch, the batch is sent in one request, and the script exits 0 when the
// server answered it with success.
// Usage: node send.js '{"host": "http://127.0.0.1:8080", "basicAuth": "user:key", "json": false, "count": 100}'
'use strict';
const winston = require('winston');
const LokiTransport = require('winston-loki');

const args = JSON.parse(process.argv[2]);
const errors = [];
const transport = new LokiTransport({
  host: args.host,
  basicAuth: args.basicAuth,
  json: !!args.json,
  labels: { app: 'checkout', env: 'prod' },
  batching: true,
  interval: 3600,  // sent by the flush below, in one request
  format: winston.format.printf((info) => info.message),
  onConnectionError: (error) => errors.push(String(error)),
});
const logger = winston.createLogger({ transports: [transport] });
for (let i = 0; i < args.count; i++) {
  logger.info({ message: `order ${i} paid`, labels: { shard: String(i % 2) } });
}
const entries = () => transport.batcher.batch.streams.reduce((n, s) => n + s.entries.length, 0);
const started = Date.now();
(function send() {
  if (entries() < args.count && Date.now() - started < 10000) {
    setTimeout(send, 10);
    return;
  }
  transport.batcher.sendBatchToLoki().then(() => {
    // the content type winston-loki used: it falls back to JSON when snappy does not load
    console.log(JSON.stringify({ contentType: transport.batcher.contentType, entries: args.count, errors }));
    process.exit(errors.length ? 1 : 0);
  }, (error) => {
    console.error('push failed:', String(error));
    process.exit(1);
  });
})();
