// The JS side of the `drive` benchmark (tests/benches/drive.rs): times one workload on a
// real hyperdrive@10.21 (the default drive of a corestore@5 directory) and prints one JSON
// line with the seconds, the peak resident memory of this process and a content check.
//
//   node bench-drive.js write  --dir D --path P --bytes N --chunk C
//       writes one file of N bytes through createWriteStream, C bytes per write()
//   node bench-drive.js read   --dir D --path P
//       reads the file P through createReadStream()
//   node bench-drive.js small  --dir D --count N --size S
//       writes N files of S bytes with writeFile, one at a time, in 10 x 10 directories
//   node bench-drive.js list   --dir D --count N
//       readdir('/', { recursive: true }), then stat of every name
//   node bench-drive.js random --dir D --path P --count N --size S --seed X
//       N reads of S bytes at random offsets of P, each a createReadStream({ start, end })
//
// Every workload takes --wait-go: it prints READY once the drive is open and its data is
// made, and starts the clock when a line arrives on stdin (the caller sets up the machine's
// memory state right before; see tests/src/bench.rs `Mem`). Opening and closing the drive
// are outside the clock. Contents are the shared pattern (byte j of block i is (7i + j) mod
// 251, `make_block` in tests/src/lib.rs): the file's chunk i is block i of C bytes, small
// file n is block n of S bytes with n in its first four bytes, and the Rust side writes the
// same, so both content feeds end with the same tree hash. `max_rss_kib` is getrusage's ru_maxrss (the high-water mark).

'use strict'

const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const hcrypto = require('hypercore-crypto')
const { parseArgs, makeBlock } = require('./common')

const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))
const now = () => process.hrtime.bigint()
const secs = (t0, t1) => Number(t1 - t0) / 1e9

function need (args, name) {
  if (args[name] === undefined) throw new Error(`missing --${name}`)
  return args[name]
}

// The expected byte at file position `pos` of a file made of blocks of `chunk` bytes.
function expected (pos, chunk) {
  return (7 * Math.floor(pos / chunk) + (pos % chunk)) % 251
}

// The path of small file n: 10 x 10 directories, files spread over them in turn.
function smallPath (n) {
  const d = n % 100
  return `/d${Math.floor(d / 10)}/e${d % 10}/f${n}`
}

// The content of small file n: block n with n in its first four bytes (little-endian), so
// no two files are the same (as \`small_file\` in tests/benches/drive.rs).
function smallFile (n, size) {
  const data = makeBlock(n, size)
  const tag = Buffer.alloc(4)
  tag.writeUInt32LE(n >>> 0)
  tag.copy(data, 0, 0, Math.min(4, size))
  return data
}

// xorshift32, the same sequence as `random_indexes` in tests/src/lib.rs.
function * randomIndexes (seed, count, n) {
  let x = seed >>> 0 || 1
  for (let k = 0; k < count; k++) {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    yield x % n
  }
}

async function waitGo () {
  process.stdout.write('READY\n')
  await new Promise((resolve, reject) => {
    process.stdin.once('data', resolve)
    process.stdin.once('end', () => reject(new Error('stdin closed before go')))
  })
  process.stdin.destroy()
}

async function open (dir) {
  const store = new Corestore(dir)
  const drive = hyperdrive(store)
  await p(cb => drive.ready(cb))
  return drive
}

async function contentTreeHash (drive) {
  const content = await p(cb => drive.getContent(cb))
  if (content.length === 0) return ''
  const roots = await p(cb => content.rootHashes(content.length - 1, cb))
  return hcrypto.tree(roots).toString('hex')
}

async function write (drive, args, go) {
  const path = need(args, 'path')
  const bytes = Number(need(args, 'bytes'))
  const chunk = Number(need(args, 'chunk'))
  const count = Math.ceil(bytes / chunk)
  // Block i's content depends on i mod 251 only: 251 distinct chunks, reused.
  const distinct = []
  for (let i = 0; i < Math.min(count, 251); i++) distinct.push(makeBlock(i, chunk))
  await go()
  const t0 = now()
  const ws = drive.createWriteStream(path)
  const done = new Promise((resolve, reject) => {
    ws.on('finish', resolve)
    ws.on('error', reject)
  })
  for (let i = 0; i < count; i++) {
    const len = Math.min(chunk, bytes - i * chunk)
    const block = distinct[i % 251]
    if (!ws.write(len === chunk ? block : block.subarray(0, len))) {
      await new Promise(resolve => ws.once('drain', resolve))
    }
  }
  ws.end()
  await done
  const seconds = secs(t0, now())
  const st = await p(cb => drive.stat(path, cb))
  if (st.size !== bytes) throw new Error(`wrote ${st.size} of ${bytes} bytes`)
  return { bytes, seconds, content_tree_hash: await contentTreeHash(drive) }
}

async function read (drive, args, go) {
  const path = need(args, 'path')
  const chunk = Number(args.chunk || 65536)
  await go()
  const t0 = now()
  let bytes = 0
  for await (const data of drive.createReadStream(path)) {
    if (data.length && data[0] !== expected(bytes, chunk)) throw new Error(`byte ${bytes} is wrong`)
    bytes += data.length
  }
  const seconds = secs(t0, now())
  return { bytes, seconds }
}

async function small (drive, args, go) {
  const count = Number(need(args, 'count'))
  const size = Number(need(args, 'size'))
  const files = []
  for (let n = 0; n < count; n++) files.push([smallPath(n), smallFile(n, size)])
  await go()
  const t0 = now()
  for (const [path, data] of files) await p(cb => drive.writeFile(path, data, cb))
  const seconds = secs(t0, now())
  return { files: count, seconds, content_tree_hash: await contentTreeHash(drive) }
}

async function list (drive, args, go) {
  const count = Number(need(args, 'count'))
  await go()
  const t0 = now()
  const names = await p(cb => drive.readdir('/', { recursive: true }, cb))
  let bytes = 0
  for (const name of names) {
    const st = await p(cb => drive.stat('/' + name, cb))
    bytes += st.size
  }
  const seconds = secs(t0, now())
  if (names.length !== count) throw new Error(`listed ${names.length} of ${count} files`)
  return { files: names.length, bytes, seconds }
}

async function random (drive, args, go) {
  const path = need(args, 'path')
  const count = Number(need(args, 'count'))
  const size = Number(need(args, 'size'))
  const chunk = Number(args.chunk || 65536)
  const st = await p(cb => drive.stat(path, cb))
  const offsets = Array.from(randomIndexes(Number(need(args, 'seed')), count, st.size - size + 1))
  await go()
  const t0 = now()
  for (const start of offsets) {
    const bufs = []
    for await (const data of drive.createReadStream(path, { start, end: start + size - 1 })) bufs.push(data)
    const got = Buffer.concat(bufs)
    if (got.length !== size || got[0] !== expected(start, chunk) || got[size - 1] !== expected(start + size - 1, chunk)) {
      throw new Error(`read at ${start} is wrong (${got.length} bytes)`)
    }
  }
  const seconds = secs(t0, now())
  return { reads: count, seconds }
}

async function main () {
  const args = parseArgs(process.argv.slice(2), ['wait-go'])
  const workloads = { write, read, small, list, random }
  const name = args._[0]
  const fn = workloads[name]
  if (!fn) throw new Error(`usage: node bench-drive.js ${Object.keys(workloads).join('|')} --dir D ...`)
  const drive = await open(need(args, 'dir'))
  const go = args['wait-go'] ? waitGo : async () => {}
  const result = await fn(drive, args, go)
  await p(cb => drive.close(cb))
  result.workload = name
  result.max_rss_kib = process.resourceUsage().maxRSS
  result.node = process.version
  process.stdout.write(JSON.stringify(result) + '\n')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
