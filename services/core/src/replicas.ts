import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { createPeriodic } from "./periodic.js";
import { currentProcess, type ProcessIdentity, processAlive } from "./process-start.js";
import type { StateStore } from "./state/store.js";

/**
 * What a core replica says about itself in its lease; its process identity lets a replica on
 * the same machine know at once when it died (startTicks 0 where unknown).
 */
export interface ReplicaInfo extends ProcessIdentity {
  coreId: string;
  /** The machine it runs on (`os.hostname()`). */
  host: string;
  /** Its orchestration driver (`local`, `kubernetes`). */
  orchestrator: string;
  /** Its data directory (absolute). */
  dataDir: string;
  startedAtMs: number;
}

/** Options for {@link createReplicas}. */
export interface ReplicasOptions {
  store: StateStore;
  /** How long a lease lasts without renewal, in ms; it is renewed every third of that. */
  leaseMs: number;
  orchestrator: string;
  dataDir: string;
  logger?: Logger;
}

/**
 * The core replicas sharing one state store. Each holds a lease (`replica:<core id>`, written
 * with a TTL and renewed every third of it); a repl's record names the replica that owns its
 * runner and its transition in progress (`ownerCoreId`), and only that replica acts on it
 * (fails a lost runner, finishes a stuck transition, stops an orphan), until its lease runs out
 * and another replica claims the repl with a versioned write (the record's version is the
 * fence: a claim and a late write of the old owner cannot both land).
 */
export interface Replicas {
  /** This replica's id (`core_` and 20 random characters, new at every start). */
  readonly coreId: string;
  /** Writes the lease, checks the peers agree with this one, and starts renewing it. */
  start(): Promise<void>;
  /** Whether the replica holds a live lease (this one always does). */
  alive(coreId: string): Promise<boolean>;
  /** The other replicas with a live lease. */
  peers(): Promise<ReplicaInfo[]>;
  /** Stops renewing and gives the lease up, so peers take this replica's repls over at once. */
  close(): Promise<void>;
}

const leaseKey = (coreId: string) => `replica:${coreId}`;
const replicasIndex = "replicas";

/** Thrown by {@link Replicas.start} when this replica cannot work beside its peers. */
export class ReplicaConflictError extends Error {}

/** Creates this replica's lease keeper. */
export function createReplicas(options: ReplicasOptions): Replicas {
  const { store, leaseMs, logger } = options;
  const coreId = `core_${randomBytes(10).toString("hex")}`;
  let self: ReplicaInfo | undefined;
  let renewFailures = 0;

  const write = async (info: ReplicaInfo) => {
    await store.commit({
      puts: [{ key: leaseKey(coreId), value: JSON.stringify(info), ttlMs: leaseMs }],
      indexAdds: [{ index: replicasIndex, member: coreId }],
    });
  };

  const renew = createPeriodic(async () => {
    if (!self) return;
    try {
      await write(self);
      if (renewFailures > 0) logger?.info({ coreId }, "replica lease renewed again");
      renewFailures = 0;
    } catch (error) {
      renewFailures++;
      logger?.warn({ err: error, coreId, renewFailures }, "could not renew this replica's lease");
    }
  });

  const read = async (id: string): Promise<ReplicaInfo | undefined> => {
    const stored = await store.get(leaseKey(id));
    if (!stored) return undefined;
    try {
      return JSON.parse(stored.value) as ReplicaInfo;
    } catch {
      return undefined;
    }
  };

  /** A lease whose process is known dead (same machine, pid gone or reused) does not count. */
  const living = async (info: ReplicaInfo): Promise<boolean> => {
    if (info.host !== hostname() || info.startTicks === 0) return true;
    return processAlive(info);
  };

  const replicas: Replicas = {
    coreId,

    async start() {
      self = {
        coreId,
        host: hostname(),
        ...(await currentProcess()),
        orchestrator: options.orchestrator,
        dataDir: options.dataDir,
        startedAtMs: Date.now(),
      };
      for (const peer of await replicas.peers()) {
        if (peer.orchestrator !== self.orchestrator) {
          throw new ReplicaConflictError(
            `core replica ${peer.coreId} on ${peer.host} runs the ${peer.orchestrator} orchestrator, this one ${self.orchestrator}: replicas on one state store must use the same one`,
          );
        }
        if (self.orchestrator === "local" && (peer.host !== self.host || peer.dataDir !== self.dataDir)) {
          throw new ReplicaConflictError(
            `core replica ${peer.coreId} runs on ${peer.host} with data directory ${peer.dataDir}: with the local orchestrator, replicas on one state store must run on one machine and share one --data-dir (its runner records and sandboxes); this one runs on ${self.host} with ${self.dataDir}`,
          );
        }
      }
      await write(self);
      logger?.info({ coreId, leaseMs }, "replica lease taken");
      renew.start(Math.max(Math.floor(leaseMs / 3), 100));
    },

    async alive(id) {
      if (id === coreId) return true;
      const info = await read(id);
      return info !== undefined && (await living(info));
    },

    async peers() {
      const found: ReplicaInfo[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.range(replicasIndex, { limit: 100, ...(after ? { after } : {}) });
        for (const id of page) {
          if (id === coreId) continue;
          const info = await read(id);
          if (info && (await living(info))) found.push(info);
          else if (!info) await store.commit({ indexRemoves: [{ index: replicasIndex, member: id }] });
        }
        if (page.length < 100) return found;
        after = page[page.length - 1];
      }
    },

    async close() {
      await renew.stop();
      if (!self) return;
      self = undefined;
      await store
        .commit({ deletes: [leaseKey(coreId)], indexRemoves: [{ index: replicasIndex, member: coreId }] })
        .catch((error: unknown) => logger?.warn({ err: error, coreId }, "could not give up this replica's lease"));
    },
  };
  return replicas;
}
