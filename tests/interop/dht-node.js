#!/usr/bin/env node
'use strict'
// A standalone JS DHT node (@hyperswarm/dht 4.0.1 on dht-rpc 4.9.6), persistent, with no
// bootstrap nodes of its own: the only bootstrap node of a loopback test DHT.
//
//   node dht-node.js [--host 127.x.x.x] [--port N]
//
// stdout: {"event":"listening","host":…,"port":…,"id":…}, then one line per announce,
// unannounce and lookup it serves. Datagrams to hosts outside 127.0.0.0/8 are dropped.

const { parseArgs } = require('./common')

const args = parseArgs(process.argv.slice(2))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const host = args.host || '127.0.0.1'
if (!/^127\.\d+\.\d+\.\d+$/.test(host)) {
  process.stderr.write('--host takes a 127.x.x.x address\n')
  process.exit(2)
}

// bootstrap: false means none (undefined would mean the public default list).
const node = require('@hyperswarm/dht')({ bootstrap: false, ephemeral: false })
const send = node.socket.send
node.socket.send = function (buf, offset, len, port, to, cb) {
  if (!/^127\./.test(to)) return typeof cb === 'function' && process.nextTick(cb, new Error('not loopback'))
  return send.apply(this, arguments)
}
const peer = (p) => p && `${p.host}:${p.port}`
node.on('listening', () => {
  const a = node.address()
  out({ event: 'listening', host: a.address, port: a.port, id: node.id.toString('hex') })
})
node.on('announce', (topic, from) => out({ event: 'announce', topic: topic.toString('hex'), from: peer(from) }))
node.on('unannounce', (topic, from) => out({ event: 'unannounce', topic: topic.toString('hex'), from: peer(from) }))
node.on('lookup', (topic, from) => out({ event: 'lookup', topic: topic.toString('hex'), from: peer(from) }))
node.listen(Number(args.port || 0), host)

const stop = () => { node.destroy(); setTimeout(() => process.exit(0), 100) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
