#!/usr/bin/env node
'use strict'
// The JS side of the swarm benchmark (tests/benches/swarm.rs): one hyperswarm 2 peer
// (loopback only, mDNS stubbed: see loopbackSwarm in common.js) with hypercore 9 feeds
// stored under --dir, driven by one JSON command per line on stdin, one JSON answer line
// each on stdout.
//
//   node swarm-bench.js --dir D --bootstrap 127.x.x.x:PORT[,…]
//
// First line, once the swarm listens and its DHT has bootstrapped:
//   {"event":"ready","port":P}
// Commands:
//   {"cmd":"seed"}            a new feed with one block (makeBlock(0, 1024)), joined
//                             (announce and lookup); answers {"ok":true,"key"} once its
//                             first announce walk ended.
//   {"cmd":"follow","key":H}  opens feed H, joins its discovery key (lookup only) and gets
//                             block 0 from whoever the DHT names; answers
//                             {"ok":true,"ms","joinMs","peerMs","connectionMs","bytes"}: ms
//                             from opening the feed, the others from the join, until the
//                             block was there, the first peer found, the first connection.
//   {"cmd":"topics","count":N} joins N random topics (announce and lookup); answers
//                             {"ok":true,"ms"} once each has ended its first walk.
//   {"cmd":"walks"}           {"ok":true,"walks":N}: walks ended so far, all topics.
// Every connection replicates every feed this peer holds (initiator = dialer).

const path = require('path')
const crypto = require('crypto')
const hypercore = require('hypercore')
const { parseArgs, loopbackSwarm, makeBlock, promisify, serveCommands } = require('./common')

const args = parseArgs(process.argv.slice(2))
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => process.hrtime.bigint()
const ms = (from) => Number(now() - from) / 1e6

const feeds = []
const streams = new Set()
let walks = 0
let opened = 0

function open (key) {
  const feed = hypercore(path.join(args.dir, String(opened++)), key, { sparse: true })
  feeds.push(feed)
  // Connections already up replicate it too (a feed added later than the handshake).
  for (const stream of streams) feed.replicate(false, { live: true, stream })
  return feed
}

async function seed () {
  const feed = open(null)
  await promisify((cb) => feed.append(makeBlock(0, 1024), cb))
  await join(feed.discoveryKey, { announce: true, lookup: true })
  return { key: feed.key.toString('hex') }
}

async function follow (key) {
  const t0 = now()
  const feed = open(Buffer.from(key, 'hex'))
  await promisify((cb) => feed.ready(cb))
  const t1 = now()
  const steps = {}
  const onpeer = () => { if (steps.peerMs === undefined) steps.peerMs = ms(t1) }
  const onconnection = () => { if (steps.connectionMs === undefined) steps.connectionMs = ms(t1) }
  swarm.on('peer', onpeer)
  swarm.on('connection', onconnection)
  swarm.join(feed.discoveryKey, { announce: false, lookup: true })
  const block = await promisify((cb) => feed.get(0, cb))
  const done = { ms: ms(t0), joinMs: ms(t1) }
  swarm.removeListener('peer', onpeer)
  swarm.removeListener('connection', onconnection)
  return Object.assign(done, steps, { bytes: block.length })
}

// Topics (hex) joined whose first walk has not ended yet: what resolves when it has.
const firstWalk = new Map()

// Joins `topic` and resolves once its first DHT walk ended.
function join (topic, opts) {
  return new Promise((resolve) => {
    firstWalk.set(topic.toString('hex'), resolve)
    swarm.join(topic, opts)
  })
}

async function topics (count) {
  const t0 = now()
  const all = []
  for (let i = 0; i < count; i++) all.push(join(crypto.randomBytes(32), { announce: true, lookup: true }))
  await Promise.all(all)
  return { ms: ms(t0) }
}

const swarm = loopbackSwarm(String(args.bootstrap || '').split(',').filter(Boolean))
swarm.on('updated', ({ key }) => {
  walks++
  const hex = key.toString('hex')
  const resolve = firstWalk.get(hex)
  if (resolve) {
    firstWalk.delete(hex)
    resolve()
  }
})
swarm.on('connection', (socket, info) => {
  socket.on('error', () => {})
  if (!feeds.length) return socket.destroy()
  const stream = feeds[0].replicate(info.client, { live: true })
  for (const feed of feeds.slice(1)) feed.replicate(info.client, { live: true, stream })
  streams.add(stream)
  stream.on('error', () => {})
  stream.on('close', () => { streams.delete(stream); socket.destroy() })
  socket.pipe(stream).pipe(socket)
})

async function run (command) {
  switch (command.cmd) {
    case 'seed': return seed()
    case 'follow': return follow(command.key)
    case 'topics': return topics(Number(command.count))
    case 'walks': return { walks }
    default: throw new Error('unknown command ' + JSON.stringify(command))
  }
}

swarm.listen(0, (err) => {
  if (err) throw err
  swarm.network.discovery.dht.ready(() => {
    out({ event: 'ready', port: swarm.address().port })
    serveCommands(run, () => {
      const exit = setTimeout(() => process.exit(0), 2000)
      swarm.destroy(() => { clearTimeout(exit); process.exit(0) })
    })
  })
})
