import { FdtError, quote } from './fdt-error.js';
import { nodeNameProblem, propertyNameProblem } from './fdt-name.js';

/** One property: a name and its raw bytes (big-endian cells, NUL-terminated strings, …). */
export interface FdtProperty {
  /** Property name, e.g. `compatible` or `#address-cells`. */
  name: string;
  /** Raw value; empty for a boolean property. */
  value: Uint8Array;
}

/** One node of the tree. Properties keep their order, as do children. */
export interface FdtNode {
  /** Node name including any unit address (`cpu@0`); the root's name is `''`. */
  name: string;
  /** Properties in blob order; names are unique within the node. */
  properties: FdtProperty[];
  /** Child nodes in blob order; names are unique within the node. */
  children: FdtNode[];
}

/**
 * Builds a node, checking names up front so mistakes surface where the tree is written rather
 * than at `encodeFdt`. Values are stored as given, not copied.
 *
 * Properties come from an object, so they keep its key order — note that JavaScript puts
 * integer-like keys (`"0"`, `"1"`) first; build the `properties` array by hand if that matters.
 *
 * @param name - node name with optional unit address (`memory@80000000`); `''` for the root
 * @param properties - property name → value, e.g. `{ reg: fdtValue.u32(0) }`
 * @param children - child nodes, in order
 * @throws FdtError `BAD_NAME` for an invalid node or property name, `BAD_VALUE` for a value that
 *   is not a `Uint8Array`, `DUPLICATE` for two children with the same name
 */
export function fdtNode(
  name: string,
  properties: Record<string, Uint8Array> = {},
  children: FdtNode[] = [],
): FdtNode {
  if (name !== '') {
    const problem = nodeNameProblem(name);
    if (problem !== undefined) throw new FdtError('BAD_NAME', problem);
  }
  const list: FdtProperty[] = [];
  for (const [propertyName, value] of Object.entries(properties)) {
    const problem = propertyNameProblem(propertyName);
    if (problem !== undefined) throw new FdtError('BAD_NAME', problem);
    if (!(value instanceof Uint8Array)) {
      throw new FdtError('BAD_VALUE', `property ${quote(propertyName)} is not a Uint8Array`);
    }
    list.push({ name: propertyName, value });
  }
  const childNames = new Set<string>();
  for (const child of children) {
    if (childNames.has(child.name)) {
      throw new FdtError('DUPLICATE', `two child nodes named ${quote(child.name)}`);
    }
    childNames.add(child.name);
  }
  return { name, properties: list, children: [...children] };
}
