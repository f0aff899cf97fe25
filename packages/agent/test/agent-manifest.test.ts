// The manifest decoder against every kind of damage, without a kexec.
import { describe, expect, it } from 'vitest';
import { decodeManifest, encodeManifest, type Manifest } from '@liveupdate/agent';

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const good = () => ({
  version: 1,
  services: {
    cache: { table: { order: 0, tokens: [1] } },
    vm0: { ram: { order: 0, tokens: [1] }, nic: { order: 2, tokens: [2, 3] } },
  },
});

describe('decodeManifest', () => {
  it('reads back what encodeManifest wrote', () => {
    const manifest: Manifest = {
      version: 1,
      services: new Map([
        [
          'vm0',
          new Map([
            ['nic', { order: 2, tokens: [2, 3] }],
            ['ram', { order: 0, tokens: [1] }],
          ]),
        ],
      ]),
    };
    expect(decodeManifest(encodeManifest(manifest))).toEqual(manifest);
    expect(decodeManifest(encode(good())).services.get('vm0')?.get('nic')).toEqual({
      order: 2,
      tokens: [2, 3],
    });
  });

  const damaged: [string, (m: ReturnType<typeof good>) => unknown, string][] = [
    ['another version', (m) => ({ ...m, version: 2 }), 'version is 2'],
    ['no version', ({ services }) => ({ services }), 'version is absent'],
    ['an unknown field', (m) => ({ ...m, extra: true }), 'unknown field "extra"'],
    ['services not an object', (m) => ({ ...m, services: [] }), 'services is []'],
    [
      "the agent's own session as a service",
      (m) => ({ ...m, services: { luod: {} } }),
      "the agent's own session",
    ],
    [
      'a service name of 64 bytes',
      (m) => ({ ...m, services: { ['s'.repeat(64)]: {} } }),
      'is 64 bytes long',
    ],
    [
      'an empty entry name',
      (m) => ({ ...m, services: { cache: { '': { order: 0, tokens: [1] } } } }),
      'is 0 characters long',
    ],
    [
      'a negative order',
      (m) => ({ ...m, services: { cache: { t: { order: -1, tokens: [1] } } } }),
      '["t"].order is -1',
    ],
    [
      'a fractional order',
      (m) => ({ ...m, services: { cache: { t: { order: 0.5, tokens: [1] } } } }),
      '["t"].order is 0.5',
    ],
    [
      'no tokens',
      (m) => ({ ...m, services: { cache: { t: { order: 0, tokens: [] } } } }),
      '["t"].tokens is []',
    ],
    [
      'a token as a string',
      (m) => ({ ...m, services: { cache: { t: { order: 0, tokens: ['1'] } } } }),
      'tokens[0] is "1"',
    ],
    [
      'a token past 2^53',
      (m) => ({ ...m, services: { cache: { t: { order: 0, tokens: [2 ** 53] } } } }),
      'tokens[0] is 9007199254740992',
    ],
    [
      'a token used twice',
      (m) => ({
        ...m,
        services: { cache: { a: { order: 0, tokens: [1] }, b: { order: 0, tokens: [1] } } },
      }),
      '["b"].tokens[0] is 1, a token used twice',
    ],
    [
      'an entry field unknown',
      (m) => ({ ...m, services: { cache: { t: { order: 0, tokens: [1], fd: 3 } } } }),
      'unknown field "fd"',
    ],
  ];
  it.each(damaged)('refuses %s with EIO naming it', (_, damage, message) => {
    expect(() => decodeManifest(encode(damage(good())))).toThrow(`EIO: agent manifest: `);
    expect(() => decodeManifest(encode(damage(good())))).toThrow(message);
  });

  it('refuses bytes that are not UTF-8 JSON, or JSON that is not an object', () => {
    expect(() => decodeManifest(new Uint8Array([0xff, 0x7b]))).toThrow('is not UTF-8 JSON');
    expect(() => decodeManifest(encode(good()).subarray(0, 20))).toThrow('is not UTF-8 JSON');
    expect(() => decodeManifest(encode([1]))).toThrow('is [1], not an object');
  });

  it('refuses a manifest over the size limit before parsing it', () => {
    expect(() => decodeManifest(new Uint8Array(1024 * 1024 + 1))).toThrow('over the limit');
  });
});
