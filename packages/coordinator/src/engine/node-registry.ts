/**
 * The node registry: which validators the coordinator manages, each with the
 * token its agent authenticates with. Registering and removing are operator
 * actions, recorded in the audit log.
 */
import { randomBytes } from 'node:crypto';
import { CodedError, type NodeRole, type ValidatorSet } from '@guts-upgrade/protocol';
import { hashToken, type Store } from '../db.js';
import type { NodeView } from '../model.js';
import { ACTIVE_ROLLOUT_STATES } from '../states.js';
import type { AgentHub } from './agent-hub.js';
import type { Audit } from './audit.js';
import type { WriteQueue } from './write-queue.js';

export interface NodeListing extends Omit<NodeView, 'lastSeenAt'> {
  pubkey: string | null;
  address: string | null;
  registeredAt: string;
  lastSeenAt: string | null;
}

export interface NodeRegistryDeps {
  store: Store;
  writes: WriteQueue;
  audit: Audit;
  hub: Pick<AgentHub, 'track' | 'forget'>;
  fleet: () => { nodes: Map<string, NodeView> };
  now: () => number;
  /** The validator set adopted from the chain, if any (registration checks keys against it). */
  chainSet: () => ValidatorSet | null;
}

export class NodeRegistry {
  constructor(private readonly d: NodeRegistryDeps) {}

  /** Registers a node (or re-registers a removed one) and returns its agent token, shown only this once. */
  register(id: string, address: string | null, actor: string, pubkey: string | null = null, role: NodeRole = 'validator'): { id: string; token: string } {
    const existing = this.d.store.node(id);
    if (existing && existing.revokedAt == null) throw new CodedError('E_CONFLICT', `node ${id} is already registered`, { field: 'id' });
    const key = pubkey?.toLowerCase() ?? null;
    if (key) this.checkBinding(id, key, role);
    const token = `gua_${randomBytes(32).toString('base64url')}`;
    this.d.writes.tx(() => {
      this.d.store.insertNode(id, hashToken(token), address, this.d.now(), key, role);
      this.d.audit.record('node.registered', actor, null, id, { address, role, ...(key ? { pubkey: key } : {}) });
    });
    this.d.hub.track(id);
    return { id, token };
  }

  /**
   * A key another active node holds is refused; so is a validator's key the adopted set does not
   * have, and a follower's key the set does have (the chain says that node is a validator).
   */
  private checkBinding(id: string, pubkey: string, role: NodeRole): void {
    const holder = this.d.store.nodeByPubkey(pubkey);
    if (holder && holder !== id)
      throw new CodedError('E_BINDING_DUPLICATE', `validator ${pubkey.slice(0, 16)}… is already bound to node ${holder}`, { field: 'pubkey' });
    const set = this.d.chainSet();
    const validator = set?.validators.find((v) => v.pubkey === pubkey);
    if (role === 'follower') {
      if (set && validator)
        throw new CodedError(
          'E_FOLLOWER_IS_VALIDATOR',
          `key ${pubkey.slice(0, 16)}… is validator ${validator.name} of epoch ${set.epoch}: a node with it is not a follower`,
          { field: 'role' },
        );
      return;
    }
    if (set && !set.validators.some((v) => v.pubkey === pubkey)) {
      throw new CodedError('E_BINDING_UNKNOWN', `validator ${pubkey.slice(0, 16)}… is not in the chain's validator set of epoch ${set.epoch}`, {
        field: 'pubkey',
      });
    }
  }

  /** Revokes a node's token and drops its agent; refused while a rollout holds the node. */
  remove(id: string, actor: string): void {
    const n = this.d.store.node(id);
    if (!n || n.revokedAt != null) throw new CodedError('E_NOT_FOUND', `node ${id} is not registered`);
    const holder = this.d.store.nodesInActiveRollouts(ACTIVE_ROLLOUT_STATES).get(id);
    if (holder) throw new CodedError('E_CONFLICT', `node ${id} is part of active rollout ${holder}`, { rolloutId: holder });
    this.d.writes.tx(() => {
      this.d.store.revokeNode(id, this.d.now());
      this.d.audit.record('node.removed', actor, null, id);
    });
    this.d.hub.forget(id);
  }

  /** The registered nodes as the fleet view sees them, with their registration details. */
  list(): NodeListing[] {
    const fleet = this.d.fleet();
    return this.d.store.activeNodes().map((n) => {
      const v = fleet.nodes.get(n.id)!;
      return {
        ...v,
        pubkey: n.pubkey,
        address: n.address,
        registeredAt: new Date(n.createdAt).toISOString(),
        lastSeenAt: v.lastSeenAt ? new Date(v.lastSeenAt).toISOString() : null,
      };
    });
  }
}
