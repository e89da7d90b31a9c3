#!/usr/bin/env node
'use strict'
// A real JS hypercore@9 peer with a feed extension, for hyperd's app-message test
// (tests/tests/daemon_extensions.rs).
//
//   node ext-peer.js --key HEX --connect HOST:PORT --name NAME
//       dials hyperd (Noise initiator), replicates the core sparsely and registers the
//       extension NAME on it (`feed.registerExtension`, raw bytes). Prints
//       {"event": "ready", "noisePublicKey"} once the channel with hyperd is open, then
//       {"event": "message", "peer": HEX, "data": UTF8} for every message that arrives.
//       Commands on stdin, one JSON line each, answered with {"ok": true, ...}:
//       {"broadcast": TEXT} sends to every peer; {"send": TEXT, "peer": HEX} to one.
//       Exits when stdin ends.
const net = require('net')
const readline = require('readline')
const hypercore = require('hypercore')
const ram = require('random-access-memory')
const { parseArgs, emit } = require('./common')

async function main () {
  const args = parseArgs(process.argv.slice(2), [])
  const feed = hypercore(ram, Buffer.from(args.key, 'hex'), { sparse: true })
  await new Promise((resolve, reject) => feed.ready(err => err ? reject(err) : resolve()))
  const ext = feed.registerExtension(args.name, {
    onmessage (message, peer) {
      emit({ event: 'message', peer: peer.remotePublicKey.toString('hex'), data: message.toString() })
    }
  })
  const [host, port] = args.connect.split(':')
  const socket = net.connect(Number(port), host)
  const stream = feed.replicate(true, { live: true })
  socket.pipe(stream).pipe(socket)
  socket.on('error', err => emit({ event: 'socket-error', message: err.message }))
  feed.once('peer-open', () => {
    emit({ event: 'ready', noisePublicKey: stream.publicKey.toString('hex') })
  })
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', line => {
    const command = JSON.parse(line)
    if (command.broadcast !== undefined) {
      ext.broadcast(Buffer.from(command.broadcast))
      emit({ ok: true, peers: feed.peers.length })
    } else if (command.send !== undefined) {
      const peer = feed.peers.find(p => p.remotePublicKey.toString('hex') === command.peer)
      if (peer) ext.send(Buffer.from(command.send), peer)
      emit({ ok: !!peer })
    } else {
      emit({ ok: false, error: 'unknown command' })
    }
  })
  lines.on('close', () => process.exit(0))
}

main().catch(err => {
  emit({ ok: false, error: err.message })
  process.exit(1)
})
