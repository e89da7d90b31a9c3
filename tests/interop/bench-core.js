// The JS side of the `log` benchmark (tests/benches/log.rs): times one workload on a real
// hypercore@9 feed stored as flat files in a directory and prints one JSON line.
//
//   node bench-core.js append --dir D --count N --size S --batch B [--wait-go]
//       appends N blocks of S bytes, B blocks per `append` call, into a new feed in D.
//       With --wait-go it prints READY once the blocks are made and the feed is open,
//       and starts the clock when a line arrives on stdin (so the caller can set up the
//       machine's memory state right before; see tests/benches/log.rs).
//   node bench-core.js get --dir D --count N [--seed X]
//       N random `get`s, each awaited before the next, on the feed in D
//   node bench-core.js read --dir D
//       reads the whole feed in D with `createReadStream()` (default options)
//
// Block contents are the shared deterministic pattern (byte j of block i is (7i + j) mod
// 251, see `make_block` in tests/src/lib.rs) and are generated before the clock starts.
// Opening and closing the feed are outside the timed region. Times are wall clock from
// process.hrtime.bigint().

'use strict'

const hypercore = require('hypercore')
const hcrypto = require('hypercore-crypto')

function parseArgs (argv) {
  const out = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--wait-go') out['wait-go'] = true
    else if (a.startsWith('--')) out[a.slice(2)] = argv[++i]
    else out._.push(a)
  }
  return out
}

function need (args, name) {
  if (args[name] === undefined) throw new Error(`missing --${name}`)
  return args[name]
}

function makeBlock (index, size) {
  const b = Buffer.allocUnsafe(size)
  let v = (7 * index) % 251
  for (let j = 0; j < size; j++) {
    b[j] = v
    v = v === 250 ? 0 : v + 1
  }
  return b
}

// xorshift32, the same sequence the Rust side draws its random indexes from.
function * randomIndexes (seed, count, n) {
  let x = seed >>> 0 || 1
  for (let k = 0; k < count; k++) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    yield x % n
  }
}

// Prints READY and waits for one line on stdin.
async function waitGo () {
  process.stdout.write('READY\n')
  await new Promise((resolve, reject) => {
    process.stdin.once('data', resolve)
    process.stdin.once('end', () => reject(new Error('stdin closed before go')))
  })
  process.stdin.destroy()
}

const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))
const now = () => process.hrtime.bigint()
const secs = (t0, t1) => Number(t1 - t0) / 1e9

async function open (dir, opts) {
  const feed = hypercore(dir, { valueEncoding: 'binary', ...opts })
  await p(cb => feed.ready(cb))
  return feed
}

async function treeHash (feed) {
  if (feed.length === 0) return ''
  const roots = await p(cb => feed.rootHashes(feed.length - 1, cb))
  return hcrypto.tree(roots).toString('hex')
}

async function append (args) {
  const dir = need(args, 'dir')
  const count = Number(need(args, 'count'))
  const size = Number(need(args, 'size'))
  const batchSize = Number(need(args, 'batch'))

  const batches = []
  for (let i = 0; i < count; i += batchSize) {
    const batch = []
    for (let k = i; k < Math.min(count, i + batchSize); k++) batch.push(makeBlock(k, size))
    batches.push(batch)
  }

  const feed = await open(dir, { overwrite: true })
  if (args['wait-go'] !== undefined) await waitGo()
  const t0 = now()
  for (const batch of batches) await p(cb => feed.append(batch, cb))
  const t1 = now()
  const seconds = secs(t0, t1)
  const result = {
    workload: 'append',
    blocks: feed.length,
    bytes: feed.byteLength,
    seconds,
    blocks_per_s: count / seconds,
    mb_per_s: feed.byteLength / seconds / 1e6,
    tree_hash: await treeHash(feed)
  }
  await p(cb => feed.close(cb))
  return result
}

async function get (args) {
  const dir = need(args, 'dir')
  const count = Number(need(args, 'count'))
  const seed = Number(args.seed || 1)

  const feed = await open(dir, { createIfMissing: false })
  const n = feed.length
  const indexes = Array.from(randomIndexes(seed, count, n))
  let checked = 0
  const t0 = now()
  for (const i of indexes) {
    const block = await p(cb => feed.get(i, cb))
    if (block[0] !== (7 * i) % 251) throw new Error(`block ${i} has the wrong content`)
    checked += block.length
  }
  const t1 = now()
  const seconds = secs(t0, t1)
  await p(cb => feed.close(cb))
  return { workload: 'get', gets: count, bytes: checked, seconds, mean_us: seconds / count * 1e6 }
}

async function read (args) {
  const dir = need(args, 'dir')
  const feed = await open(dir, { createIfMissing: false })
  let blocks = 0
  let bytes = 0
  const t0 = now()
  for await (const block of feed.createReadStream()) {
    if (block[0] !== (7 * blocks) % 251) throw new Error(`block ${blocks} has the wrong content`)
    blocks++
    bytes += block.length
  }
  const t1 = now()
  const seconds = secs(t0, t1)
  if (blocks !== feed.length) throw new Error(`read ${blocks} of ${feed.length} blocks`)
  await p(cb => feed.close(cb))
  return { workload: 'read', blocks, bytes, seconds, mb_per_s: bytes / seconds / 1e6 }
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const workloads = { append, get, read }
  const fn = workloads[args._[0]]
  if (!fn) throw new Error(`usage: node bench-core.js ${Object.keys(workloads).join('|')} --dir D ...`)
  const result = await fn(args)
  result.node = process.version
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
