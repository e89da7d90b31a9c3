#!/usr/bin/env node
'use strict'
// A JS DHT node (@hyperswarm/dht 4.0.1 on dht-rpc 4.9.6) that joins a loopback test DHT:
// persistent unless --ephemeral, bootstrapping from --bootstrap HOST:PORT[,…].
//
//   node dht-peer.js --bootstrap 127.0.0.1:N [--host 127.x.x.x] [--ephemeral]
//
// stdout: {"event":"ready","host":…,"port":…,"id":…} once its first bootstrap ended, then
// one answer per command read on stdin (one JSON object a line):
//   {"cmd":"table"}                  -> {"ok":true,"nodes":[{"id","host","port"}…]}
//   {"cmd":"find","target":HEX}      -> {"ok":true,"nodes":[…]}: the ids that answered a
//                                       _find_node walk towards target (closest first)
//   {"cmd":"announce","topic":HEX}   -> {"ok":true}
//   {"cmd":"lookup","topic":HEX}     -> {"ok":true,"peers":["host:port"…]}
// Datagrams to hosts outside 127.0.0.0/8 are dropped.

const readline = require('readline')
const { parseArgs } = require('./common')

const args = parseArgs(process.argv.slice(2))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const host = args.host || '127.0.0.1'
if (!/^127\.\d+\.\d+\.\d+$/.test(host) || !args.bootstrap) {
  process.stderr.write('usage: dht-peer.js --bootstrap HOST:PORT[,…] [--host 127.x.x.x] [--ephemeral]\n')
  process.exit(2)
}

const node = require('@hyperswarm/dht')({
  bootstrap: String(args.bootstrap).split(','),
  ephemeral: !!args.ephemeral
})
const send = node.socket.send
node.socket.send = function (buf, offset, len, port, to, cb) {
  if (!/^127\./.test(to)) return typeof cb === 'function' && process.nextTick(cb, new Error('not loopback'))
  return send.apply(this, arguments)
}
const nodeJson = (n) => ({ id: n.id.toString('hex'), host: n.host, port: n.port })

node.on('ready', () => {
  const a = node.address()
  out({ event: 'ready', host: a.address, port: a.port, id: node.id.toString('hex') })
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = JSON.parse(line)
    const fail = (err) => out({ ok: false, error: err.message })
    if (cmd.cmd === 'table') return out({ ok: true, nodes: node.getNodes().map(nodeJson) })
    if (cmd.cmd === 'find') {
      const target = Buffer.from(cmd.target, 'hex')
      return node.query('_find_node', target, (err, replies) => {
        if (err) return fail(err)
        const nodes = replies.filter((r) => r.node.id).map((r) => r.node)
        nodes.sort((a, b) => Buffer.compare(xor(a.id, target), xor(b.id, target)))
        out({ ok: true, nodes: nodes.map(nodeJson) })
      })
    }
    const topic = Buffer.from(cmd.topic || '', 'hex')
    if (cmd.cmd === 'announce') {
      return node.announce(topic, { port: 0 }, (err) => err ? fail(err) : out({ ok: true }))
    }
    if (cmd.cmd === 'lookup') {
      return node.lookup(topic, (err, results) => {
        if (err) return fail(err)
        const peers = []
        for (const r of results) for (const p of r.peers) peers.push(`${p.host}:${p.port}`)
        out({ ok: true, peers })
      })
    }
    fail(new Error('unknown command ' + cmd.cmd))
  }).on('close', () => { node.destroy(); setTimeout(() => process.exit(0), 100) })
})
node.listen(0, host)

function xor (a, b) {
  const x = Buffer.alloc(32)
  for (let i = 0; i < 32; i++) x[i] = a[i] ^ b[i]
  return x
}

process.on('SIGTERM', () => { node.destroy(); setTimeout(() => process.exit(0), 100) })
