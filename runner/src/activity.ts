/**
 * What makes a runner active: clients attached to terminals or processes, and traffic
 * (input and output). An open connection alone is not activity, so an idle browser tab
 * does not keep a repl running forever. Core reads this through RunnerService.GetStatus.
 */
export class Activity {
  private last = Date.now();
  private attached = 0;

  /** Records traffic now. Cheap enough for every chunk of terminal output. */
  touch(): void {
    this.last = Date.now();
  }

  /** Counts a client as attached until the returned function is called (once). */
  attach(): () => void {
    this.attached++;
    this.touch();
    let detached = false;
    return () => {
      if (detached) return;
      detached = true;
      this.attached--;
      this.touch();
    };
  }

  /** Clients attached right now. */
  get attachedClients(): number {
    return this.attached;
  }

  /** The last moment of activity; now, while any client is attached. */
  get lastActivityAt(): Date {
    return new Date(this.attached > 0 ? Date.now() : this.last);
  }
}
