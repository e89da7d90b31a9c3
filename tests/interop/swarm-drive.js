#!/usr/bin/env node
'use strict'
// A JS hyperdrive 10.21 peer that finds its peers with hyperswarm 2 over a loopback DHT,
// or with --mdns by mDNS alone (no DHT; only inside a private network namespace), as
// the Dat2 apps did: it joins the drive's discovery key (announce and lookup) and
// replicates its whole corestore, live, over every connection (initiator = dialer).
//
//   node swarm-drive.js --dir D --bootstrap 127.x.x.x:PORT --write NAME=TEXT   (a new drive)
//   node swarm-drive.js --dir D --bootstrap 127.x.x.x:PORT --key HEX --read NAME
//   node swarm-drive.js --dir D --mdns ...                                     (no DHT)
//   node swarm-drive.js --dir D --test-net --bootstrap 10.2xx.x.x:PORT ...     (DHT, mDNS,
//       uTP and hole punching as JS runs them; only inside tests/src/netns.rs networks)
//   --no-lookup: announce only (peers must dial us)
//
// stdout, JSON lines: {"event":"ready","key"} once the drive is open and joined; with
// --read, {"event":"read","text"} once the file could be read from a peer; one
// {"event":"connection","client"} per connection. Runs until killed.

const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs, loopbackSwarm, localSwarm, testNetSwarm } = require('./common')

const args = parseArgs(process.argv.slice(2), ['mdns', 'no-lookup', 'test-net'])
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

async function main () {
  const store = new Corestore(args.dir)
  const drive = hyperdrive(store, args.key ? Buffer.from(args.key, 'hex') : null)
  await p(cb => drive.ready(cb))
  if (args.write) {
    const [name, text] = args.write.split('=')
    await p(cb => drive.writeFile('/' + name, Buffer.from(text), cb))
  }
  const bootstrap = String(args.bootstrap || '').split(',').filter(Boolean)
  const swarm = args.mdns
    ? localSwarm()
    : args['test-net'] ? testNetSwarm(bootstrap) : loopbackSwarm(bootstrap)
  swarm.on('peer', (peer) => out({ event: 'peer', host: peer.host, port: peer.port, local: peer.local }))
  swarm.on('connection', (socket, info) => {
    out({ event: 'connection', client: info.client, remote: socket.remoteAddress })
    const stream = store.replicate(info.client, { live: true })
    socket.pipe(stream).pipe(socket)
    stream.on('error', () => socket.destroy())
    socket.on('error', () => stream.destroy())
  })
  swarm.join(drive.discoveryKey, { announce: true, lookup: !args['no-lookup'] })
  out({ event: 'ready', key: drive.key.toString('hex') })
  if (args.read) {
    for (;;) {
      try {
        const data = await p(cb => drive.readFile('/' + args.read, cb))
        out({ event: 'read', text: data.toString() })
        return
      } catch (_) {
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }
}

main().catch((err) => {
  process.stderr.write(JSON.stringify({ event: 'fatal', error: err.message }) + '\n')
  process.exit(2)
})
