#!/usr/bin/env node
// Offline dry run of the Functions deployer on a project folder (e.g. the output of `raiox deploy build`).
//
// Uses @nimbella/nimbella-deployer (the open-source code DigitalOcean's functions-deployer grew from):
//   readProject   (src/api.ts)  -> readTopLevel / buildStructureParts (src/project-reader.ts)
//                                  -> loadProjectConfig (src/util.ts): substituteFromEnvAndFiles, js-yaml safeLoad,
//                                     renameFunctionsToActions, validateDeployConfig
//                                  -> getBuildForAction / findSpecialFile (src/finder-builder.ts)
//                                  -> checkBuildingRequirements / locateBuild (src/util.ts)
//   buildProject  (src/api.ts)  -> buildAllActions / buildAction / scriptBuilder / identifyActionFiles /
//                                  autozipBuilder (src/finder-builder.ts)
//   deploy        (src/api.ts)  -> cleanOrLoadVersions / doDeploy / deployPackage / onlyDeployPackage /
//                                  deployActionFromCodeOrSequence / encodeParameters (src/deploy.ts),
//                                  run against a recording stand-in for the OpenWhisk client: nothing leaves
//                                  the machine, and every request body the deployer would send is captured.
// prepareToDeploy is NOT called: it needs credentials and contacts the API host.
//
// Usage: node read-project.js PROJECT_DIR [--env FILE] [--build-env FILE] [--no-build] [--no-deploy]
//        [--in-place] [--show-values] [--runtimes FILE|none] [--list-files] [--verbose-build] [--keep]
//        [--no-trigger-shim]
// Prints one JSON object on stdout; exit 0 when the deployer reported no error, 1 otherwise, 2 on usage errors.
'use strict'

// The trigger code reads DO_API_KEY once, at module load (src/triggers.ts): make sure it can never call the DO API.
delete process.env.DO_API_KEY

const fs = require('fs')
const os = require('os')
const path = require('path')
const util = require('util')
const crypto = require('crypto')

const DEPLOYER_PACKAGE = '@nimbella/nimbella-deployer'
const triggerShim = installTriggerShim(!process.argv.includes('--no-trigger-shim'))
const deployer = require(DEPLOYER_PACKAGE)
const AdmZip = require('adm-zip') // a dependency of the deployer itself

const ZIP_TARGET = '__deployer__.zip' // finder-builder.ts
const UNRESOLVED = /^<[^<>\s]+>$/ // what substituteFromEnvAndFiles pastes for a name it could not resolve

// Triggers: where the old deployer and DigitalOcean's differ, this script applies DigitalOcean's rule.
// DigitalOcean's deployer (github.com/digitalocean/functions-deployer 5.0.19, src/util.ts validateTriggers and
// validateScheduledTriggerDetails) accepts the current form {name, enabled?, type: scheduled, scheduledDetails:
// {cron, body?}}, and turns the legacy form {sourceType: scheduler, sourceDetails: {cron, withBody}} into it
// (transformLegacyTriggers, a beta shim it says will be removed); it creates triggers only with an API token
// (src/triggers.ts deployTrigger). nimbella-deployer 4.3.10 knows only the legacy form. This shim runs between
// the deployer's YAML parse (js-yaml safeLoad, called by loadProjectConfig after substitution) and its
// validation: it checks a current-form trigger with DigitalOcean's rules (re-implemented below, same messages),
// records any legacy-form trigger in triggerShim.legacy, then hands the old deployer the equivalent legacy form.
function installTriggerShim(enabled) {
  const record = { enabled, converted: [], legacy: [], errors: [] }
  if (!enabled) return record
  const yaml = require('js-yaml')
  const { isValidCron } = require('cron-validator')
  const isDict = (x) => typeof x === 'object' && x !== null && !Array.isArray(x)
  const check = (t) => {
    if (!isDict(t)) return 'an individual trigger must be a dictionary'
    for (const k of Object.keys(t)) {
      if (!['name', 'enabled', 'type', 'scheduledDetails'].includes(k)) return `Invalid key '${k}' found in 'triggers' clause in project.yml`
    }
    if (typeof t.name !== 'string') return `the 'name' field of a trigger is required`
    const type = typeof t.type === 'string' ? t.type.toUpperCase() : t.type
    if (type !== 'SCHEDULED') return `the trigger 'type' field must be 'SCHEDULED'`
    const d = t.scheduledDetails
    if (!isDict(d)) return `the 'scheduledDetails' property of a trigger is required for type="SCHEDULED"`
    for (const k of Object.keys(d)) if (!['cron', 'body'].includes(k)) return `Invalid key '${k}' found in scheduledDetails in project.yml`
    if (typeof d.cron !== 'string') return `the 'cron' member of 'scheduledDetails' must be a string`
    if (!isValidCron(d.cron)) return `the cron expression '${d.cron}' is not valid crontab syntax`
    if (d.body && !isDict(d.body)) return `the 'body' member of scheduledDetails must be a dictionary`
    if (t.enabled && typeof t.enabled !== 'boolean') return `the 'enabled' property of a trigger must be boolean'`
    return undefined
  }
  const original = yaml.safeLoad
  yaml.safeLoad = function (...args) {
    const config = original.apply(this, args)
    for (const pkg of (config && Array.isArray(config.packages)) ? config.packages : []) {
      for (const fn of [].concat(pkg.functions || [], pkg.actions || [])) {
        if (!fn || !Array.isArray(fn.triggers)) continue
        fn.triggers = fn.triggers.map(t => {
          const where = `${pkg.name}/${fn.name}: trigger '${t && t.name}'`
          if (!isDict(t) || !('type' in t || 'scheduledDetails' in t)) {
            if (isDict(t) && ('sourceType' in t || 'sourceDetails' in t)) record.legacy.push(where)
            return t
          }
          const err = check(t)
          if (err) { record.errors.push(`${where}: ${err}`); return t } // left as is: the old validator rejects it too
          record.converted.push(where)
          const legacy = { name: t.name, sourceType: 'scheduler', sourceDetails: { cron: t.scheduledDetails.cron } }
          if (t.scheduledDetails.body) legacy.sourceDetails.withBody = t.scheduledDetails.body
          if (t.enabled !== undefined) legacy.enabled = t.enabled
          return legacy
        })
      }
    }
    return config
  }
  return record
}

function parseArgs(argv) {
  const opts = { build: true, deploy: true, inPlace: false, showValues: false, listFiles: false, verboseBuild: false,
    keep: false, runtimes: path.join(__dirname, 'runtimes.json') }
  const rest = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    switch (a) {
      case '--env': opts.env = path.resolve(value()); break
      case '--build-env': opts.buildEnv = path.resolve(value()); break
      case '--runtimes': opts.runtimes = value(); break
      case '--no-build': opts.build = false; opts.deploy = false; break
      case '--no-deploy': opts.deploy = false; break
      case '--in-place': opts.inPlace = true; break
      case '--show-values': opts.showValues = true; break
      case '--list-files': opts.listFiles = true; break
      case '--verbose-build': opts.verboseBuild = true; break
      case '--keep': opts.keep = true; break
      case '--no-trigger-shim': break // read before the deployer is loaded
      case '-h': case '--help': usage()
      default:
        if (a.startsWith('--')) usage(`unknown option ${a}`)
        rest.push(a)
    }
  }
  if (rest.length !== 1) usage('one PROJECT_DIR is required')
  opts.project = path.resolve(rest[0])
  return opts
}

function usage(msg) {
  if (msg) process.stderr.write(`read-project: ${msg}\n`)
  process.stderr.write('usage: node read-project.js PROJECT_DIR [--env FILE] [--build-env FILE] [--no-build] ' +
    '[--no-deploy] [--in-place] [--show-values] [--runtimes FILE|none] [--list-files] [--verbose-build] [--keep] ' +
    '[--no-trigger-shim]\n')
  process.exit(2)
}

function loadRuntimes(spec) {
  if (spec === 'none') return {} // validateActionSpec skips the runtime check when the table is empty
  const raw = JSON.parse(fs.readFileSync(spec, 'utf8'))
  return Object.fromEntries(Object.entries(raw).filter(([k]) => !k.startsWith('_')))
}

// Feedback (deploy-struct.ts) that records instead of printing, so stdout stays pure JSON.
class RecordingFeedback {
  constructor() { this.warnings = []; this.progress_ = [] }
  warn(message, ...params) { this.warnings.push(util.format(message ?? '', ...params).trimEnd()) }
  progress(message, ...params) { this.progress_.push(util.format(message ?? '', ...params).trimEnd()) }
}

// Stand-in for the openwhisk client: records what would be sent, answers like an empty namespace.
function recordingClient(namespace) {
  const requests = []
  const notFound = () => Promise.reject(Object.assign(new Error('not found (dry run)'), { statusCode: 404 }))
  let version = 0
  const ok = (name) => Promise.resolve({ name, namespace, version: `0.0.${++version}` })
  return {
    requests,
    client: {
      actions: {
        get: () => notFound(),
        update: (p) => { requests.push({ op: 'actions.update', name: p.name, body: p.action }); return ok(p.name) },
        delete: (p) => { requests.push({ op: 'actions.delete', name: p.name }); return ok(p.name) },
        invoke: (p) => Promise.reject(new Error(`dry run: would invoke ${p.name}`)),
        list: () => Promise.resolve([])
      },
      packages: {
        get: () => notFound(),
        update: (p) => { requests.push({ op: 'packages.update', name: p.name, body: p.package }); return ok(p.name) },
        delete: (p) => { requests.push({ op: 'packages.delete', name: p.name }); return ok(p.name) },
        list: () => Promise.resolve([])
      },
      activations: { get: () => notFound() },
      namespaces: { get: () => Promise.resolve([namespace]) }
    }
  }
}

function redact(dict, showValues) {
  if (!dict) return undefined
  const out = {}
  for (const [k, v] of Object.entries(dict)) {
    if (showValues) out[k] = v
    else if (typeof v === 'string' && UNRESOLVED.test(v)) out[k] = v // unresolved marker: not a secret
    else if (v === '') out[k] = ''
    else out[k] = typeof v === 'string' ? `<set: ${v.length} chars>` : `<set: ${typeof v}>`
  }
  return out
}

function unresolvedIn(dict) {
  return Object.entries(dict || {}).filter(([, v]) => typeof v === 'string' && UNRESOLVED.test(v)).map(([k]) => k)
}

function errMessage(err) {
  if (!err) return undefined
  if (typeof err === 'string') return err
  return err.message || String(err)
}

function zipSummary(zipPath, listFiles) {
  const zip = new AdmZip(zipPath)
  const entries = zip.getEntries().filter(e => !e.isDirectory)
  const top = new Set(entries.map(e => e.entryName.split('/')[0]))
  const out = {
    path: zipPath,
    bytes: fs.statSync(zipPath).size,
    base64Bytes: Math.ceil(fs.statSync(zipPath).size / 3) * 4,
    entries: entries.length,
    uncompressedBytes: entries.reduce((n, e) => n + e.header.size, 0),
    topLevel: [...top].sort()
  }
  if (listFiles) out.files = entries.map(e => e.entryName).sort()
  return out
}

function summarizeAction(action, projectDir, opts) {
  const built = action.file && path.basename(action.file) === ZIP_TARGET
  const fileAbs = action.file ? path.resolve(projectDir, action.file) : undefined
  const s = {
    name: action.name,
    package: action.package,
    folder: action.displayFile || action.file,
    build: action.build, // 'build.sh' | 'build.cmd' | '.build' | 'package.json' | '.include' | 'identify' | 'remote' | ...
    realBuild: ['build.sh', 'build.cmd', '.build', 'package.json'].includes(action.build),
    runtime: action.runtime,
    main: action.main,
    web: action.web,
    webSecure: typeof action.webSecure === 'string' && !opts.showValues ? `<set: ${action.webSecure.length} chars>` : action.webSecure,
    limits: action.limits,
    environment: redact(action.environment, opts.showValues),
    parameters: redact(action.parameters, opts.showValues),
    annotations: action.annotations,
    triggers: action.triggers,
    unresolved: [...unresolvedIn(action.environment), ...unresolvedIn(action.parameters)],
    buildError: errMessage(action.buildError)
  }
  if (built && fileAbs && fs.existsSync(fileAbs)) s.zip = zipSummary(fileAbs, opts.listFiles)
  else if (action.file) s.file = action.file
  return s
}

function summarizeRequest(req, opts) {
  const out = { op: req.op, name: req.name }
  if (!req.body) return out
  const body = req.body
  if (body.exec) {
    const { code, ...exec } = body.exec
    out.exec = exec
    if (typeof code === 'string') {
      out.exec.codeBytes = code.length // what is uploaded: base64 of the zip when binary
      out.exec.codeSha256 = crypto.createHash('sha256').update(code).digest('hex')
    }
  }
  if (body.annotations) {
    out.annotations = Object.fromEntries(body.annotations.map(kv => [kv.key,
      kv.key === 'deployer' ? '<deployer>'
        : kv.key === 'require-whisk-auth' && typeof kv.value === 'string' && !opts.showValues ? `<set: ${kv.value.length} chars>`
          : kv.value]))
  }
  if (body.parameters) {
    out.parameters = body.parameters.map(kv => ({
      key: kv.key,
      init: !!kv.init, // init:true = environment (os.environ), otherwise an invocation parameter
      value: opts.showValues || (typeof kv.value === 'string' && UNRESOLVED.test(kv.value)) ? kv.value
        : (typeof kv.value === 'string' ? `<set: ${kv.value.length} chars>` : `<set: ${typeof kv.value}>`)
    }))
  }
  if (body.limits) out.limits = body.limits
  if ('publish' in body) out.publish = body.publish
  return out
}

function summarizeResponse(resp) {
  if (!resp) return undefined
  return {
    successes: (resp.successes || []).map(s => ({ name: s.name, kind: s.kind, skipped: s.skipped })),
    failures: (resp.failures || []).map(f => ({ message: errMessage(f), context: f.context })),
    ignored: resp.ignored
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const version = require(`${DEPLOYER_PACKAGE}/package.json`).version
  deployer.initializeAPI(`raiox-dry-run/${version}`) // purges __OW_* from the environment, sets the user agent

  let projectDir = opts.project
  let scratch
  if (!opts.inPlace) {
    // Builds write into the function folders (virtualenv/, __deployer__.zip, .deployed/): work on a copy.
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'raiox-deployer-'))
    projectDir = path.join(scratch, path.basename(opts.project))
    fs.cpSync(opts.project, projectDir, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true })
  }

  const feedback = new RecordingFeedback()
  const runtimes = loadRuntimes(opts.runtimes)
  const flags = {
    verboseBuild: opts.verboseBuild, verboseZip: false, production: false, incremental: false, yarn: false,
    env: opts.env, buildEnv: opts.buildEnv, webLocal: undefined, include: undefined, exclude: undefined,
    remoteBuild: false, json: true
  }
  const summary = {
    deployer: { package: DEPLOYER_PACKAGE, version },
    project: opts.project,
    workedOn: projectDir,
    envFile: opts.env || null,
    stages: {}
  }
  let exitCode = 0
  try {
    // Stage 1: read (substitution, YAML, validation, finder: which special file rules each folder).
    const includer = deployer.makeIncluder(undefined, undefined)
    let spec = await deployer.readProject(projectDir, opts.env, opts.buildEnv, includer, false, feedback, runtimes)
    // A YAML parse error quotes the substituted text around the fault, secrets included: keep its first line only.
    const readError = errMessage(spec.error)
    summary.stages.read = { error: readError && !opts.showValues ? readError.split('\n')[0] : readError || null }
    summary.unresolvedVariables = spec.unresolvedVariables || []
    summary.strays = spec.strays || []
    summary.topLevel = {
      targetNamespace: spec.targetNamespace,
      environment: redact(spec.environment, opts.showValues),
      parameters: redact(spec.parameters, opts.showValues)
    }
    const describe = (s) => (s.packages || []).map(pkg => ({
      name: pkg.name,
      shared: pkg.shared,
      web: pkg.web,
      environment: redact(pkg.environment, opts.showValues),
      parameters: redact(pkg.parameters, opts.showValues),
      annotations: pkg.annotations,
      functions: (pkg.actions || []).map(a => summarizeAction(a, projectDir, opts))
    }))
    summary.packages = describe(spec)
    if (spec.error) throw Object.assign(new Error('read'), { stage: 'read' })

    // Stage 2: build (runs build.sh / npm install, then picks the files and zips each folder).
    if (opts.build) {
      spec.flags = flags
      spec.feedback = feedback
      spec = await deployer.buildProject(spec, runtimes)
      const buildErrors = []
      for (const pkg of spec.packages || []) {
        for (const a of pkg.actions || []) if (a.buildError) buildErrors.push(`${pkg.name}/${a.name}: ${errMessage(a.buildError)}`)
      }
      summary.stages.build = { error: errMessage(spec.error) || null, actionErrors: buildErrors }
      summary.packages = describe(spec)
      if (spec.error) throw Object.assign(new Error('build'), { stage: 'build' })
      // A failed action build does not stop the deployer: deployAction reports it as that action's failure and
      // the other actions are still deployed. Carry on the same way (the deploy stage then fails).
      if (buildErrors.length && !opts.deploy) exitCode = 1
    }

    // Stage 3: deploy against a recording client (no network, no credentials).
    if (opts.deploy) {
      const { client, requests } = recordingClient('dry-run')
      spec.owClient = client
      spec.credentials = { namespace: 'dry-run', ow: { apihost: 'https://dry-run.invalid', api_key: 'dry:run' } }
      spec.flags = flags
      const response = await deployer.deploy(spec)
      summary.stages.deploy = summarizeResponse(response)
      summary.requests = requests.map(r => summarizeRequest(r, opts))
      if ((response.failures || []).length) throw Object.assign(new Error('deploy'), { stage: 'deploy' })
    }
  } catch (err) {
    exitCode = 1
    if (!err.stage) summary.exception = { message: errMessage(err), stack: err.stack }
  } finally {
    summary.triggerShim = triggerShim
    if (triggerShim.legacy.length) {
      feedback.warn(`legacy trigger form (sourceType/sourceDetails) in ${triggerShim.legacy.join(', ')}: DigitalOcean's deployer ` +
        'converts it with a beta shim (transformLegacyTriggers) that it says will be removed')
    }
    for (const e of triggerShim.errors) feedback.warn(`trigger (DigitalOcean rules): ${e}`)
    summary.warnings = feedback.warnings
    summary.progress = feedback.progress_
    if (scratch && !opts.keep) fs.rmSync(scratch, { recursive: true, force: true })
    else if (scratch) summary.kept = projectDir
  }
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
  process.exitCode = exitCode
}

main().catch(err => {
  process.stderr.write(`read-project: ${err.stack || err}\n`)
  process.exit(1)
})
