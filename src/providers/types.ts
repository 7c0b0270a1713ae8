/** Where nodes live (DESIGN.md, Controller and providers). */
import type { NodeConfig } from '../config/schema.js';

export interface NodeSpec {
  name: string;
  zone: string;
  instanceClass?: string;
  /**
   * One creation of this node, the same for every retry of it: a provider
   * whose API makes creations idempotent (EC2's ClientToken) keys them on it.
   * Without it a provider keys each call on its own.
   */
  creationId?: string;
}

export interface NodeInfo {
  name: string;
  zone: string;
  /** running: its agent process (or instance) is alive */
  state: 'running' | 'stopped';
  agentPid: number | null;
  /** where its PostgreSQL listens, host:port */
  pgAddress: string;
  apiAddress: string;
}

export interface FenceResult {
  /** true only when the provider KNOWS the node can no longer write (its processes are gone) */
  confirmed: boolean;
  detail: string;
}

export interface Provider {
  list(cluster: string): Promise<NodeInfo[]>;
  /** A running agent that will clone itself from the leader (or bootstrap the cluster). */
  create(cluster: string, spec: NodeSpec): Promise<NodeInfo>;
  /** Stops the node for good and removes what it had. */
  destroy(name: string): Promise<void>;
  /** Stops the node for good, keeping its files; says whether that is confirmed. */
  fence(name: string): Promise<FenceResult>;
  /**
   * The node.yml of a node whose files are on this machine (the local provider); absent where nodes
   * live elsewhere. Backups run next to those files (pgBackRest reaches PostgreSQL over its local socket).
   */
  localNodeConfig?(name: string): NodeConfig | null;
}
