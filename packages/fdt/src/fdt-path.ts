import { FdtError, quote } from './fdt-error.js';
import type { FdtNode } from './fdt-node.js';

// Readers take only a node, yet their errors must name the node's path. decodeFdt and findNode
// remember the path of each node they hand out; a weak map keeps that off the public objects and
// lets nodes be collected as usual.
const knownPaths = new WeakMap<FdtNode, string>();

/** Path of the child `name` under `parentPath`. */
export function childPath(parentPath: string, name: string): string {
  return parentPath === '/' ? `/${name}` : `${parentPath}/${name}`;
}

/** Records where `node` sits in the tree it was decoded from or looked up in. */
export function rememberNodePath(node: FdtNode, path: string): void {
  knownPaths.set(node, path);
}

/**
 * Best-known path of `node` for messages: its path as last decoded or found, `/` for an unknown
 * root, else its bare name (a node built by hand and never looked up).
 */
export function nodePathOf(node: FdtNode): string {
  return knownPaths.get(node) ?? (node.name === '' ? '/' : node.name);
}

/**
 * Finds a node by absolute path: `/` is `root` itself, `/cpus/cpu@0` walks children by exact
 * name. A unit address is part of the name, so `/memory` does not match `memory@0`. Empty
 * components (`//`, a trailing `/`) are ignored.
 *
 * @returns the node, or `undefined` if some component is missing
 * @throws FdtError `BAD_VALUE` if `path` does not start with `/`
 */
export function findNode(root: FdtNode, path: string): FdtNode | undefined {
  if (!path.startsWith('/')) {
    throw new FdtError('BAD_VALUE', `node path ${quote(path)} does not start with "/"`);
  }
  let node = root;
  let walked = '/';
  for (const name of path.split('/')) {
    if (name === '') continue;
    const child = node.children.find((c) => c.name === name);
    if (child === undefined) return undefined;
    node = child;
    walked = childPath(walked, name);
  }
  // Only a real root ('' name) yields absolute paths worth remembering.
  if (root.name === '') rememberNodePath(node, walked);
  return node;
}
