// Enqueue a provision plan from Node with the `redis` npm package (v4 API).
//
//   npm install redis@4
//   REDIS_URL=redis://localhost:6379 MACHINE_ID=m1 node enqueue.mjs ../../examples/plan-dag.json [--replace]
//
// Every state change goes through protocols/scripts/queue.lua (see protocols/redis.md):
// EVALSHA <sha> 14 <the 14 keys of B> enqueue <B> <machine_id> <plan_json> <max_payload_bytes>
// <max_jobs> <replace 0|1> <retention_seconds>, where B = "<prefix>:{<machine_id>}" (protocol 2: every
// key the script touches is declared; keys of another protocol are refused with PROTOCOL_MISMATCH).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createClient } from 'redis';

const KEY_SUFFIXES = ['status', 'ready', 'active', 'delayed', 'wake', 'failures', 'workers', 'heartbeats', 'events',
  'jobs', 'previous', 'plans', 'progress', 'metrics'];

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

  /** Resolves to { generation, jobs, ready }; rejects with error.code PLAN_INVALID, MACHINE_BUSY, BAD_REQUEST or PROTOCOL_MISMATCH. */
  async enqueue(plan, { replace = false, maxPayloadBytes = 65536, maxJobs = 50000, retentionSeconds = 604800 } = {}) {
    const text = typeof plan === 'string' ? plan : JSON.stringify(plan);
    try {
      const [generation, jobs, ready] = await this.#call('enqueue', this.machineId, text, maxPayloadBytes, maxJobs,
        replace ? '1' : '0', retentionSeconds);
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
