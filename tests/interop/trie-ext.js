#!/usr/bin/env node
'use strict'
// Real JS hypertrie@5.1.3 peers over TCP, for hyperd's test of the `hypertrie` feed
// extension (tests/tests/js_trie_extension.rs).
//
//   node trie-ext.js serve --keys N [--no-extension]
//       writes N keys `dir-<i % 10>/key-<i>` (value `value of <key>`) in batches of 100 to
//       a RAM trie and serves it on 127.0.0.1; prints {"event": "listening", "port", "key",
//       "length"}, then one line per peer lookup its extension answers
//       ({"event": "extension-get" | "extension-iterator", "key"}), until stdin ends.
//   node trie-ext.js read --connect HOST:PORT --key HEX --length N (--get K | --list P)
//       [--no-extension]
//       a sparse reader: waits for the length, runs the lookup, prints {"ok", "value" |
//       "keys", "caches": [{start, end, blocks}] received, "downloaded": [seqs], "ms"}.
const net = require('net')
const hypertrie = require('hypertrie')
const ram = require('random-access-memory')
const { parseArgs, emit, stdinIsPipe } = require('./common')

const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

function connect (socket, db, initiator) {
  socket.setNoDelay(true)
  const stream = db.replicate(initiator, { live: true })
  socket.pipe(stream).pipe(socket)
  stream.on('error', () => socket.destroy())
  socket.on('error', () => stream.destroy())
}

async function serve (args) {
  const db = hypertrie(ram, { valueEncoding: 'binary', extension: args['no-extension'] ? false : undefined })
  await p(cb => db.ready(cb))
  const keys = Number(args.keys)
  for (let i = 0; i < keys; i += 100) {
    const batch = []
    for (let j = i; j < Math.min(keys, i + 100); j++) {
      const key = `dir-${j % 10}/key-${j}`
      batch.push({ type: 'put', key, value: Buffer.from(`value of ${key}`) })
    }
    await p(cb => db.batch(batch, cb))
  }
  db.on('extension-get', key => emit({ event: 'extension-get', key }))
  db.on('extension-iterator', key => emit({ event: 'extension-iterator', key }))
  const server = net.createServer(socket => connect(socket, db, false))
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
  emit({ event: 'listening', port: server.address().port, key: db.key.toString('hex'), length: db.feed.length })
  const stop = () => process.exit(0)
  if (stdinIsPipe()) {
    process.stdin.on('end', stop)
    process.stdin.resume()
  }
  process.on('SIGTERM', stop)
}

async function read (args) {
  const t0 = Date.now()
  const extension = !args['no-extension']
  const db = hypertrie(ram, Buffer.from(args.key, 'hex'), {
    sparse: true,
    valueEncoding: 'binary',
    extension: extension ? undefined : false
  })
  await p(cb => db.ready(cb))
  const caches = []
  if (extension) {
    const oncache = db._extension.oncache.bind(db._extension)
    db._extension.oncache = (message, from) => {
      caches.push({ start: message.start, end: message.end, blocks: message.blocks.slice() })
      oncache(message, from)
    }
  }
  const downloaded = []
  db.feed.on('download', index => downloaded.push(index))
  const [host, port] = args.connect.split(':')
  connect(net.connect(Number(port), host), db, true)
  const length = Number(args.length)
  while (db.feed.length < length) await p(cb => db.feed.update({ minLength: length, ifAvailable: false }, cb))
  const result = { ok: true }
  const start = Date.now()
  if (args.get !== undefined) {
    const node = await p(cb => db.get(args.get, cb))
    result.value = node ? node.value.toString() : null
  } else {
    const nodes = await p(cb => db.list(args.list, cb))
    result.keys = nodes.map(n => n.key)
  }
  result.lookupMs = Date.now() - start
  // Prefetched blocks may still be arriving: let the downloads settle.
  let last = -1
  while (last !== downloaded.length) {
    last = downloaded.length
    await new Promise(resolve => setTimeout(resolve, 300))
  }
  emit(Object.assign(result, { caches, downloaded: downloaded.sort((a, b) => a - b), ms: Date.now() - t0 }))
  process.exit(0)
}

const args = parseArgs(process.argv.slice(2), ['no-extension'])
const mode = args._[0]
const run = mode === 'serve' ? serve : mode === 'read' ? read : null
if (!run) {
  process.stderr.write('usage: node trie-ext.js serve --keys N | read --connect HOST:PORT --key HEX --length N (--get K | --list P)\n')
  process.exit(2)
}
run(args).catch(err => {
  emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
  process.exit(1)
})
