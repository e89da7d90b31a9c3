#!/usr/bin/env node
'use strict'
// Many persistent JS DHT nodes (@hyperswarm/dht 4.0.1 on dht-rpc 4.9.6) in one process,
// each on its own loopback address, all bootstrapping from the given nodes: with those,
// a loopback DHT that really routes (the swarm benchmark's).
//
//   node dht-nodes.js --count N --first-host 127.0.0.X --bootstrap 127.x.x.x:PORT[,…]
//
// Node i listens on a free port of 127.0.0.(X+i). Once every node has bootstrapped, each
// bootstraps once more, so the first ones also learn of those that came after them;
// then stdout: {"event":"ready","nodes":[{"host","port","id"},…]}. Datagrams to hosts
// outside 127.0.0.0/8 are dropped. Runs until killed.

const { parseArgs } = require('./common')

const args = parseArgs(process.argv.slice(2))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const fail = (error) => { process.stderr.write(JSON.stringify({ event: 'fatal', error }) + '\n'); process.exit(2) }

const count = Number(args.count || 0)
const first = /^127\.0\.0\.(\d+)$/.exec(args['first-host'] || '')
const bootstrap = String(args.bootstrap || '').split(',').filter(Boolean)
if (!(count >= 1) || !first || Number(first[1]) + count > 255) fail('--count N and --first-host 127.0.0.X (X + N <= 255) are required')
if (!bootstrap.length || !bootstrap.every((b) => /^127\.\d+\.\d+\.\d+:\d+$/.test(b))) fail('--bootstrap takes 127.x.x.x:PORT entries')

const bootstrapped = (node) => new Promise((resolve) => node.ready(resolve))

async function main () {
  const nodes = []
  for (let i = 0; i < count; i++) {
    const node = require('@hyperswarm/dht')({ bootstrap, ephemeral: false })
    const send = node.socket.send
    node.socket.send = function (buf, offset, len, port, to, cb) {
      if (!/^127\./.test(to)) return typeof cb === 'function' && process.nextTick(cb, new Error('not loopback'))
      return send.apply(this, arguments)
    }
    node.on('warning', () => {})
    node.listen(0, '127.0.0.' + (Number(first[1]) + i))
    nodes.push(node)
    // One after another, so each finds the ones before it.
    await bootstrapped(node)
  }
  await Promise.all(nodes.map((node) => new Promise((resolve) => node.bootstrap(resolve))))
  out({
    event: 'ready',
    nodes: nodes.map((n) => ({ host: n.address().address, port: n.address().port, id: n.id.toString('hex') }))
  })
  const stop = () => { for (const n of nodes) n.destroy(); setTimeout(() => process.exit(0), 100) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err) => fail(err.message))
