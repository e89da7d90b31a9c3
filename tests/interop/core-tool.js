#!/usr/bin/env node
'use strict'
// A small CLI around JS hypercore@9 storage, used by hyperd's on-disk interop tests
// (tests/tests/js_storage.rs). Every subcommand prints exactly one JSON line on stdout at
// the end and exits 0; on failure it prints {"ok":false,"error":...,"code":...} and exits 1.
//
// Block content is deterministic and shared with the Rust tests (tests/src/lib.rs
// make_block): byte j of block i is (7i + j) mod 251; block i has size sizes[i % len].
// Appends are done in batches cycling through the batch sizes; each batch is one
// hypercore append (one signature, for the batch's last block).
const fs = require('fs')
const path = require('path')
const hypercore = require('hypercore')
const crypto = require('hypercore-crypto')
const sodium = require('sodium-universal')

const USAGE = `usage:
  node core-tool.js write  --dir D --seed HEX32 --blocks N --sizes S1,S2,.. --batches B1,B2,..
  node core-tool.js append --dir D --blocks N --sizes S1,S2,.. --batches B1,B2,..
  node core-tool.js read   --dir D [--check-signatures I1,I2,..] [--verify-sizes S1,S2,..]
  node core-tool.js clone  --dir D --from WRITER_DIR --order I1,I2,..
  node core-tool.js hold   --dir D`

function parseArgs (argv) {
  const out = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) { out._.push(a); continue }
    const eq = a.indexOf('=')
    if (eq > -1) { out[a.slice(2, eq)] = a.slice(eq + 1); continue }
    if (i + 1 >= argv.length) throw new Error('missing value for ' + a)
    out[a.slice(2)] = argv[++i]
  }
  return out
}

function required (args, name) {
  if (args[name] === undefined) throw new Error('missing --' + name + '\n' + USAGE)
  return args[name]
}

function intList (s, name, { positive = false } = {}) {
  if (s === '') return []
  const list = String(s).split(',').map(x => {
    const n = Number(x)
    if (!Number.isSafeInteger(n) || n < 0 || (positive && n === 0)) throw new Error('bad --' + name + ' entry: ' + x)
    return n
  })
  return list
}

// Byte j of block i is (7*i + j) mod 251.
function makeBlock (index, size) {
  const buf = Buffer.allocUnsafe(size)
  let v = (7 * index) % 251
  for (let j = 0; j < size; j++) {
    buf[j] = v
    if (++v === 251) v = 0
  }
  return buf
}

class Blake2b256 {
  constructor () {
    this.state = Buffer.alloc(sodium.crypto_generichash_STATEBYTES)
    sodium.crypto_generichash_init(this.state, null, 32)
  }

  update (buf) {
    sodium.crypto_generichash_update(this.state, buf)
    return this
  }

  digest () {
    const out = Buffer.alloc(32)
    sodium.crypto_generichash_final(this.state, out)
    return out.toString('hex')
  }
}

const p = (fn) => new Promise((resolve, reject) => fn((err, val) => err ? reject(err) : resolve(val)))
const hex = (b) => Buffer.from(b).toString('hex')

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function open (dir, key, opts) {
  const feed = key ? hypercore(dir, key, opts) : hypercore(dir, opts)
  // A failed open is also emitted as 'error'; the ready callback reports it.
  feed.on('error', () => {})
  return p(cb => feed.ready(cb)).then(() => feed)
}

// Appends blocks [feed.length, total) in batches cycling through `batches`; returns the
// signature stored at the end of every batch.
async function appendBlocks (feed, total, sizes, batches) {
  if (!feed.writable) throw new Error('the feed is not writable')
  const signatures = []
  let k = 0
  while (feed.length < total) {
    const n = Math.min(batches[k++ % batches.length], total - feed.length)
    const batch = []
    for (let i = feed.length; i < feed.length + n; i++) batch.push(makeBlock(i, sizes[i % sizes.length]))
    await p(cb => feed.append(batch, cb))
    const sig = await p(cb => feed._storage.getSignature(feed.length - 1, cb))
    signatures.push({ index: feed.length - 1, signature: hex(sig) })
  }
  return signatures
}

// BLAKE2b-256 over blocks [0, length) read back through the feed, plus every block size.
async function hashAll (feed) {
  const h = new Blake2b256()
  const sizes = []
  for (let i = 0; i < feed.length; i += 256) {
    const end = Math.min(feed.length, i + 256)
    const blocks = await p(cb => feed.getBatch(i, end, { wait: false }, cb))
    for (const b of blocks) {
      h.update(b)
      sizes.push(b.length)
    }
  }
  return { blake2b: h.digest(), sizes }
}

function summary (feed) {
  return {
    key: hex(feed.key),
    discoveryKey: hex(feed.discoveryKey),
    writable: feed.writable,
    length: feed.length,
    byteLength: feed.byteLength
  }
}

async function cmdWrite (args) {
  const dir = required(args, 'dir')
  const seed = Buffer.from(required(args, 'seed'), 'hex')
  if (seed.length !== 32) throw new Error('--seed must be 32 bytes of hex')
  const total = intList(required(args, 'blocks'), 'blocks')[0]
  const sizes = intList(required(args, 'sizes'), 'sizes')
  const batches = intList(required(args, 'batches'), 'batches', { positive: true })
  if (!sizes.length || !batches.length) throw new Error('--sizes and --batches must not be empty')
  const keyFile = path.join(dir, 'key')
  if (fs.existsSync(keyFile) && fs.statSync(keyFile).size > 0) throw new Error('a feed is already stored in ' + dir)

  const kp = crypto.keyPair(seed)
  const feed = await open(dir, kp.publicKey, { secretKey: kp.secretKey })
  const signatures = await appendBlocks(feed, total, sizes, batches)
  const { blake2b } = await hashAll(feed)
  const out = Object.assign({ ok: true }, summary(feed), { blake2b, signatures })
  await p(cb => feed.close(cb))
  emit(out)
}

async function cmdAppend (args) {
  const dir = required(args, 'dir')
  const total = intList(required(args, 'blocks'), 'blocks')[0]
  const sizes = intList(required(args, 'sizes'), 'sizes')
  const batches = intList(required(args, 'batches'), 'batches', { positive: true })
  if (!sizes.length || !batches.length) throw new Error('--sizes and --batches must not be empty')

  const feed = await open(dir, null, { createIfMissing: false })
  const startLength = feed.length
  const signatures = await appendBlocks(feed, total, sizes, batches)
  const { blake2b } = await hashAll(feed)
  const out = Object.assign({ ok: true }, summary(feed), { startLength, blake2b, signatures })
  await p(cb => feed.close(cb))
  emit(out)
}

async function cmdRead (args) {
  const dir = required(args, 'dir')
  const checkSigs = args['check-signatures'] !== undefined ? intList(args['check-signatures'], 'check-signatures') : []
  const verifySizes = args['verify-sizes'] !== undefined ? intList(args['verify-sizes'], 'verify-sizes') : null

  const feed = await open(dir, null, { createIfMissing: false })
  const out = Object.assign({ ok: true }, summary(feed))
  const { blake2b, sizes } = await hashAll(feed)
  out.blake2b = blake2b
  out.sizesBlake2b = new Blake2b256().update(Buffer.from(sizes.join(','))).digest()

  if (verifySizes) {
    // Every block must equal makeBlock(i, verifySizes[i % len]).
    let mismatches = 0
    let firstMismatch = -1
    for (let i = 0; i < feed.length; i += 256) {
      const end = Math.min(feed.length, i + 256)
      const blocks = await p(cb => feed.getBatch(i, end, { wait: false }, cb))
      for (let j = 0; j < blocks.length; j++) {
        const idx = i + j
        if (!blocks[j].equals(makeBlock(idx, verifySizes[idx % verifySizes.length]))) {
          mismatches++
          if (firstMismatch === -1) firstMismatch = idx
        }
      }
    }
    out.contentMismatches = mismatches
    out.firstMismatch = firstMismatch
  }

  out.audit = await p(cb => feed.audit(cb))
  out.lengthAfterAudit = feed.length
  out.downloaded = feed.length ? feed.downloaded(0, feed.length) : 0

  if (feed.length) {
    const last = feed.length - 1
    const sig = await p(cb => feed.signature(last, cb))
    out.signature = { index: sig.index, signature: hex(sig.signature) }
    out.verified = await p(cb => feed.verify(last, sig.signature, cb))
    const roots = await p(cb => feed.rootHashes(last, cb))
    out.rootHashes = roots.map(r => ({ index: r.index, size: r.size, hash: hex(r.hash) }))
  } else {
    out.signature = null
    out.verified = null
    out.rootHashes = []
  }

  out.signatures = []
  for (const i of checkSigs) {
    const sig = await p(cb => feed.signature(i, cb))
    let verified
    try {
      verified = await p(cb => feed.verify(sig.index, sig.signature, cb))
    } catch (err) {
      verified = false
    }
    out.signatures.push({ at: i, index: sig.index, signature: hex(sig.signature), verified })
  }

  await p(cb => feed.close(cb))
  emit(out)
}

async function cmdClone (args) {
  const dir = required(args, 'dir')
  const from = required(args, 'from')
  const order = intList(required(args, 'order'), 'order')

  const writer = await open(from, null, { createIfMissing: false })
  const clone = await open(dir, writer.key, { sparse: true })
  const steps = []
  for (const i of order) {
    const digest = clone.digest(i)
    const proof = await p(cb => writer.proof(i, { digest }, cb))
    const step = {
      index: i,
      digest,
      nodes: proof.nodes.map(n => n.index),
      signature: proof.signature ? hex(proof.signature) : null
    }
    const data = await p(cb => writer.get(i, { wait: false }, cb))
    await p(cb => clone.put(i, data, proof, cb))
    step.length = clone.length
    steps.push(step)
  }
  const out = Object.assign({ ok: true }, summary(clone), {
    digests: steps.map(s => s.digest),
    downloaded: clone.length ? clone.downloaded(0, clone.length) : 0,
    steps
  })
  await p(cb => clone.close(cb))
  await p(cb => writer.close(cb))
  emit(out)
}

async function cmdHold (args) {
  const dir = required(args, 'dir')
  const feed = await open(dir, null, { createIfMissing: false })
  emit(Object.assign({ ok: true, event: 'holding' }, summary(feed)))
  await new Promise(resolve => {
    process.stdin.on('end', resolve)
    process.stdin.on('close', resolve)
    process.stdin.on('error', resolve)
    process.stdin.resume()
  })
  await p(cb => feed.close(cb))
}

const COMMANDS = { write: cmdWrite, append: cmdAppend, read: cmdRead, clone: cmdClone, hold: cmdHold }

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const name = args._[0]
  if (name === 'help' || args.help) {
    process.stderr.write(USAGE + '\n')
    process.exit(0)
  }
  const cmd = COMMANDS[name]
  if (!cmd) throw new Error('unknown subcommand ' + JSON.stringify(name) + '\n' + USAGE)
  await cmd(args)
}

main().catch(function (err) {
  emit({ ok: false, error: err.message, code: err.code || null })
  process.exit(1)
})
