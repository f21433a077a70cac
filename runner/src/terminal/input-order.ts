import { Code, ConnectError } from "@connectrpc/connect";

interface Parked {
  data: Uint8Array;
  resolve: (nextSeq: bigint) => void;
  reject: (error: ConnectError) => void;
  timer: NodeJS.Timeout;
}

interface ClientState {
  next: bigint;
  parked: Map<bigint, Parked>;
}

/** Options for {@link InputSequencer}. */
export interface InputSequencerOptions {
  /** How long a write that arrived early waits for the ones before it, in ms. */
  waitMs: number;
  /** Clients remembered per session; the least recently active is forgotten first. */
  maxClients: number;
}

/**
 * Puts the numbered writes of browser clients back in order. Separate HTTP requests can
 * overtake each other, so each write carries (client id, seq): writes are applied in seq
 * order and each exactly once, whatever order they arrive in.
 */
export class InputSequencer {
  private readonly clients = new Map<string, ClientState>();

  constructor(
    private readonly apply: (data: Uint8Array) => void,
    private readonly options: InputSequencerOptions,
  ) {}

  /**
   * Applies the write when its turn comes; resolves with the seq expected next from this
   * client. A repeat of an applied seq resolves at once without applying it again.
   */
  write(clientId: string, seq: bigint, data: Uint8Array): Promise<bigint> {
    const client = this.client(clientId);
    if (seq < client.next || client.parked.has(seq)) return Promise.resolve(client.next);
    if (seq === client.next) {
      this.apply(data);
      client.next++;
      this.drain(client);
      return Promise.resolve(client.next);
    }
    return new Promise<bigint>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.parked.delete(seq);
        reject(
          new ConnectError(
            `write ${seq} of client "${clientId}" waited ${this.options.waitMs} ms for write ${client.next}; it was not applied`,
            Code.Aborted,
          ),
        );
      }, this.options.waitMs);
      client.parked.set(seq, { data, resolve, reject, timer });
    });
  }

  /** Fails every waiting write (the session ended). */
  close(reason: ConnectError): void {
    for (const client of this.clients.values()) {
      for (const parked of client.parked.values()) {
        clearTimeout(parked.timer);
        parked.reject(reason);
      }
      client.parked.clear();
    }
  }

  private client(clientId: string): ClientState {
    let client = this.clients.get(clientId);
    if (client) {
      // Re-insert to mark it most recently active.
      this.clients.delete(clientId);
    } else {
      client = { next: 1n, parked: new Map() };
      if (this.clients.size >= this.options.maxClients) this.forgetOldest();
    }
    this.clients.set(clientId, client);
    return client;
  }

  private forgetOldest(): void {
    for (const [id, client] of this.clients) {
      if (client.parked.size > 0) continue;
      this.clients.delete(id);
      return;
    }
  }

  private drain(client: ClientState): void {
    for (let parked = client.parked.get(client.next); parked; parked = client.parked.get(client.next)) {
      client.parked.delete(client.next);
      clearTimeout(parked.timer);
      this.apply(parked.data);
      client.next++;
      parked.resolve(client.next);
    }
  }
}
