#!/usr/bin/env node
'use strict'
// Real JS hyperdrive@10.21.0 on a corestore directory, for hyperd's drive compatibility
// tests (tests/tests/js_drive.rs, js_import.rs).
//
//   node drive-tool.js read --dir D            print every entry of the store's default drive
//   node drive-tool.js write --dir D --path P --text T   write a file, then print as read
//   node drive-tool.js populate --dir D        write a fixed set of entries (below), then print
//
// Prints one JSON line: {"key", "contentKey", "version", "entries": {path: {...}}}, each
// entry with mode, size, offset, blocks, byteOffset, mtime (ms), and the file's bytes as
// hex (files, with `tailHex` from the middle on through a ranged read stream), its target
// (symlinks) or nothing (directories), and its metadata as hex.
const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs } = require('./common')

function fail (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack ? err.stack : err) }))
  process.exit(1)
}

const args = parseArgs(process.argv.slice(2))
const mode = args._[0]
const store = new Corestore(args.dir)
const drive = hyperdrive(store)

const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

async function main () {
  await p(cb => drive.ready(cb))
  if (mode === 'write') {
    await p(cb => drive.writeFile(args.path, Buffer.from(args.text), cb))
  } else if (mode === 'populate') {
    await populate()
  } else if (mode !== 'read') {
    throw new Error('usage: drive-tool.js read|write|populate --dir D [--path P --text T]')
  }
  const names = await p(cb => drive.readdir('/', { recursive: true }, cb))
  const entries = {}
  for (const name of names) {
    const path = '/' + name
    const st = await p(cb => drive.lstat(path, cb))
    const entry = {
      mode: st.mode,
      size: st.size,
      offset: st.offset,
      blocks: st.blocks,
      byteOffset: st.byteOffset,
      mtime: st.mtime.getTime(),
      metadata: {}
    }
    for (const [k, v] of Object.entries(st.metadata || {})) entry.metadata[k] = v ? Buffer.from(v).toString('hex') : null
    if (st.isSymbolicLink()) entry.linkname = st.linkname
    else if (st.isFile()) {
      entry.hex = (await p(cb => drive.readFile(path, cb))).toString('hex')
      // From the middle: the read stream seeks by the Stat's byteOffset.
      if (st.size > 1) entry.tailHex = (await readFrom(path, Math.floor(st.size / 2))).toString('hex')
    }
    entries[name] = entry
  }
  // The content feed is opened lazily, by the first read.
  const content = await p(cb => drive.getContent(cb))
  console.log(JSON.stringify({
    ok: true,
    key: drive.key.toString('hex'),
    contentKey: content.key.toString('hex'),
    version: drive.version,
    entries
  }))
  await p(cb => drive.close(cb))
}

// The bytes of the file at `path` from byte `start` on, through a read stream.
function readFrom (path, start) {
  return new Promise((resolve, reject) => {
    const chunks = []
    drive.createReadStream(path, { start })
      .on('data', (c) => chunks.push(c))
      .on('error', reject)
      .on('end', () => resolve(Buffer.concat(chunks)))
  })
}

// A small drive with every kind of entry: a file, a multi-write stream, a 600 KB file of
// bytes i % 251, an empty file, an explicit empty directory, a symlink and metadata.
async function populate () {
  await p(cb => drive.writeFile('/a.txt', Buffer.from('written by js'), cb))
  await new Promise((resolve, reject) => {
    const ws = drive.createWriteStream('/dir/b.txt')
    ws.on('error', reject)
    ws.on('finish', resolve)
    ws.write(Buffer.from('x1 '))
    ws.write(Buffer.from('x2 '))
    ws.end(Buffer.from('x3'))
  })
  const big = Buffer.alloc(600000)
  for (let i = 0; i < big.length; i++) big[i] = i % 251
  await p(cb => drive.writeFile('/big.bin', big, cb))
  await p(cb => drive.writeFile('/empty', Buffer.alloc(0), cb))
  await p(cb => drive.mkdir('/empty-dir', cb))
  await p(cb => drive.symlink('/a.txt', '/ln', cb))
  await p(cb => drive.writeFile('/m.txt', Buffer.from('m'), { metadata: { k: Buffer.from('v') } }, cb))
}

main().catch(fail)
