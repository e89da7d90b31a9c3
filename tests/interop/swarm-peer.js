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

const { parseArgs, loopbackSwarm } = require('./common')

const args = parseArgs(process.argv.slice(2), ['announce'])
const fail = (error) => { process.stderr.write(JSON.stringify({ event: 'fatal', error }) + '\n'); process.exit(2) }
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

if (!/^[0-9a-f]{64}$/.test(args.topic || '')) fail('--topic takes 64 lowercase hex characters')
const bootstrap = String(args.bootstrap || '').split(',').filter(Boolean)

const swarm = loopbackSwarm(bootstrap)

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
