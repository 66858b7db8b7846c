/**
 * PROTOCOL.md's guarantees (./helpers/guarantees-suite.ts, the same suite that runs against one
 * engine in protocol.guarantees.test.ts) against a 3-node cluster: three engine processes on one
 * real redis-server, the clients of each room spread over the three nodes. The node-local
 * guarantees (shards, rings, a connection's limits, drain, engine.publish) are single-node only:
 * see the suite's header. A fresh cluster per test, so no test sees another's rooms.
 */
import { guardHandles } from './helpers/leaks.js';
import { startCluster } from './helpers/cluster.js';
import { guaranteesSuite } from './helpers/guarantees-suite.js';

guardHandles();

guaranteesSuite('3-node cluster', async (t, opts = {}) => {
  const args: string[] = [];
  if (opts.historyLimit !== undefined) args.push('--history-limit', String(opts.historyLimit));
  if (opts.maxHistBytes !== undefined) args.push('--max-hist-bytes', String(opts.maxHistBytes));
  const cl = await startCluster(t, { nodes: 3, args });
  if (cl === null) return null;
  return {
    nodes: 3,
    open: (user: string, node: number) => cl.open(node, user),
    joinSeesEveryAck: false,
  };
});
