#!/usr/bin/env node
'use strict'
// A client of a running hyperdrive-daemon 1.14.5 through its own client library
// (hyperdrive-daemon-client), for tests/tests/swarm_hyperdrive_daemon.rs. The daemon is
// found by the metadata it wrote into its storage root (endpoint and token).
//
//   node client.js --storage ROOT create NAME TEXT
//       a new drive holding NAME = TEXT, seeded (announce and lookup) as
//       `hyperdrive create` seeds; prints {"key"} once the announce walk is done.
//   node client.js --storage ROOT read KEY NAME [--timeout MS]
//       opens the drive KEY (the daemon looks it up on the swarm) and reads NAME,
//       retrying until it can or the time is up; prints {"text", "names"} (the
//       root directory's listing), or {"error"} and exits 1.
//
// The drive sessions are left open when the script exits: the daemon keeps the
// drive (and its replication) until it stops.

// The client the daemon itself depends on, wherever npm put it.
const daemonDir = require('path').dirname(require.resolve('hyperdrive-daemon/package.json'))
const { HyperdriveClient } = require(require.resolve('hyperdrive-daemon-client', { paths: [daemonDir] }))

const argv = { _: [], storage: null, timeout: 60000 }
for (let i = 2; i < process.argv.length; i++) {
  const arg = process.argv[i]
  if (arg === '--storage' || arg === '--timeout') argv[arg.slice(2)] = process.argv[++i]
  else argv._.push(arg)
}

function out (value) {
  process.stdout.write(JSON.stringify(value) + '\n')
}

async function main () {
  if (!argv.storage) throw new Error('--storage ROOT is required')
  const [command, ...args] = argv._.map(String)
  const client = new HyperdriveClient({ storage: argv.storage })
  await client.ready()
  if (command === 'create' && args.length === 2) {
    const [name, text] = args
    const drive = await client.drive.get()
    await drive.writeFile(name, text)
    await drive.configureNetwork({ announce: true, lookup: true, remember: true })
    out({ key: drive.key.toString('hex') })
  } else if (command === 'read' && args.length === 2) {
    const [key, name] = args
    const drive = await client.drive.get({ key: Buffer.from(key, 'hex') })
    const deadline = Date.now() + Number(argv.timeout)
    for (;;) {
      try {
        const text = (await drive.readFile(name)).toString()
        const names = await drive.readdir('/')
        out({ text, names })
        break
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`reading ${name} of ${key}: ${err.message}`)
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    }
  } else {
    throw new Error('usage: client.js --storage ROOT (create NAME TEXT | read KEY NAME [--timeout MS])')
  }
  process.exit(0)
}

main().catch(err => {
  out({ error: err.message })
  process.exit(1)
})
