#!/usr/bin/env node
'use strict'
// Serves a real JS hyperdrive@10.21.0 over TCP on 127.0.0.1, for hyperd's download test
// (tests/tests/js_download.rs).
//
//   node drive-serve.js --dir D [--port 0]
//
// Writes the tree below into the store's default drive (and a second drive mounted at
// /docs/mnt), prints one JSON line
//   {"event": "ready", "port", "key", "contentKey", "mountKey", "mountContentKey",
//    "files": {path: {"offset", "blocks", "size"}},   every file of the tree, as JS stats it
//    "stats": {path: {"blocks", "size", "downloadedBlocks"}}}   JS drive.stats('/docs')
// then serves every core of the store until stdin ends. On failure it prints
// {"ok": false, "error"} and exits 1.
const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs, promisify, emit, stdinIsPipe, storeReplication } = require('./common')

const p = promisify

// Bytes i % 251 from `seed`, so every file's content differs.
function bytes (n, seed) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i + seed) % 251
  return b
}

async function writeStream (drive, path, chunks) {
  await new Promise((resolve, reject) => {
    const ws = drive.createWriteStream(path)
    ws.on('error', reject)
    ws.on('finish', resolve)
    for (const c of chunks) ws.write(c)
    ws.end()
  })
}

async function populate (drive, mounted) {
  await p(cb => drive.writeFile('/docs/a.txt', Buffer.from('written by js'), cb))
  await p(cb => drive.writeFile('/docs/big.bin', bytes(600000, 1), cb))
  await writeStream(drive, '/docs/sub/c.bin', [bytes(3000, 2), bytes(4000, 3), bytes(5000, 4)])
  await p(cb => drive.writeFile('/docs/empty', Buffer.alloc(0), cb))
  await p(cb => drive.mkdir('/docs/dir', cb))
  await p(cb => drive.symlink('/docs/a.txt', '/docs/link', cb))
  await p(cb => drive.writeFile('/outside.bin', bytes(70000, 5), cb))
  await p(cb => mounted.writeFile('/m1.bin', bytes(200000, 6), cb))
  await writeStream(mounted, '/m2.bin', [bytes(100, 7), bytes(200, 8)])
  await p(cb => drive.mount('/docs/mnt', mounted.key, cb))
}

async function describe (drive, prefix) {
  const out = {}
  const names = await p(cb => drive.readdir('/', { recursive: true }, cb))
  for (const name of names) {
    const st = await p(cb => drive.lstat('/' + name, cb))
    if (st.isSymbolicLink() || !st.isFile() || st.mount) continue
    out[prefix + '/' + name] = { offset: st.offset, blocks: st.blocks, size: st.size }
  }
  return out
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  if (!args.dir) throw new Error('usage: drive-serve.js --dir D [--port 0]')
  const store = new Corestore(args.dir)
  await store.ready()
  const drive = hyperdrive(store)
  const mounted = hyperdrive(store.namespace('mounted'))
  await p(cb => drive.ready(cb))
  await p(cb => mounted.ready(cb))
  await populate(drive, mounted)
  const content = await p(cb => drive.getContent(cb))
  const mountedContent = await p(cb => mounted.getContent(cb))
  const jsStats = await p(cb => drive.stats('/docs', { recursive: true }, cb))
  const stats = {}
  for (const [path, s] of jsStats) stats[path] = s
  const files = { ...(await describe(drive, '')), ...(await describe(mounted, '/docs/mnt')) }
  // readdir enters the mount: its entries there have the mounted drive's offsets.
  for (const path of Object.keys(files)) if (path.startsWith('/docs/mnt/docs')) delete files[path]

  const replication = storeReplication(store)
  const port = await replication.listen(args.port)
  emit({
    event: 'ready',
    port,
    key: drive.key.toString('hex'),
    contentKey: content.key.toString('hex'),
    mountKey: mounted.key.toString('hex'),
    mountContentKey: mountedContent.key.toString('hex'),
    files,
    stats
  })

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

main().catch(err => {
  emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
  process.exit(1)
})
