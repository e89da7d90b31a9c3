#!/usr/bin/env node
'use strict'
// Real JS hyperdrive@10.21.0 writing names hyperd refuses to write but must read: a NUL
// byte, `.` and `..` components (JS keeps them as they are), a name of 100,000 characters.
// For tests/tests/js_hostile.rs.
//
//   node drive-hostile.js --dir D
//
// Writes each name (file content: "content of " + the name's index) into the default drive
// of the corestore in D, plus /safe/ok, and prints one JSON line: {"ok", "key", "names":
// [hex of each name as written], "listed": [hex of each name JS's recursive readdir gives]}.
const Corestore = require('corestore')
const hyperdrive = require('hyperdrive')
const { parseArgs } = require('./common')

function fail (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack ? err.stack : err) }))
  process.exit(1)
}

const NAMES = [
  '/up/../../../outside/evil',
  '/../../outside/evil2',
  '/nul\0byte',
  '/..',
  '/dir/..',
  '/dir/./x',
  '/.',
  '/' + 'x'.repeat(100000),
  '/safe/ok'
]

const args = parseArgs(process.argv.slice(2))
const store = new Corestore(args.dir)
const drive = hyperdrive(store)
const p = (fn) => new Promise((resolve, reject) => fn((err, v) => err ? reject(err) : resolve(v)))

async function main () {
  await p(cb => drive.ready(cb))
  for (let i = 0; i < NAMES.length; i++) {
    await p(cb => drive.writeFile(NAMES[i], Buffer.from('content of ' + i), cb))
  }
  const listed = await p(cb => drive.readdir('/', { recursive: true }, cb))
  console.log(JSON.stringify({
    ok: true,
    key: drive.key.toString('hex'),
    names: NAMES.map(n => Buffer.from(n).toString('hex')),
    listed: listed.map(n => Buffer.from(n).toString('hex'))
  }))
  await p(cb => drive.close(cb))
}

main().catch(fail)
