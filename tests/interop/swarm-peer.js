#!/usr/bin/env node
'use strict'
// One JS hyperswarm 2 peer (2.15.3, @hyperswarm/dht 4.0.1, dht-rpc 4.9.6) for hyperd's
// swarm tests, on loopback only.
//
//   node swarm-peer.js --topic HEX64 --bootstrap 127.x.x.x:PORT [--announce] [--message TEXT]
//
// The DHT is bootstrapped from the given loopback node only (never the public default
// list); hyperswarm 2 cannot turn mDNS off, so the multicast-dns module it loads is
// replaced by an inert one; every datagram to a host outside 127.0.0.0/8 is dropped and
// every discovered peer outside it rejected. On each connection it writes TEXT and a
// newline. stdout: JSON lines: listening, peer, connection, received.

const path = require('path')
const { EventEmitter } = require('events')
const { parseArgs } = require('./common')

const args = parseArgs(process.argv.slice(2), ['announce'])
const fail = (error) => { process.stderr.write(JSON.stringify({ event: 'fatal', error }) + '\n'); process.exit(2) }
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const loopback = (host) => typeof host === 'string' && /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(host)

if (!/^[0-9a-f]{64}$/.test(args.topic || '')) fail('--topic takes 64 lowercase hex characters')
const bootstrap = String(args.bootstrap || '').split(',').filter(Boolean)
if (!bootstrap.length || !bootstrap.every((b) => /^127\.\d+\.\d+\.\d+:\d+$/.test(b))) {
  fail('--bootstrap takes 127.x.x.x:PORT entries')
}

// The multicast-dns module @hyperswarm/discovery requires, replaced before it loads.
const dir = (mod, from) => path.dirname(require.resolve(mod + '/package.json', { paths: [from] }))
const discovery = dir('@hyperswarm/discovery', dir('@hyperswarm/network', dir('hyperswarm', __dirname)))
const mdnsFile = require.resolve('multicast-dns', { paths: [discovery] })
const inertMdns = () => Object.assign(new EventEmitter(), {
  query () {},
  respond () {},
  response () {},
  update () {},
  send (value, rinfo, cb) { (typeof rinfo === 'function' ? rinfo : cb || (() => {}))() },
  destroy (cb) { if (cb) process.nextTick(cb) }
})
require.cache[mdnsFile] = { id: mdnsFile, filename: mdnsFile, loaded: true, exports: inertMdns }

const hyperswarm = require('hyperswarm')
const swarm = hyperswarm({ bootstrap, validatePeer: (peer) => loopback(peer.host) })
const utp = swarm.network.utp
const send = utp.send
utp.send = function (buf, offset, len, port, host, cb) {
  if (!loopback(host)) {
    if (typeof cb === 'function') process.nextTick(cb, new Error('not loopback: ' + host))
    return
  }
  return send.apply(this, arguments)
}

const topic = Buffer.from(args.topic, 'hex')
const announce = !!args.announce
const message = args.message || 'hello from ' + process.pid

swarm.on('error', (err) => fail(err.message))
swarm.on('listening', () => out({ event: 'listening', port: swarm.address().port }))
swarm.on('peer', (peer) => out({ event: 'peer', host: peer.host, port: peer.port, referrer: peer.referrer ? peer.referrer.port : null }))
swarm.on('connection', (socket, info) => {
  out({ event: 'connection', type: info.type, client: info.client })
  socket.write(message + '\n')
  let buf = ''
  socket.on('data', (data) => {
    buf += data.toString('utf8')
    let i
    while ((i = buf.indexOf('\n')) > -1) {
      out({ event: 'received', text: buf.slice(0, i) })
      buf = buf.slice(i + 1)
    }
  })
  socket.on('error', () => {})
})
swarm.listen(0)
swarm.join(topic, { announce, lookup: true })

const stop = () => {
  const exit = setTimeout(() => process.exit(0), 2000)
  swarm.destroy(() => { clearTimeout(exit); process.exit(0) })
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
