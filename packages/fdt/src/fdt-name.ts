import { quote } from './fdt-error.js';

// Name rules from the devicetree specification, section 2.2 ("Nodes and properties"): node names
// use table 2.1's characters as `node-name[@unit-address]`, property names use table 2.2's. The
// 31-character limit is a recommendation there and real trees exceed it, so only emptiness and
// characters are enforced.

const NODE_NAME = /^[0-9A-Za-z,._+-]+(@[0-9A-Za-z,._+-]+)?$/;
const PROPERTY_NAME = /^[0-9A-Za-z,._+?#-]+$/;
const NODE_CHAR = /[0-9A-Za-z,._+@-]/;
const PROPERTY_CHAR = /[0-9A-Za-z,._+?#-]/;

/** Explains why `name` is not a valid non-root node name, or returns `undefined` if it is. */
export function nodeNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'node name is empty';
  if (NODE_NAME.test(name)) return undefined;
  const at = name.indexOf('@');
  if (at === 0) return `node name ${quote(name)} has no name before "@"`;
  if (at === name.length - 1) return `node name ${quote(name)} has an empty unit address`;
  if (at !== name.lastIndexOf('@')) return `node name ${quote(name)} has more than one "@"`;
  return `node name ${quote(name)} ${badCharacter(name, NODE_CHAR)}`;
}

/** Explains why `name` is not a valid property name, or returns `undefined` if it is. */
export function propertyNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'property name is empty';
  if (PROPERTY_NAME.test(name)) return undefined;
  return `property name ${quote(name)} ${badCharacter(name, PROPERTY_CHAR)}`;
}

function badCharacter(name: string, allowed: RegExp): string {
  for (let i = 0; i < name.length; i++) {
    const char = name.charAt(i);
    if (!allowed.test(char)) {
      const code = char.charCodeAt(0).toString(16).padStart(4, '0');
      return `has invalid character U+${code.toUpperCase()} at index ${i}`;
    }
  }
  return 'is invalid';
}
