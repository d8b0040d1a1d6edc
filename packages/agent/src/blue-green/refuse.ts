/**
 * Blue-green is refused for a validator: two containers signing with one key
 * risk double signing. The configuration refuses it at load; this checks again
 * when a command runs, against the node's own view of its validator set. Kept
 * apart from run.ts so the check needs no Docker client.
 */
import { CodedError } from '@guts-upgrade/protocol';
import type { StepContext } from '../steps/context.js';

/**
 * Refused for a validator, at command time too (the configuration checked the
 * role at load): the node must say its validator set does not hold this node's key.
 */
export async function refuseValidator(ctx: StepContext): Promise<void> {
  const why = 'two containers signing with one validator key risk double signing';
  if (ctx.config.role !== 'follower')
    throw new CodedError('E_BLUE_GREEN_VALIDATOR', `this node's role is ${ctx.config.role}: blue-green is for followers only (${why})`);
  const key = ctx.config.validatorPubkey?.toLowerCase();
  if (!key) return;
  const set = (await ctx.node.json('/api/consensus/validators'))?.body as { validators?: { pubkey?: string; name?: string }[] } | null;
  const hit = set?.validators?.find((v) => v.pubkey?.toLowerCase() === key);
  if (hit) {
    throw new CodedError(
      'E_BLUE_GREEN_VALIDATOR',
      `the node's validator set holds this node's key (validator ${hit.name ?? key.slice(0, 16)}): it is a validator, not a follower; blue-green refused (${why})`,
    );
  }
}
