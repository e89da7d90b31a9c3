#!/usr/bin/env node
'use strict'
// Runs a workload against real JS hypertrie@5.1.3 on a RAM feed and prints what it wrote,
// for hyperd's trie compatibility test (tests/tests/js_trie.rs).
//
//   node trie-tool.js WORKLOAD.json [--collide]
//
// --collide hashes a key component `#collide:<group>:<name>` as `#collide:<group>`, as
// hyperd's test builds do (hypertrie/src/path.rs), to force 64-bit hash collisions.
//
// The workload is a JSON array of steps:
//   {"op": "put", "key": K, "value": HEX, "hidden": B, "flags": N}
//   {"op": "del", "key": K, "hidden": B}
//   {"op": "batch", "ops": [put or del steps, with "type" instead of "op"]}
//   {"op": "list", "prefix": P, "recursive": B, "reverse": B, "gt": B, "hidden": B}
//   {"op": "get", "key": K, "hidden": B}
//   {"op": "diff", "version": V, "prefix": P, "hidden": B}  (current against checkout(V))
//   {"op": "history", "gte"|"gt": N, "lte"|"lt": N, "reverse": B}  (each bound optional)
//   {"op": "diffResume", "version": V, "prefix": P, "hidden": B, "after": N}  (a diff's
//      checkpoint after N entries, and the diff resumed from it)
//   {"op": "mount", "path": P, "key": HEX, "version": N?, "value": HEX}  (the batch
//      mountable-hypertrie 2.8's mount() writes for a mount outside other mounts, its
//      record encoded by mountable-hypertrie's own schema)
//   {"op": "unmount", "path": P}
// It prints one JSON line: {"blocks": [HEX, ...], "results": [...]}, a result per step
// (the seqs a write returned, the keys a list returned, the seq a get found or null, the
// [key, left seq, right seq] of each diff entry, 0 for none, the seqs a history read,
// [checkpoint hex, entries before it, entries resumed from it] for diffResume).
const fs = require('fs')
const hypertrie = require('hypertrie')
const ram = require('random-access-memory')
const siphash24 = require('siphash24-universal')
const unixify = require('unixify')
const posix = require('path').posix
const { Mount } = require('mountable-hypertrie/lib/messages')

function fail (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack ? err.stack : err) }))
  process.exit(1)
}

const steps = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const collide = process.argv.includes('--collide')
const db = hypertrie(ram, { valueEncoding: 'binary', extension: false, hash: collide ? collidingHash : null })

// hypertrie's own hash (lib/node.js), but `#collide:<group>:<name>` hashes as
// `#collide:<group>`.
function collidingHash (key) {
  const parts = key.split('/')
  if (parts[0] === '') parts.shift()
  if (parts[parts.length - 1] === '') parts.pop()
  const out = Buffer.alloc(8 * parts.length)
  parts.forEach((part, i) => {
    const forced = /^(#collide:[^:]*):/.exec(part)
    siphash24(out.subarray(8 * i, 8 * i + 8), Buffer.from(forced ? forced[1] : part), Buffer.alloc(16))
  })
  return out
}

function value (hex) { return Buffer.from(hex, 'hex') }
function mountPath (path) {
  path = unixify(path)
  return path.startsWith('/') ? path.slice(1) : path
}
function seqs (nodes) { return (Array.isArray(nodes) ? nodes : [nodes]).filter(Boolean).map(n => n.seq) }

function run (step, cb) {
  switch (step.op) {
    case 'put':
      return db.put(step.key, value(step.value), { hidden: step.hidden, flags: step.flags }, (err, node) => cb(err, seqs(node)))
    case 'del':
      return db.del(step.key, { hidden: step.hidden }, (err, node) => cb(err, seqs(node)))
    case 'batch':
      return db.batch(step.ops.map(o => o.type === 'put'
        ? { type: 'put', key: o.key, value: value(o.value), hidden: o.hidden, flags: o.flags }
        : { type: 'del', key: o.key, hidden: o.hidden }), (err, nodes) => cb(err, seqs(nodes || [])))
    case 'mount': {
      // mountable-hypertrie's normalize() and mount() (index.js), minus the subtrie lookup
      // (which would open the mounted key from a corestore).
      const path = mountPath(step.path)
      const record = Mount.encode({ key: value(step.key), localPath: path, version: step.version })
      return db.batch([
        { type: 'put', key: posix.join('/mounts', path), flags: 1, hidden: true, value: record },
        { type: 'put', key: path, flags: 1, value: value(step.value) }
      ], (err, nodes) => cb(err, seqs(nodes || [])))
    }
    case 'unmount': {
      const path = mountPath(step.path)
      return db.batch([
        { type: 'del', key: posix.join('/mounts', path), hidden: true },
        { type: 'del', key: path }
      ], (err, nodes) => cb(err, seqs(nodes || [])))
    }
    case 'list':
      return db.list(step.prefix, { recursive: step.recursive, reverse: step.reverse, gt: step.gt, hidden: step.hidden },
        (err, nodes) => cb(err, (nodes || []).map(n => n.key)))
    case 'diff': {
      const out = []
      const ite = db.diff(step.version, step.prefix, { hidden: step.hidden })
      const next = () => ite.next((err, e) => {
        if (err) return cb(err)
        if (!e) return cb(null, out)
        out.push([e.key, e.left ? e.left.seq : 0, e.right ? e.right.seq : 0])
        next()
      })
      return next()
    }
    case 'diffResume': {
      const opts = () => ({ hidden: step.hidden })
      const entry = e => [e.key, e.left ? e.left.seq : 0, e.right ? e.right.seq : 0]
      const first = []
      const ite = db.diff(step.version, step.prefix, opts())
      const take = () => {
        if (first.length >= step.after) return settled()
        ite.next((err, e) => {
          if (err) return cb(err)
          if (!e) return settled()
          first.push(entry(e))
          take()
        })
      }
      // The checkpoint is taken once the nodes the last step asked for have loaded.
      const settled = () => {
        if (ite._pending) return setImmediate(settled)
        const checkpoint = ite.checkpoint()
        const rest = []
        const resumed = db.diff(checkpoint, step.prefix, opts())
        const next = () => resumed.next((err, e) => {
          if (err) return cb(err)
          if (!e) return cb(null, [checkpoint.toString('hex'), first, rest])
          rest.push(entry(e))
          next()
        })
        next()
      }
      return take()
    }
    case 'history': {
      const opts = { reverse: step.reverse }
      for (const bound of ['gte', 'gt', 'lte', 'lt']) if (typeof step[bound] === 'number') opts[bound] = step[bound]
      const out = []
      const ite = db.history(opts)
      const next = () => ite.next((err, node) => {
        if (err) return cb(err)
        if (!node) return cb(null, out)
        out.push(node.seq)
        next()
      })
      return next()
    }
    case 'get':
      return db.get(step.key, { hidden: step.hidden }, (err, node) => cb(err, node ? node.seq : null))
    default:
      return cb(new Error('unknown step ' + JSON.stringify(step)))
  }
}

db.ready(err => {
  if (err) return fail(err)
  const results = []
  let i = 0
  next()
  function next () {
    if (i < steps.length) {
      return run(steps[i++], (err, result) => {
        if (err) return fail(err)
        results.push(result)
        next()
      })
    }
    const blocks = []
    const feed = db.feed
    let b = 0
    read()
    function read () {
      if (b >= feed.length) return console.log(JSON.stringify({ ok: true, blocks, results }))
      feed.get(b++, { valueEncoding: 'binary' }, (err, data) => {
        if (err) return fail(err)
        blocks.push(data.toString('hex'))
        read()
      })
    }
  }
})
