/**
 * Locks for async code. Handler ops may await, so LUO cannot rely on JavaScript's run-to-completion
 * alone: these give the kernel's mutex and reader/writer semaphore semantics across awaits.
 */

/** A FIFO mutex (`struct mutex`). */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Run `fn` holding the mutex. */
  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/**
 * A reader/writer lock (`struct rw_semaphore`): any number of readers, or one writer. Writers
 * are not starved: once a writer waits, new readers queue behind it.
 */
export class RwLock {
  #readers = 0;
  #writer = false;
  readonly #queue: { write: boolean; wake: () => void }[] = [];

  /** Run `fn` holding the lock for reading. */
  async read<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.#acquire(false);
    try {
      return await fn();
    } finally {
      this.#readers--;
      this.#drain();
    }
  }

  /** Take the lock for writing; call the returned function to release it. */
  async lockWrite(): Promise<() => void> {
    await this.#acquire(true);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#writer = false;
      this.#drain();
    };
  }

  #acquire(write: boolean): Promise<void> {
    if (this.#queue.length === 0 && this.#grant(write)) return Promise.resolve();
    return new Promise((wake) => this.#queue.push({ write, wake }));
  }

  #grant(write: boolean): boolean {
    if (this.#writer || (write && this.#readers > 0)) return false;
    if (write) this.#writer = true;
    else this.#readers++;
    return true;
  }

  #drain(): void {
    while (this.#queue.length > 0 && this.#grant(this.#queue[0]!.write))
      this.#queue.shift()!.wake();
  }
}
