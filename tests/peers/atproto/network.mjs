// Local, offline ATProto network for blipflow's tests: a PLC directory
// (in-memory) and a PDS (SQLite in a data directory), both bound to 127.0.0.1.
//
// Usage (Node >= 22, run via tests/peers/atproto/install.sh first):
//   node network.mjs all --data-dir DIR [--plc-port N] [--pds-port N]
//   node network.mjs plc [--plc-port N]
//   node network.mjs pds --data-dir DIR --plc-url URL [--pds-port N]
// Any mode also takes --parent-pid PID: exit when that process is gone.
//
// A port of 0 (the default) picks a free port; the real one is reported.
// In `pds` mode a port of 0 reuses the port stored in DIR/network-state.json
// from an earlier run, so a restarted PDS keeps its URL (which is baked into
// the DID documents of its accounts). Secrets (JWT secret, admin password,
// PLC rotation key) are generated on first start and kept in that same file,
// so sessions and DIDs survive a PDS restart.
//
// When everything is up, exactly one line is printed on stdout:
//   READY {"pds_url": ..., "plc_url": ..., "admin_password": ..., ...}
// Logs (only when LOG_ENABLED=true) and errors go to stderr. The process runs
// until SIGTERM/SIGINT, then shuts down and exits 0.

import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { parseArgs } from 'node:util'

const HOST = '127.0.0.1'
const STATE_FILE = 'network-state.json'

function fail(msg) {
  process.stderr.write(`network.mjs: ${msg}\n`)
  process.exit(2)
}

function parsePort(value, name) {
  const n = Number(value ?? 0)
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`bad ${name}: ${value}`)
  return n
}

// Ask the kernel for a free port on the loopback interface.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, HOST, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function randomSecret(bytes = 24) {
  return crypto.randomBytes(bytes).toString('hex')
}

function newRotationKeyHex() {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'secp256k1' })
  const { d } = privateKey.export({ format: 'jwk' })
  return Buffer.from(d, 'base64url').toString('hex').padStart(64, '0')
}

function plcUrlByName(plcUrl) {
  const url = new URL(plcUrl)
  if (url.hostname === HOST) url.hostname = 'localhost'
  return url.origin
}

function loadOrCreateState(dataDir, requestedPort) {
  const file = path.join(dataDir, STATE_FILE)
  let state = null
  if (fs.existsSync(file)) {
    state = JSON.parse(fs.readFileSync(file, 'utf8'))
  } else {
    state = {
      port: 0,
      jwtSecret: randomSecret(),
      adminPassword: randomSecret(12),
      plcRotationKeyHex: newRotationKeyHex(),
    }
  }
  if (requestedPort) state.port = requestedPort
  return { file, state }
}

// Make `app.listen(port)` bind to loopback only. The xrpc server has already
// wrapped app.listen (on mount) to attach the websocket upgrade handler used by
// com.atproto.sync.subscribeRepos; we wrap that wrapper, so upgrades still work.
function bindListenToLoopback(app) {
  const listen = app.listen
  app.listen = (port, ...rest) => {
    if (typeof rest[0] === 'string') rest.shift()
    return listen.call(app, port, HOST, ...rest)
  }
}

async function startPlc(port) {
  const { PlcServer, Database } = await import('@did-plc/server')
  const realPort = port || (await freePort())
  const plc = PlcServer.create({ db: Database.mock(), port: realPort })
  bindListenToLoopback(plc.app)
  await plc.start()
  const url = `http://${HOST}:${plc.server.address().port}`
  return { url, stop: () => plc.destroy() }
}

async function startPds({ port, dataDir, plcUrl }) {
  const { PDS, envToCfg, envToSecrets } = await import('@atproto/pds')
  fs.mkdirSync(dataDir, { recursive: true })
  const { file, state } = loadOrCreateState(dataDir, port)
  if (!state.port) state.port = await freePort()
  const blobDir = path.join(dataDir, 'blobs')
  fs.mkdirSync(blobDir, { recursive: true })

  const env = {
    port: state.port,
    hostname: 'localhost',
    devMode: true,
    version: '0.0.0-test',
    dataDirectory: dataDir,
    blobstoreDiskLocation: blobDir,
    // The PDS resolves DIDs with a fetch that refuses IP-address hosts, so it
    // must reach the PLC by name: http://localhost:PORT (same socket).
    didPlcUrl: plcUrlByName(plcUrl),
    serviceHandleDomains: ['.test'],
    inviteRequired: false,
    rateLimitsEnabled: false,
    crawlers: [],
    jwtSecret: state.jwtSecret,
    adminPassword: state.adminPassword,
    plcRotationKeyK256PrivateKeyHex: state.plcRotationKeyHex,
  }
  const cfg = envToCfg(env)
  // Advertise the PDS (in DID documents) at the exact loopback URL it listens
  // on, instead of http://localhost:PORT (which may resolve to ::1 first).
  const pdsUrl = `http://${HOST}:${state.port}`
  cfg.service.publicUrl = pdsUrl
  const secrets = envToSecrets(env)

  const pds = await PDS.create(cfg, secrets)
  bindListenToLoopback(pds.app)
  await pds.start()

  fs.writeFileSync(file, JSON.stringify(state, null, 2), { mode: 0o600 })
  return {
    url: pdsUrl,
    port: state.port,
    did: cfg.service.did,
    adminPassword: state.adminPassword,
    stop: () => pds.destroy(),
  }
}

async function main() {
  // Logs (pino, enabled with LOG_ENABLED=true) go to stderr: stdout carries only
  // the READY line. Set before the servers' modules are imported.
  if (/^(true|t|1)$/i.test(process.env.LOG_ENABLED ?? '')) {
    process.env.LOG_DESTINATION ??= '/dev/stderr'
  }
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      'plc-url': { type: 'string' },
      'plc-port': { type: 'string', default: '0' },
      'pds-port': { type: 'string', default: '0' },
      'parent-pid': { type: 'string' },
    },
  })
  const mode = positionals[0] ?? 'all'
  if (!['all', 'plc', 'pds'].includes(mode)) fail(`unknown mode ${mode} (all|plc|pds)`)
  const plcPort = parsePort(values['plc-port'], '--plc-port')
  const pdsPort = parsePort(values['pds-port'], '--pds-port')
  const dataDir = values['data-dir'] && path.resolve(values['data-dir'])
  if (mode !== 'plc' && !dataDir) fail('--data-dir is required')
  if (mode === 'pds' && !values['plc-url']) fail('--plc-url is required in pds mode')

  const stops = []
  let stopping = false
  const shutdown = async (signal) => {
    if (stopping) return
    stopping = true
    // Never hang on shutdown: hard exit if closing takes too long.
    setTimeout(() => process.exit(1), 10_000).unref()
    let code = 0
    for (const stop of stops.reverse()) {
      try {
        await stop()
      } catch (err) {
        process.stderr.write(`network.mjs: error during shutdown (${signal}): ${err?.stack ?? err}\n`)
        code = 1
      }
    }
    process.exit(code)
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))

  // Watchdog: with --parent-pid, shut down when that process is gone (e.g. a
  // test runner killed with SIGKILL), so no orphaned servers are left behind.
  if (values['parent-pid']) {
    const parentPid = Number(values['parent-pid'])
    setInterval(() => {
      try {
        process.kill(parentPid, 0)
      } catch (err) {
        if (err.code === 'ESRCH') shutdown('parent-exit')
      }
    }, 1000).unref()
  }

  const ready = { mode, pid: process.pid }
  let plcUrl = values['plc-url']
  if (mode === 'all' || mode === 'plc') {
    const plc = await startPlc(plcPort)
    stops.push(plc.stop)
    plcUrl = plc.url
    ready.plc_url = plc.url
    ready.plc_port = Number(new URL(plc.url).port)
  }
  if (mode === 'all' || mode === 'pds') {
    const pds = await startPds({ port: pdsPort, dataDir, plcUrl })
    stops.push(pds.stop)
    Object.assign(ready, {
      pds_url: pds.url,
      pds_port: pds.port,
      pds_ws_url: `ws://${HOST}:${pds.port}`,
      pds_did: pds.did,
      plc_url: plcUrl,
      admin_password: pds.adminPassword,
      data_dir: dataDir,
    })
  }
  if (stopping) return
  process.stdout.write(`READY ${JSON.stringify(ready)}\n`)
}

main().catch((err) => {
  process.stderr.write(`network.mjs: failed to start: ${err?.stack ?? err}\n`)
  process.exit(1)
})
