#!/usr/bin/env node
'use strict'
// A real JS hyperdrive@10.21.0 peer over TCP on 127.0.0.1, driven line by line from stdin,
// for hyperd's drive replication tests (tests/tests/js_drive_net.rs).
//
//   node drive-peer.js --dir D [--key HEX] [--listen | --connect PORT]
//                      [--populate full | --populate large [--files N]]
//
// Opens the corestore in D and its default drive (or the drive HEX, read from peers),
// optionally fills it (only if empty; see populate below), then listens (every accepted
// socket replicates the whole store, as the responder), connects to PORT (as the
// initiator), or neither (the drive on disk only). All replication is live. It prints one line
//   {"event":"ready","port"?,"key","version"}
// and then answers each JSON command read from stdin with one JSON line, {"ok":true,...}
// or {"ok":false,"error"}. Commands:
//   {"cmd":"sync","version":N}       wait until the metadata feed has N blocks
//   {"cmd":"list"}                   readdir('/', {recursive}) into mounts; lstat every
//                                    entry, read every file (and the stat of each link's
//                                    target): {"version","contentKey","names","entries"}
//   {"cmd":"read","path":P}          read one file; report the bytes, its Stat and which
//                                    blocks of the content and metadata feeds are stored
//   {"cmd":"write","path":P,"hex":H} write a file
//   {"cmd":"wait","path":P,"ms":T}   poll stat(P) (each lookup updates the feed, as
//                                    mountable-hypertrie always does) until it exists
// The process ends when stdin ends.
const net = require('net')
const readline = require('readline')
const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs, emit, storeReplication } = require('./common')

const args = parseArgs(process.argv.slice(2), ['listen'])
const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))
const hex = b => Buffer.from(b).toString('hex')

const store = new Corestore(args.dir)
const drive = hyperdrive(store, args.key ? Buffer.from(args.key, 'hex') : null)
const replication = storeReplication(store)

// Bytes i of generated file n: (31 n + i) mod 251 (hyperd_tests::pattern makes the same).
function pattern (n, size) {
  const b = Buffer.alloc(size)
  for (let i = 0; i < size; i++) b[i] = (31 * n + i) % 251
  return b
}

// Every kind of entry: files, an empty file, an explicit empty directory, a 1.2 MB file
// (3 blocks), a file of five writes (5 blocks), absolute and relative symlinks, metadata,
// nested directories, unicode names, and a second drive of this store mounted at /sub.
async function populateFull () {
  const w = (path, data, opts) => p(cb => drive.writeFile(path, data, opts || {}, cb))
  await w('/hello.txt', Buffer.from('hello from js'))
  await w('/empty', Buffer.alloc(0))
  await p(cb => drive.mkdir('/empty-dir', cb))
  await w('/big.bin', pattern(1, 1200000))
  await new Promise((resolve, reject) => {
    const ws = drive.createWriteStream('/streamed.txt')
    ws.on('error', reject)
    ws.on('finish', resolve)
    for (let i = 0; i < 4; i++) ws.write(Buffer.from(`chunk ${i}\n`))
    ws.end(Buffer.from('last\n'))
  })
  await w('/a/b/c/deep.txt', Buffer.from('deep in implicit directories'))
  await w('/ünïcödé/文件.txt', Buffer.from('ünïcode ✓'))
  await w('/meta.txt', Buffer.from('m'), { metadata: { author: Buffer.from('js'), empty: Buffer.alloc(0) } })
  await p(cb => drive.symlink('/hello.txt', '/abs-link', cb))
  await p(cb => drive.symlink('../hello.txt', '/a/rel-link', cb))
  const sub = hyperdrive(store.namespace('sub'))
  await p(cb => sub.ready(cb))
  await p(cb => sub.writeFile('/inner.txt', Buffer.from('inside the mounted drive'), cb))
  await p(cb => sub.writeFile('/deeper/two-blocks.bin', pattern(2, 600000), cb))
  await p(cb => sub.mkdir('/sub-empty', cb))
  await p(cb => drive.mount('/sub', sub.key, cb))
  // Written through the mount: lands in the sub drive's feeds.
  await w('/sub/through.txt', Buffer.from('written through the mount'))
}

// `files` files (default 200): file n is /d<n % 10>/f<n>.bin, 700000 bytes (2 blocks) when
// n % 20 == 7, else (n * 37) % 16 + 1 KiB; bytes as pattern(n).
function largeSize (n) {
  return n % 20 === 7 ? 700000 : (((n * 37) % 16) + 1) * 1024
}

async function populateLarge (files) {
  for (let n = 0; n < files; n++) {
    await p(cb => drive.writeFile(`/d${n % 10}/f${n}.bin`, pattern(n, largeSize(n)), cb))
  }
}

function statJson (st) {
  const out = {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    blocks: st.blocks,
    offset: st.offset,
    byteOffset: st.byteOffset,
    mtime: st.mtime.getTime(),
    ctime: st.ctime.getTime(),
    metadata: {}
  }
  if (st.linkname) out.linkname = st.linkname
  if (st.mount) out.mount = { key: hex(st.mount.key), version: st.mount.version || 0, hypercore: !!st.mount.hypercore }
  for (const [k, v] of Object.entries(st.metadata || {})) out.metadata[k] = v ? hex(v) : null
  return out
}

async function list () {
  const names = await p(cb => drive.readdir('/', { recursive: true }, cb))
  const entries = {}
  for (const name of names) {
    const path = '/' + name
    const st = await p(cb => drive.lstat(path, cb))
    const entry = statJson(st)
    if (st.isSymbolicLink()) {
      const target = await p(cb => drive.stat(path, cb))
      entry.target = statJson(target)
      if (target.isFile()) entry.targetHex = hex(await p(cb => drive.readFile(path, cb)))
    } else if (st.isFile()) {
      entry.hex = hex(await p(cb => drive.readFile(path, cb)))
    }
    entries[name] = entry
  }
  const content = await p(cb => drive.getContent(cb))
  return { version: drive.version, contentKey: hex(content.key), names, entries }
}

function stored (feed) {
  const blocks = []
  for (let i = 0; i < feed.length; i++) if (feed.has(i)) blocks.push(i)
  return blocks
}

async function read (path) {
  const data = await p(cb => drive.readFile(path, cb))
  const st = await p(cb => drive.stat(path, cb))
  const content = await p(cb => drive.getContent(cb))
  return {
    hex: hex(data),
    stat: statJson(st),
    content: { length: content.length, stored: stored(content) },
    metadata: { length: drive.metadata.length, stored: stored(drive.metadata) }
  }
}

async function wait (path, ms) {
  const until = Date.now() + ms
  for (;;) {
    try {
      return statJson(await p(cb => drive.stat(path, cb)))
    } catch (err) {
      if (err.code !== 'ENOENT') throw err
    }
    if (Date.now() > until) throw new Error(`${path} did not appear within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function run (command) {
  switch (command.cmd) {
    case 'sync':
      if (drive.metadata.length < command.version) {
        await p(cb => drive.metadata.update({ minLength: command.version }, cb))
      }
      return { version: drive.version }
    case 'list': return list()
    case 'read': return read(command.path)
    case 'write':
      await p(cb => drive.writeFile(command.path, Buffer.from(command.hex, 'hex'), cb))
      return { version: drive.version }
    case 'wait': return { stat: await wait(command.path, command.ms || 20000) }
    default: throw new Error('unknown command ' + JSON.stringify(command))
  }
}

async function main () {
  await p(cb => drive.ready(cb))
  if (drive.writable && drive.version === 1) {
    if (args.populate === 'full') await populateFull()
    else if (args.populate === 'large') await populateLarge(Number(args.files || 200))
  }
  const ready = { event: 'ready', key: hex(drive.key), version: drive.version }
  if (args.listen) {
    ready.port = await replication.listen(0)
  } else if (args.connect) {
    replication.replicate(net.connect(Number(args.connect), '127.0.0.1'), true)
  }
  emit(ready)

  // One command at a time, in order.
  let queue = Promise.resolve()
  const lines = readline.createInterface({ input: process.stdin })
  lines.on('line', line => {
    if (!line.trim()) return
    queue = queue.then(async () => {
      try {
        emit({ ok: true, ...await run(JSON.parse(line)) })
      } catch (err) {
        emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
      }
    })
  })
  lines.on('close', () => queue.then(shutdown))
}

function shutdown () {
  replication.close()
  drive.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}

main().catch(err => {
  emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
  process.exit(1)
})
