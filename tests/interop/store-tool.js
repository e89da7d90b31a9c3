#!/usr/bin/env node
'use strict'
// A small CLI around JS corestore@5.8.2, used by hyperd's corestore interop tests
// (tests/tests/js_corestore.rs). `write`, `read` and `clone` print exactly one JSON line
// on stdout at the end and exit 0; `serve` prints a `ready` line, then serves until its
// stdin ends. On failure every mode prints {"ok":false,"error":...} and exits 1.
//
// Cores are given as NAME:COUNT (a named core, store.get({ name }), topped up to COUNT
// blocks) or KEY:COUNT (a 64-hex public key, store.get(key), expected to reach COUNT
// blocks). Block i of the core named N holds the UTF-8 text "N block i"; blocks are
// reported as UTF-8 strings.
const fs = require('fs')
const net = require('net')
const path = require('path')
const Corestore = require('corestore')
const crypto = require('hypercore-crypto')
const { parseArgs, promisify, emit, stdinIsPipe, storeReplication } = require('./common')

const USAGE = `usage:
  node store-tool.js write --dir D [--master-key HEX32] --cores NAME:COUNT,..
                           [--key-pair-seed HEX32 --key-pair-count N]
  node store-tool.js read  --dir D [--names N1,N2,..] [--keys K1,K2,..] [--append TEXT]
  node store-tool.js serve --dir D --cores NAME:COUNT,.. [--unload NAME,..] [--port 0]
  node store-tool.js clone --dir D --port P --cores KEY:COUNT,.. [--late KEY:COUNT,..]
                           [--missing KEY,..]`

const hex = b => b ? b.toString('hex') : null

function list (s) {
  return s ? String(s).split(',').filter(x => x !== '') : []
}

function pairs (s) {
  return list(s).map(item => {
    const i = item.lastIndexOf(':')
    if (i < 1) throw new Error('expected NAME:COUNT, got ' + item)
    const count = Number(item.slice(i + 1))
    if (!Number.isSafeInteger(count) || count < 0) throw new Error('bad count in ' + item)
    return { id: item.slice(0, i), count }
  })
}

function blockText (name, i) {
  return Buffer.from(name + ' block ' + i)
}

async function openStore (args) {
  const opts = {}
  if (args['master-key']) opts.masterKey = Buffer.from(args['master-key'], 'hex')
  const store = new Corestore(args.dir, opts)
  await store.ready()
  return store
}

async function ready (core) {
  await promisify(cb => core.ready(cb))
  return core
}

async function topUp (core, name, count) {
  // One append per block: one signature each, like the Rust side of the tests.
  for (let i = core.length; i < count; i++) {
    await promisify(cb => core.append(blockText(name, i), cb))
  }
}

async function readBlocks (core) {
  const out = []
  for (let i = 0; i < core.length; i++) {
    const b = await promisify(cb => core.get(i, { timeout: 20000 }, cb))
    out.push(b.toString('utf8'))
  }
  return out
}

async function describe (core, name) {
  return {
    name: name === undefined ? null : name,
    key: hex(core.key),
    discoveryKey: hex(core.discoveryKey),
    writable: core.writable,
    length: core.length,
    blocks: await readBlocks(core)
  }
}

function listFiles (dir) {
  const out = {}
  ;(function walk (rel) {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? rel + '/' + e.name : e.name
      if (e.isDirectory()) walk(r)
      else out[r] = fs.statSync(path.join(dir, r)).size
    }
  })('')
  return out
}

async function write (args) {
  const store = await openStore(args)
  const cores = []
  for (const { id: name, count } of pairs(args.cores)) {
    const core = await ready(store.get({ name }))
    await topUp(core, name, count)
    cores.push(await describe(core, name))
  }
  if (args['key-pair-seed']) {
    const keyPair = crypto.keyPair(Buffer.from(args['key-pair-seed'], 'hex'))
    const core = await ready(store.get({ keyPair }))
    await topUp(core, 'key pair', Number(args['key-pair-count'] || 0))
    cores.push(await describe(core))
  }
  const masterKey = hex(store.inner._masterKey)
  await promisify(cb => store.close(cb))
  emit({ ok: true, masterKey, cores, files: listFiles(args.dir) })
}

async function read (args) {
  const store = await openStore(args)
  const cores = []
  const opened = []
  for (const name of list(args.names)) opened.push([await ready(store.get({ name })), name])
  for (const key of list(args.keys)) opened.push([await ready(store.get(Buffer.from(key, 'hex'))), undefined])
  for (const [core, name] of opened) {
    const entry = await describe(core, name)
    if (args.append !== undefined && core.writable) {
      await promisify(cb => core.append(Buffer.from(args.append), cb))
      entry.appendedLength = core.length
    }
    cores.push(entry)
  }
  await promisify(cb => store.close(cb))
  emit({ ok: true, cores })
}

async function serve (args) {
  const store = await openStore(args)
  const cores = []
  const unload = new Set(list(args.unload))
  for (const { id: name, count } of pairs(args.cores)) {
    const core = await ready(store.get({ name }))
    await topUp(core, name, count)
    cores.push({ name, key: hex(core.key), length: core.length })
    // Stored but not loaded: opened again only when a peer asks for it.
    if (unload.has(name)) await promisify(cb => core.close(cb))
  }
  const replication = storeReplication(store)
  const port = await replication.listen(args.port)
  emit({ event: 'ready', port, masterKey: hex(store.inner._masterKey), cores })

  let done = false
  function shutdown () {
    if (done) return
    done = true
    replication.close()
    store.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', shutdown)
  if (stdinIsPipe()) {
    process.stdin.on('end', shutdown)
    process.stdin.on('close', shutdown)
    process.stdin.resume()
  }
}

async function clone (args) {
  const store = await openStore(args)
  const wanted = pairs(args.cores)
  const late = pairs(args.late)
  const cores = []
  for (const { id, count } of wanted) cores.push([await ready(store.get(Buffer.from(id, 'hex'))), count])
  // Asked for, but the server has none of them: refused, and nothing fails.
  for (const key of list(args.missing)) await ready(store.get(Buffer.from(key, 'hex')))

  const socket = net.connect(Number(args.port), '127.0.0.1')
  socket.setNoDelay(true)
  const stream = store.replicate(true, { live: true })
  let failure = null
  stream.on('error', err => { failure = failure || err })
  socket.on('error', err => { failure = failure || err })
  socket.pipe(stream).pipe(socket)
  await new Promise((resolve, reject) => {
    stream.once('handshake', resolve)
    stream.once('close', () => reject(failure || new Error('stream closed before the handshake')))
  })

  // Loaded after the connection started: corestore adds them to the running stream.
  for (const { id, count } of late) cores.push([await ready(store.get(Buffer.from(id, 'hex'))), count])

  const out = []
  for (const [core, count] of cores) {
    if (core.length < count) await promisify(cb => core.update({ minLength: count }, cb))
    out.push(await describe(core))
  }
  if (failure) throw failure
  socket.destroy()
  await promisify(cb => store.close(cb))
  emit({ ok: true, cores: out, files: listFiles(args.dir) })
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const mode = args._[0]
  if (!args.dir || !['write', 'read', 'serve', 'clone'].includes(mode)) {
    process.stderr.write(USAGE + '\n')
    process.exit(2)
  }
  if (mode === 'write') return write(args)
  if (mode === 'read') return read(args)
  if (mode === 'serve') return serve(args)
  return clone(args)
}

main().catch(err => {
  emit({ ok: false, error: err.message, stack: err.stack })
  process.exit(1)
})
