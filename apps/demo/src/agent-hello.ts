import type { AgentClient } from '@liveupdate/agent';
import type { Machine, Process } from '@liveupdate/machine';

/**
 * A new process of `machine` for a service coming back after a live update, handed to `start`.
 * When `start` fails (the new agent's restore failed and reset the connection, say), the process
 * exits before the error is passed on: nothing of a failed start keeps running.
 */
export async function startServiceProcess<T>(
  machine: Machine,
  start: (process: Process) => Promise<T>,
): Promise<T> {
  const process = machine.spawn();
  try {
    return await start(process);
  } catch (error) {
    if (process.alive) await process.exit().catch(() => undefined);
    throw error;
  }
}

/**
 * After a live update: say `hello` as `service` with `fetch` (the service's fetches) sent right
 * behind it, pipelined, so both are answered in about one round trip. Resolves once the hello is
 * answered, with the fetches still under way (wrapped, so that the caller can time the two
 * apart). Rejects when the hello does or the agent restored nothing for `service`, after the
 * fetches have been answered.
 */
export async function helloRestored<T>(
  client: AgentClient,
  service: string,
  fetch: () => Promise<T>,
): Promise<{ fetched: Promise<T> }> {
  const helloed = client.hello(service);
  const fetched = fetch();
  // The caller awaits it; until then, a refusal must not count as unhandled.
  fetched.catch(() => undefined);
  let restored: boolean;
  try {
    ({ restored } = await helloed);
  } catch (error) {
    await fetched.catch(() => undefined);
    throw error;
  }
  if (!restored) {
    await fetched.catch(() => undefined);
    throw new Error(`the agent restored nothing for "${service}"`);
  }
  return { fetched };
}
