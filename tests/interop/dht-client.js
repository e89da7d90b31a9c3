#!/usr/bin/env node
'use strict'
// A JS DHT client (@hyperswarm/dht 4.0.1 on dht-rpc 4.9.6, ephemeral, as hyperswarm
// peers start) for the swarm benchmark's lookup latency, on loopback only, driven by one
// JSON command per line on stdin, one JSON answer line each on stdout.
//
//   node dht-client.js --bootstrap 127.x.x.x:PORT[,…]
//
// First line, once it has bootstrapped: {"event":"ready","port":P}
// Commands:
//   {"cmd":"announce","topics":[HEX…]}  announces each topic (port 0: the DHT stores
//                                       this socket's port); {"ok":true}
//   {"cmd":"lookups","topics":[HEX…],"count":N}  N lookups one after another, cycling
//                                       through the topics; {"ok":true,"ms":[…],"found":[…]}:
//                                       each lookup's time until its walk ended and the
//                                       distinct peers it found.

const { parseArgs, serveCommands } = require('./common')

const args = parseArgs(process.argv.slice(2))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const bootstrap = String(args.bootstrap || '').split(',').filter(Boolean)
if (!bootstrap.length || !bootstrap.every((b) => /^127\.\d+\.\d+\.\d+:\d+$/.test(b))) {
  process.stderr.write('--bootstrap takes 127.x.x.x:PORT entries\n')
  process.exit(2)
}

const dht = require('@hyperswarm/dht')({ bootstrap, ephemeral: true })
const send = dht.socket.send
dht.socket.send = function (buf, offset, len, port, to, cb) {
  if (!/^127\./.test(to)) return typeof cb === 'function' && process.nextTick(cb, new Error('not loopback'))
  return send.apply(this, arguments)
}
dht.on('warning', () => {})

const call = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

async function run (command) {
  const topics = (command.topics || []).map((t) => Buffer.from(t, 'hex'))
  switch (command.cmd) {
    case 'announce':
      for (const topic of topics) await call((cb) => dht.announce(topic, { port: 0 }, cb))
      return {}
    case 'lookups': {
      const ms = []
      const found = []
      for (let i = 0; i < command.count; i++) {
        const t = process.hrtime.bigint()
        const replies = await call((cb) => dht.lookup(topics[i % topics.length], cb))
        ms.push(Number(process.hrtime.bigint() - t) / 1e6)
        const peers = new Set()
        for (const r of replies) for (const p of r.peers || []) peers.add(p.host + ':' + p.port)
        found.push(peers.size)
      }
      return { ms, found }
    }
    default: throw new Error('unknown command ' + JSON.stringify(command))
  }
}

dht.listen(0, '127.0.0.1')
dht.ready(() => {
  out({ event: 'ready', port: dht.address().port })
  serveCommands(run, () => { dht.destroy(); setTimeout(() => process.exit(0), 100) })
})
