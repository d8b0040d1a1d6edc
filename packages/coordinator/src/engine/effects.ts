/**
 * Everything the rollout loop needs from the outside world, as small
 * interfaces: the clock, the timers and the agent transport. The running
 * coordinator plugs in the real ones (Date.now, setInterval/setTimeout/
 * setImmediate, the websocket hub); a test plugs in a counting backend, and a
 * deterministic simulation can plug in a virtual clock and run timers by hand.
 */
import type { NodeStatus } from '@guts-upgrade/protocol';

/** Cancels a timer; calling it twice is harmless. */
export type Cancel = () => void;

export interface Timers {
  /** Runs fn every ms (the periodic tick). */
  every(ms: number, fn: () => void): Cancel;
  /** Runs fn once after ms (the group-commit flush); never keeps the process alive by itself. */
  after(ms: number, fn: () => void): Cancel;
  /** Runs fn once the current event-loop turn is done (a tick asked for by an agent message). */
  soon(fn: () => void): void;
}

/** What the coordinator knows of one agent's link right now (not persisted). */
export interface LiveNode {
  /** Whether an authenticated agent connection is open. */
  connected: boolean;
  status: NodeStatus | null;
  agentVersion: string | null;
  lastSeenAt: number | null;
  connectedAt: number | null;
}

export interface AgentTransport {
  /**
   * Sends an encoded command to the node's agent. Returns false when the agent
   * is not connected: the command stays open in the store and is re-sent with
   * the same id when the agent comes back (see reconnected()).
   */
  send(nodeId: string, body: string): boolean;
  /** The live link and last status of every known agent: the fleet view is computed from it. */
  live(): ReadonlyMap<string, LiveNode>;
  /** The nodes whose agent (re)connected since the last call; their open commands are re-sent. */
  reconnected(): string[];
}

export interface LoopEffects {
  now(): number;
  timers: Timers;
  agents: AgentTransport;
}

/** The real timers of the Node.js event loop. */
export const realTimers: Timers = {
  every(ms, fn) {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
  soon(fn) {
    setImmediate(fn);
  },
};
