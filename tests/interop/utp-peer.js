#!/usr/bin/env node
'use strict'
// A JS uTP peer (utp-native 2.5.3, libutp) with a dht-rpc 4.9.6 node on the same UDP
// socket, as hyperswarm 2 binds them, for hyperd's uTP interop tests. Loopback only.
//
//   node utp-peer.js
//
// stdout, first: {"ok":true,"port":P} (the shared socket, 127.0.0.1:P).
// Every connection it accepts is echoed back as it arrives, and ended when the remote
// ends (as @hyperswarm/network does with accepted uTP sockets); then it prints
//   {"event":"served","bytes":N,"blake2b":HEX}   (on the remote's end)
//   {"event":"closed","error":null|MESSAGE}       (on close)
// Commands, one JSON line each on stdin, answered with one JSON line:
//   {"cmd":"connect","port":P,"bytes":N,"seed":S}  dial 127.0.0.1:P over uTP, write N
//       pseudo-random bytes (xorshift32 from S, the low byte of each step), end, read to
//       the end; answers {"ok":true} at once, later prints
//       {"event":"transfer","sent":N,"sentBlake2b":HEX,"received":M,"receivedBlake2b":HEX,"error":null|MESSAGE}
//   {"cmd":"ping","port":P}  a dht-rpc _ping to 127.0.0.1:P from the shared socket;
//       answers {"ok":true,"pong":"HOST:PORT"} (our address as P saw it)

const readline = require('readline')
const utp = require('utp-native')
const DHT = require('dht-rpc')
const { Blake2b256, emit } = require('./common')

const HOST = '127.0.0.1'

function pseudoRandom (n, seed) {
  const buf = Buffer.allocUnsafe(n)
  let x = (seed >>> 0) || 1
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0
    x = (x ^ (x >>> 17)) >>> 0
    x = (x ^ (x << 5)) >>> 0
    buf[i] = x & 0xff
  }
  return buf
}

const socket = utp()
const dht = DHT({ socket, ephemeral: true, bootstrap: false })
dht.on('warning', () => {})

socket.on('connection', (conn) => {
  const hash = new Blake2b256()
  let bytes = 0
  let error = null
  conn.on('data', (data) => {
    hash.update(data)
    bytes += data.length
    conn.write(data)
  })
  conn.on('end', () => {
    emit({ event: 'served', bytes, blake2b: hash.digest() })
    conn.end()
  })
  conn.on('error', (err) => { error = err.message })
  conn.on('close', () => emit({ event: 'closed', error }))
})

function connect (port, n, seed) {
  const data = pseudoRandom(n, seed)
  const conn = socket.connect(port, HOST)
  const hash = new Blake2b256()
  let received = 0
  let error = null
  conn.on('data', (chunk) => {
    hash.update(chunk)
    received += chunk.length
  })
  conn.on('error', (err) => { error = err.message })
  conn.on('close', () => emit({
    event: 'transfer',
    sent: n,
    sentBlake2b: new Blake2b256().update(data).digest(),
    received,
    receivedBlake2b: hash.digest(),
    error
  }))
  // Written in chunks, as an application writes.
  for (let i = 0; i < n; i += 65536) conn.write(data.subarray(i, Math.min(n, i + 65536)))
  conn.end()
}

function command (cmd) {
  switch (cmd.cmd) {
    case 'connect':
      connect(cmd.port, cmd.bytes, cmd.seed)
      return emit({ ok: true })
    case 'ping':
      return dht.ping({ host: HOST, port: cmd.port }, (err, pong) => {
        if (err) return emit({ ok: false, error: err.message })
        emit({ ok: true, pong: pong.host + ':' + pong.port })
      })
    default:
      return emit({ ok: false, error: 'unknown command ' + JSON.stringify(cmd) })
  }
}

socket.listen(0, HOST, () => {
  emit({ ok: true, port: socket.address().port })
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', (line) => command(JSON.parse(line)))
  lines.on('close', () => {
    dht.destroy()
    socket.close()
    setTimeout(() => process.exit(0), 100)
  })
})
