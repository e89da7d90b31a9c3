#!/usr/bin/env node
'use strict'
// Real JS hyperdrive@10.21.0 versions on a corestore directory, for hyperd's test of the
// drive diff and history (tests/tests/js_trie_drive.rs).
//
//   node drive-versions.js populate --dir D
//       writes a drive with files, a directory, deletes, a mount (and its removal), a
//       pinned mount, a symlink, metadata and a tag; prints {"key", "version"}
//   node drive-versions.js diff --dir D [--prefix P]
//       prints {"version", "diffs": [entries of createDiffStream(v, P) for v = 0..version],
//       "steps": [entries of checkout(v).createDiffStream(v - 1, P) for v = 0..version]}
//
// An entry is {type, name, seq?, previousSeq?, stat?: {mode, size, blocks, offset,
// byteOffset, mtime, ctime, linkname}, mountKey?}.
const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs, emit } = require('./common')

const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

function entry (e) {
  const out = { type: e.type, name: e.name }
  if (typeof e.seq === 'number') out.seq = e.seq
  if (e.previous && typeof e.previous.seq === 'number') out.previousSeq = e.previous.seq
  if (e.type === 'put') {
    const s = e.value
    out.stat = { mode: s.mode, size: s.size, blocks: s.blocks, offset: s.offset, byteOffset: s.byteOffset, mtime: +s.mtime, ctime: +s.ctime }
    if (s.linkname) out.stat.linkname = s.linkname
  }
  if (e.type === 'mount' && e.value && e.value.key) out.mountKey = e.value.key.toString('hex')
  return out
}

function collect (stream) {
  return new Promise((resolve, reject) => {
    const out = []
    stream.on('data', e => out.push(entry(e)))
    stream.on('error', reject)
    stream.on('end', () => resolve(out))
  })
}

async function populate (store, drive) {
  const sub = hyperdrive(store.namespace('sub'))
  await p(cb => sub.ready(cb))
  await p(cb => sub.writeFile('/inner.txt', Buffer.from('inside'), cb))
  await p(cb => sub.writeFile('/more.txt', Buffer.from('more'), cb))
  const other = hyperdrive(store.namespace('other'))
  await p(cb => other.ready(cb))
  await p(cb => other.writeFile('/o.txt', Buffer.from('o'), cb))

  await p(cb => drive.writeFile('/a.txt', Buffer.from('a'), cb))
  await p(cb => drive.writeFile('/b.txt', Buffer.from('bb'), cb))
  await p(cb => drive.mkdir('/docs', cb))
  await p(cb => drive.writeFile('/docs/x.txt', Buffer.from('x'), cb))
  await p(cb => drive.writeFile('/docs/y.txt', Buffer.from('yy'), cb))
  await p(cb => drive.writeFile('/a.txt', Buffer.from('a again'), cb))
  await p(cb => drive.unlink('/b.txt', cb))
  await p(cb => drive.mount('/sub', sub.key, cb))
  await p(cb => drive.writeFile('/c.txt', Buffer.from('c'), cb))
  await p(cb => drive.mount('/pinned', sub.key, { version: 2 }, cb))
  await p(cb => drive.mount('/gone', other.key, cb))
  await p(cb => drive.unlink('/gone', cb))
  await p(cb => drive.symlink('/a.txt', '/link', cb))
  await p(cb => drive.writeFile('/m.txt', Buffer.from('m'), { metadata: { k: Buffer.from('v') } }, cb))
  await p(cb => drive.createTag('t', cb))
  await p(cb => drive.unlink('/docs/x.txt', cb))
  emit({ ok: true, key: drive.key.toString('hex'), version: drive.version })
}

async function diff (drive, prefix) {
  const diffs = []
  const steps = []
  for (let v = 0; v <= drive.version; v++) {
    diffs.push(await collect(drive.createDiffStream(v, prefix)))
    steps.push(v < 2 ? [] : await collect(drive.checkout(v).createDiffStream(v - 1, prefix)))
  }
  emit({ ok: true, version: drive.version, diffs, steps })
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const store = new Corestore(args.dir)
  await p(cb => store.ready(cb))
  const drive = hyperdrive(store)
  await p(cb => drive.ready(cb))
  if (args._[0] === 'populate') await populate(store, drive)
  else if (args._[0] === 'diff') await diff(drive, args.prefix || '/')
  else throw new Error('usage: drive-versions.js populate|diff --dir D [--prefix P]')
  await p(cb => drive.close(cb))
}

main().catch(err => {
  emit({ ok: false, error: String(err && err.stack ? err.stack : err) })
  process.exit(1)
})
