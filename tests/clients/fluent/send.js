// Sends events to a forward-protocol server with the fluent-logger package and exits 0 once
// every event's callback reported success (with acks: once each chunk was acknowledged).
// Usage: node send.js '{"port": 24224, "mode": "PackedForward", "count": 100, ...}'
'use strict';
const fs = require('fs');
const logger = require('fluent-logger');

const args = JSON.parse(process.argv[2]);
const options = {
  host: args.host || '127.0.0.1',
  port: args.port,
  timeout: 10.0,
  eventMode: args.mode || 'Message',
  requireAckResponse: !!args.ack,
  ackResponseTimeout: args.ackTimeout || 15000,
  enableReconnect: false,
  flushInterval: 20,
  internalLogger: { info() {}, error(...a) { console.error(...a); } },
};
if (args.sharedKey) {
  options.security = {
    clientHostname: 'bytefreezer-test-client',
    sharedKey: args.sharedKey,
    username: args.username || '',
    password: args.password || '',
  };
}
if (args.caFile) {
  options.tls = true;
  options.tlsOptions = { ca: fs.readFileSync(args.caFile), servername: 'localhost' };
}
const sender = logger.createFluentSender(null, options);
let failed = false;
sender.on('error', (error) => {
  if (!failed) console.error('error:', error.message || error);
  failed = true;
  process.exit(1);
});
let pending = args.count;
const done = () => {
  pending -= 1;
  if (pending === 0) {
    sender.end(null, null, () => process.exit(failed ? 1 : 0));
  }
};
for (let i = 0; i < args.count; i++) {
  const time = new logger.EventTime(args.epoch + i, 123456789);
  const record = { id: i, message: `event ${i}`, nested: { level: 'info', n: i } };
  sender.emit(args.tag || 'app.events', record, time, (error) => {
    if (error) {
      console.error('error:', error.message || error);
      failed = true;
      process.exit(1);
    }
    done();
  });
}
setTimeout(() => { console.error('timed out'); process.exit(2); }, 30000);
