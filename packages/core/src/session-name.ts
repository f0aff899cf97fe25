/**
 * Session names are bytes, as upstream has them: 1..63 bytes before a NUL, any values, checked
 * for length only and compared byte for byte. These helpers give such a name a map key and a
 * form for messages; neither is ever written anywhere but the kernel log.
 */

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A string with one character per byte of `name`: equal keys are equal names. */
export function sessionNameKey(name: Uint8Array): string {
  return String.fromCharCode(...name);
}

/**
 * `name` for a message: its text when it is UTF-8 without control characters, else its bytes
 * with every one outside printable ASCII (and the backslash) written `\xNN`.
 */
export function printableSessionName(name: Uint8Array): string {
  try {
    const text = strictUtf8.decode(name);
    // eslint-disable-next-line no-control-regex
    if (!/[\u0000-\u001f\u007f-\u009f\\]/.test(text)) return text;
  } catch {
    // Not UTF-8: escaped below.
  }
  return Array.from(name, (byte) =>
    byte >= 0x20 && byte < 0x7f && byte !== 0x5c
      ? String.fromCharCode(byte)
      : `\\x${byte.toString(16).padStart(2, '0')}`,
  ).join('');
}
