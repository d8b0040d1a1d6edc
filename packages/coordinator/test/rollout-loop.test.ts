/**
 * The rollout loop against a counting backend: a real SQLite store in a temp
 * dir, a hand-run clock and timers, and an agent transport that records every
 * command it is asked to send (a stand-in for the websocket hub, which other
 * tests run for real). The test plays the agents by writing their results as
 * the hub would and by changing the live status the transport reports.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { decodeCoordinatorMessage, type Command, type NodeStatus } from '@guts-upgrade/protocol';
import { DEFAULT_CONFIG } from '../src/config.js';
import { Store } from '../src/db.js';
import { Audit } from '../src/engine/audit.js';
import type { AgentTransport, Cancel, LiveNode, Timers } from '../src/engine/effects.js';
import { fleetView } from '../src/engine/fleet-view.js';
import { RolloutLoop } from '../src/engine/rollout-loop.js';
import { RolloutService } from '../src/engine/rollout-service.js';
import { FLUSH_MS, WriteQueue } from '../src/engine/write-queue.js';
import { WebhookSender } from '../src/webhooks.js';

const SHA = 'c'.repeat(64);
const log = pino({ level: 'silent' });

/** Timers run by hand: the test decides when each fires. */
class ManualTimers implements Timers {
  intervals: { ms: number; fn: () => void; live: boolean }[] = [];
  delayed: { ms: number; fn: () => void; live: boolean }[] = [];
  soonQueue: (() => void)[] = [];
  every(ms: number, fn: () => void): Cancel {
    const e = { ms, fn, live: true };
    this.intervals.push(e);
    return () => {
      e.live = false;
    };
  }
  after(ms: number, fn: () => void): Cancel {
    const e = { ms, fn, live: true };
    this.delayed.push(e);
    return () => {
      e.live = false;
    };
  }
  soon(fn: () => void): void {
    this.soonQueue.push(fn);
  }
  /** Fires every armed one-shot timer (they are all due once the test says so). */
  fireDelayed(): number {
    const due = this.delayed.filter((e) => e.live);
    this.delayed = [];
    for (const e of due) e.fn();
    return due.length;
  }
}

function status(extra: Partial<NodeStatus> = {}): NodeStatus {
  return {
    nodeVersion: '1.0.0',
    health: 'up',
    ready: true,
    isLeader: false,
    currentLeader: 'v0',
    finalizedHeight: 100,
    view: 1,
    peerCount: 3,
    busy: null,
    ...extra,
  };
}

/** Records every send; the agents' links are a plain map the test edits. */
class CountingAgents implements AgentTransport {
  readonly links = new Map<string, LiveNode>();
  readonly sent: { nodeId: string; command: Command }[] = [];
  back: string[] = [];
  constructor(private readonly now: () => number) {}
  connect(nodeId: string, s: NodeStatus): void {
    this.links.set(nodeId, { connected: true, status: s, agentVersion: '0.1.0', lastSeenAt: this.now(), connectedAt: this.now() });
  }
  send(nodeId: string, body: string): boolean {
    if (!this.links.get(nodeId)?.connected) return false;
    const m = decodeCoordinatorMessage(body);
    if (!m.ok || m.message.type !== 'command') throw new Error(`not a command: ${body}`);
    this.sent.push({ nodeId, command: m.message });
    return true;
  }
  live(): ReadonlyMap<string, LiveNode> {
    return this.links;
  }
  reconnected(): string[] {
    const ids = this.back;
    this.back = [];
    return ids;
  }
}

t.test('the rollout loop on a real store with a counting transport', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guc-loop-'));
  const store = new Store(join(dir, 'loop.db'));
  t.teardown(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let clock = 1_700_000_000_000;
  const now = () => clock;
  const timers = new ManualTimers();
  const agents = new CountingAgents(now);
  const ids = ['v0', 'v1', 'v2', 'v3'];
  for (const id of ids) {
    store.insertNode(id, 'x'.repeat(64), null, clock);
    agents.connect(id, status({ isLeader: id === 'v0' }));
  }
  const settings = { tickMs: 500, fleet: { validators: null, heartbeatTimeoutMs: 15_000, syncDistance: 2 }, windows: [] };
  const audit = new Audit(store, new WebhookSender(store, [], DEFAULT_CONFIG.webhookRetry, log), now);
  let wakes = 0;
  const writes = new WriteQueue(store, timers, log, () => {
    wakes++;
    loop.scheduleTick();
  });
  const loop: RolloutLoop = new RolloutLoop({ store, writes, audit, log, effects: { now, timers, agents }, settings });
  const service = new RolloutService({
    store,
    writes,
    audit,
    now,
    config: { defaults: { ...DEFAULT_CONFIG.defaults, stabilizationMs: 0, syncDistance: 2 }, windows: [] },
    fleet: () => fleetView(store.activeNodes(), agents.live(), settings.fleet, clock),
    tick: () => loop.tick(),
  });

  loop.start();
  t.equal(timers.intervals.length, 1, 'start arms one periodic tick');
  t.equal(timers.intervals[0]!.ms, 500, 'at tickMs');

  const r = service.create({ target: { version: '1.1.0', url: 'http://127.0.0.1:1/a.tgz', sha256: SHA } }, 'operator:test');
  t.equal(agents.sent.length, 1, 'one node dispatched (f = 1)');
  const first = agents.sent[0]!;
  t.not(first.nodeId, 'v0', 'not the leader first');
  t.equal(first.command.kind, 'upgrade');
  t.equal(writes.size, 0, "the end of the tick committed the queued 'sent' mark");
  t.equal(store.command(first.command.id)?.state, 'sent');

  // Another tick with nothing new sends nothing.
  loop.tick();
  t.equal(agents.sent.length, 1, 'no re-send while the command is open');

  // The agent reconnects: its open command is re-sent with the same id.
  agents.back = [first.nodeId];
  loop.tick();
  t.equal(agents.sent.length, 2, 're-delivered on reconnect');
  t.equal(agents.sent[1]!.command.id, first.command.id, 'with the same id');

  // A disconnected agent gets nothing and no 'sent' mark is queued.
  agents.links.get(first.nodeId)!.connected = false;
  agents.back = [first.nodeId];
  loop.tick();
  t.equal(agents.sent.length, 2, 'nothing sent to a disconnected agent');
  agents.links.get(first.nodeId)!.connected = true;

  // An informational write waits for the flush timer; an urgent one wakes the loop.
  writes.queue(() => store.appendEvent({ at: clock, actor: 'test', type: 'test.informational' }), false);
  t.equal(timers.delayed.filter((d) => d.live).length, 1, 'a flush timer is armed');
  t.equal(timers.delayed[0]!.ms, FLUSH_MS);
  t.equal(timers.fireDelayed(), 1);
  t.equal(writes.size, 0, 'the flush timer committed it');

  // Play the agents until the rollout is done, one node at a time.
  const order: string[] = [];
  const done = new Set<string>();
  for (let round = 0; round < 10 && store.rollout(r.id)!.state === 'running'; round++) {
    const open = agents.sent.filter((s) => !done.has(s.command.id));
    const openNodes = new Set(open.map((s) => s.nodeId));
    t.ok(openNodes.size <= 1, `round ${round}: at most f = 1 node in flight`);
    for (const s of open) {
      done.add(s.command.id);
      if (!order.includes(s.nodeId)) order.push(s.nodeId);
      clock += 1000;
      const before = wakes;
      writes.queue(() => {
        store.completeCommand(
          s.command.id,
          { outcome: 'succeeded', code: null, message: null, runningVersion: '1.1.0', downtimeMs: 10, stoppedAtView: null, result: {} },
          clock,
        );
      }, true);
      t.equal(wakes, before + 1, 'a result wakes the loop');
      agents.connect(s.nodeId, status({ nodeVersion: '1.1.0', isLeader: false, finalizedHeight: 100 }));
    }
    // The leader steps down once the others are done, as leadership rotates.
    if (order.length === 3) {
      agents.connect('v0', status());
      agents.connect(order[0]!, status({ nodeVersion: '1.1.0', isLeader: true }));
    }
    t.ok(timers.soonQueue.length >= 1, 'the wake asked for a tick soon');
    for (const fn of timers.soonQueue.splice(0)) fn();
  }
  t.equal(store.rollout(r.id)!.state, 'completed', 'the rollout completed');
  t.same(new Set(order), new Set(ids), 'every node upgraded once');
  t.equal(order.at(-1), 'v0', 'the old leader last');
  t.equal(agents.sent.filter((s) => s.command.kind === 'upgrade').length, 5, 'four upgrades plus the one re-delivery');
  t.same(
    store.steps(r.id).map((s) => s.state),
    ['upgraded', 'upgraded', 'upgraded', 'upgraded'],
  );

  loop.stop();
  t.notOk(timers.intervals[0]!.live, 'stop cancels the periodic tick');
  const sentBefore = agents.sent.length;
  loop.tick();
  loop.scheduleTick();
  t.equal(timers.soonQueue.length, 0, 'a stopped loop asks for no tick');
  t.equal(agents.sent.length, sentBefore, 'a stopped loop sends nothing');
});
