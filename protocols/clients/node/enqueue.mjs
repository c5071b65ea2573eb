// Enqueue a provision plan from Node with the `redis` npm package (v4 API).
//
//   npm install redis@4
//   REDIS_URL=redis://localhost:6379 MACHINE_ID=m1 node enqueue.mjs ../../examples/plan-dag.json [--replace]
//
// Every state change goes through protocols/scripts/queue.lua (see protocols/redis.md):
// EVALSHA <sha> 15 <the 15 keys of B> enqueue <B> <machine_id> <plan_json> <max_payload_bytes>
// <max_jobs> <replace 0|1> <retention_seconds>, where B = "<prefix>:{<machine_id>}" (protocol 3: every
// key the script touches is declared; keys of another protocol are refused with PROTOCOL_MISMATCH).
// A plan of more than 1000 jobs or 1 MiB is sent in slices (enqueue_begin, enqueue_slice...,
// enqueue_commit): all or nothing, invisible until the commit, and no call blocks Redis for long.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createClient } from 'redis';

const KEY_SUFFIXES = ['status', 'ready', 'active', 'delayed', 'wake', 'failures', 'workers', 'heartbeats', 'events',
  'jobs', 'previous', 'plans', 'progress', 'metrics', 'staging'];
const SLICE_JOBS = 1000;
const SLICE_BYTES = 1 << 20;
const FAN_IN_DEPENDENCIES = 4000;

// Every job after the jobs it depends on, otherwise in plan order (a cycle is left for the script to refuse).
function dependenciesFirst(jobs) {
  const byId = new Map(jobs.filter((job) => typeof job?.id === 'string').map((job) => [job.id, job]));
  const state = new Map();
  const ordered = [];
  for (const root of jobs) {
    if (!byId.has(root?.id)) { ordered.push(root); continue; }
    if (state.has(root.id)) continue;
    state.set(root.id, 1);
    const stack = [[root, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const deps = Array.isArray(top[0].depends_on) ? top[0].depends_on : [];
      if (top[1] < deps.length) {
        const dep = deps[top[1]++];
        if (byId.has(dep) && !state.has(dep)) { state.set(dep, 1); stack.push([byId.get(dep), 0]); }
      } else {
        ordered.push(stack.pop()[0]);
      }
    }
  }
  return ordered;
}

export class ProvisionQueue {
  constructor(client, machineId, prefix = 'provision') {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(machineId)) throw new Error(`bad machine id ${machineId}`);
    this.client = client;
    this.machineId = machineId;
    this.base = `${prefix}:{${machineId}}`;
    this.keys = KEY_SUFFIXES.map((suffix) => `${this.base}:${suffix}`);
  }

  async #call(op, ...args) {
    this.script ??= await readFile(new URL('../../scripts/queue.lua', import.meta.url), 'utf8');
    this.sha ??= createHash('sha1').update(this.script).digest('hex');
    const options = { keys: this.keys, arguments: [op, this.base, ...args.map(String)] };
    try {
      return await this.client.evalSha(this.sha, options);
    } catch (error) {
      if (!String(error?.message).startsWith('NOSCRIPT')) throw error;
      this.sha = await this.client.scriptLoad(this.script); // first use on this server, or after SCRIPT FLUSH
      return await this.client.evalSha(this.sha, options);
    }
  }

  // One slice, then the links it left (a job depending on many jobs of earlier slices), in bounded steps.
  async #slice(upload, part) {
    let [, , left] = await this.#call('enqueue_slice', upload, `[${part.join(',')}]`);
    while (left > 0) [, left] = await this.#call('enqueue_link', upload);
  }

  /** Resolves to { generation, jobs, ready }; rejects with error.code PLAN_INVALID, MACHINE_BUSY, BAD_REQUEST or PROTOCOL_MISMATCH. */
  async enqueue(plan, { replace = false, maxPayloadBytes = 65536, maxJobs = 50000, retentionSeconds = 604800 } = {}) {
    const text = typeof plan === 'string' ? plan : JSON.stringify(plan);
    const limits = [maxPayloadBytes, maxJobs, replace ? '1' : '0', retentionSeconds];
    let parsed = null;
    try { parsed = typeof plan === 'string' ? JSON.parse(plan) : plan; } catch { /* the script says why */ }
    try {
      if (!Array.isArray(parsed?.jobs) || (parsed.jobs.length <= SLICE_JOBS && Buffer.byteLength(text) <= SLICE_BYTES)) {
        const [generation, jobs, ready] = await this.#call('enqueue', this.machineId, text, ...limits);
        return { generation, jobs, ready };
      }
      const { jobs: list, ...head } = parsed;
      const upload = `u${createHash('sha1').update(`${Date.now()}${Math.random()}`).digest('hex').slice(0, 16)}`;
      await this.#call('enqueue_begin', this.machineId, upload, JSON.stringify(head), ...limits);
      let part = [];
      let size = 2;
      for (const job of dependenciesFirst(list)) {
        const encoded = JSON.stringify(job);
        const fanIn = Array.isArray(job?.depends_on) && job.depends_on.length > FAN_IN_DEPENDENCIES;
        if (part.length && (fanIn || part.length === SLICE_JOBS || size + Buffer.byteLength(encoded) + 1 > SLICE_BYTES)) {
          await this.#slice(upload, part);
          part = [];
          size = 2;
        }
        if (fanIn) { // a job waiting on thousands of others goes alone: queue.lua links it in steps
          await this.#slice(upload, [encoded]);
          continue;
        }
        part.push(encoded);
        size += Buffer.byteLength(encoded) + 1;
      }
      if (part.length) await this.#slice(upload, part);
      const [generation, jobs, ready] = await this.#call('enqueue_commit', upload);
      return { generation, jobs, ready };
    } catch (error) {
      // The script's errors are "<CODE> <sentence>".
      const match = /^(PLAN_INVALID|MACHINE_BUSY|BAD_REQUEST|PROTOCOL_MISMATCH) (.*)$/s.exec(String(error?.message));
      if (!match) throw error;
      throw Object.assign(new Error(match[2]), { code: match[1] });
    }
  }

  /** The raw status hash (strings) and the parsed failure reasons; the Python client shows the schema'd shape. */
  async status() {
    const [fields, reasons] = await Promise.all([
      this.client.hGetAll(this.keys[0]),
      this.client.lRange(this.keys[5], 0, -1),
    ]);
    return { ...fields, failures: reasons.map((reason) => JSON.parse(reason)) };
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, flag] = process.argv.slice(2);
  if (!file) {
    console.error('usage: REDIS_URL=... MACHINE_ID=... node enqueue.mjs PLAN.json [--replace]');
    process.exit(64);
  }
  const client = createClient({ url: process.env.REDIS_URL ?? 'redis://localhost:6379' });
  client.on('error', (error) => console.error('redis:', error.message));
  await client.connect();
  try {
    const queue = new ProvisionQueue(client, process.env.MACHINE_ID ?? 'm1', process.env.PROVISION_PREFIX);
    console.log(await queue.enqueue(await readFile(file, 'utf8'), { replace: flag === '--replace' }));
  } catch (error) {
    console.error(error.code ? `${error.code}: ${error.message}` : error);
    process.exitCode = 1;
  } finally {
    await client.quit();
  }
}
