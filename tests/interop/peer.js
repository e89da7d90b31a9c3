#!/usr/bin/env node
'use strict'
// A hypercore@9 clone that also serves: it listens on TCP (as Noise responder) and dials
// any number of peers (as Noise initiator), replicating the feed with all of them at once,
// so several clones can fetch from a seeder and from each other at the same time.
//
// stdout: first {"event":"listening","port":P,"noisePublicKey":HEX}, then, once the
// range is stored and verified, one result line like clone.js's (audit, signature,
// blake2b) plus "peers": {<remote noise key>: {downloadedBlocks, uploadedBlocks}} as of
// that moment. It then keeps serving until SIGINT/SIGTERM or the end of stdin (when stdin
// is a pipe) and exits 0, or exits 1 at once if the result is not ok (or on timeout).
const net = require('net')
const hypercore = require('hypercore')
const Protocol = require('hypercore-protocol')
const { parseArgs, hashRange, promisify, emit, log, stdinIsPipe } = require('./common')

const USAGE = 'usage: node peer.js --key HEX --dir DIR [--connect HOST:PORT[,HOST:PORT...]] [--port 0]\n' +
  '         [--mode full|sparse] [--start S] [--end E] [--live] [--expect-length N]\n' +
  '         [--noise-seed HEX32] [--timeout MS] [--quiet]'

async function main () {
  const t0 = Date.now()
  const args = parseArgs(process.argv.slice(2), ['live', 'quiet', 'help'])
  if (args.help || !args.key || !args.dir) {
    process.stderr.write(USAGE + '\n')
    process.exit(args.help ? 0 : 2)
  }
  const key = Buffer.from(args.key, 'hex')
  if (key.length !== 32) throw new Error('--key must be 32 bytes of hex')
  const mode = args.mode || 'full'
  if (mode !== 'full' && mode !== 'sparse') throw new Error('--mode must be full or sparse')
  const live = !!args.live
  const quiet = !!args.quiet
  const timeoutMs = args.timeout !== undefined ? Number(args.timeout) : 30000
  const start = args.start !== undefined ? Number(args.start) : 0
  const wantEnd = args.end !== undefined ? Number(args.end) : -1
  const expectLength = args['expect-length'] !== undefined ? Number(args['expect-length']) : -1
  const targets = args.connect ? String(args.connect).split(',').filter(Boolean) : []

  const opts = { sparse: mode === 'sparse' }
  if (args['noise-seed']) opts.noiseKeyPair = Protocol.keyPair(Buffer.from(args['noise-seed'], 'hex'))
  const feed = hypercore(args.dir, key, opts)
  await promisify(cb => feed.ready(cb))
  const initialDownloaded = feed.length ? feed.downloaded(0, feed.length) : 0

  // blocks exchanged with each remote peer, by its Noise public key
  const peers = {}
  const peerStats = (p) => {
    const k = p && p.remotePublicKey ? p.remotePublicKey.toString('hex') : 'unknown'
    if (!peers[k]) peers[k] = { downloadedBlocks: 0, uploadedBlocks: 0 }
    return peers[k]
  }
  feed.on('download', (index, data, from) => { peerStats(from).downloadedBlocks++ })
  feed.on('upload', (index, data, to) => { peerStats(to).uploadedBlocks++ })

  const sockets = new Set()
  let closing = false
  function attach (socket, initiator, remote) {
    sockets.add(socket)
    socket.setNoDelay(true)
    const stream = feed.replicate(initiator, { live })
    socket.pipe(stream).pipe(socket)
    // after shutdown() destroys the sockets, their errors are ours, not the peer's
    const say = (obj) => { if (!quiet && !closing) log(Object.assign({ remote, initiator }, obj)) }
    stream.on('handshake', () => say({ event: 'handshake', remotePublicKey: stream.remotePublicKey.toString('hex') }))
    stream.on('error', (err) => say({ event: 'stream-error', error: err.message }))
    socket.on('error', (err) => say({ event: 'socket-error', error: err.message }))
    socket.on('close', () => { sockets.delete(socket); stream.destroy(); say({ event: 'close' }) })
    stream.on('close', () => socket.destroy())
  }

  const server = net.createServer(socket => attach(socket, false, socket.remoteAddress + ':' + socket.remotePort))
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(args.port !== undefined ? Number(args.port) : 0, '127.0.0.1', resolve)
  })
  emit({ event: 'listening', port: server.address().port, noisePublicKey: feed.noiseKeyPair.publicKey.toString('hex') })

  function fail (err) {
    const downloaded = feed.length ? feed.downloaded(0, feed.length) : 0
    emit({ ok: false, error: err.message, length: feed.length, downloaded, peers, ms: Date.now() - t0 })
    process.exit(1)
  }
  const timer = setTimeout(() => fail(new Error('timeout after ' + timeoutMs + ' ms')), timeoutMs)

  for (const target of targets) {
    const i = target.lastIndexOf(':')
    attach(net.connect(Number(target.slice(i + 1)), target.slice(0, i)), true, target)
  }

  // the same steps as clone.js: learn the length, download the range, verify
  const minLength = Math.max(1, expectLength, wantEnd)
  if (mode === 'sparse') {
    while (feed.length < minLength) await promisify(cb => feed.update({ minLength, ifAvailable: false }, cb))
  } else {
    await waitFor(() => feed.length >= minLength)
  }
  const end = wantEnd === -1 ? feed.length : wantEnd
  if (start < end) await promisify(cb => feed.download({ start, end }, cb))
  await waitFor(() => feed.downloaded(start, end) === end - start)
  const done = Date.now() - t0

  const audit = await promisify(cb => feed.audit(cb))
  const sig = await promisify(cb => feed.signature(cb))
  await promisify(cb => feed.verify(sig.index, sig.signature, cb))
  const { blake2b, bytes } = await promisify(cb => hashRange(feed, start, end, cb))
  clearTimeout(timer)
  const ok = audit.invalid === 0
  emit({
    ok,
    key: feed.key.toString('hex'),
    mode,
    live,
    length: feed.length,
    byteLength: feed.byteLength,
    start,
    end,
    rangeBytes: bytes,
    blake2b,
    audit,
    signatureIndex: sig.index,
    downloadedBlocks: feed.downloaded(0, feed.length) - initialDownloaded,
    peers,
    ms: { done, total: Date.now() - t0 }
  })
  if (!ok) process.exit(1)

  function shutdown () {
    closing = true
    for (const s of sockets) s.destroy()
    server.close()
    feed.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGINT', shutdown)
  process.on('SIGTERM', shutdown)
  if (stdinIsPipe()) {
    process.stdin.on('end', shutdown)
    process.stdin.on('close', shutdown)
    process.stdin.resume()
  }

  function waitFor (check) {
    return new Promise(resolve => {
      if (check()) return resolve()
      const events = ['append', 'download', 'remote-update', 'peer-open']
      const poll = setInterval(onevent, 50)
      for (const e of events) feed.on(e, onevent)
      function onevent () {
        if (!check()) return
        clearInterval(poll)
        for (const e of events) feed.removeListener(e, onevent)
        resolve()
      }
    })
  }
}

main().catch(function (err) {
  emit({ ok: false, error: err.message })
  process.exit(1)
})
